import CaseVaultCore
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Synchronization
import Testing

extension EpochExchangeTests {
    @Test(
        "the storage's blocking calls on PostgreSQL (a case opened and a form filed under the case's lock, the form read) are answered while every thread of Swift's cooperative pool is blocked: the statements' task runs on the waiting thread"
    )
    func blockingCallsNeedNoPoolThread() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, _) = try await self.twoDaemonsOnEpochOne(clusters, keys)
        let vault = try self.vault(a, clusters)
        let (content, released, width) = try await self.blocking { () throws -> ([UInt8], Int, Int) in
            let gate = DispatchSemaphore(value: 0)
            let released = Count()
            let blockers = DispatchGroup()
            var width = 0
            func addBlocker() {
                width += 1
                blockers.enter()
                Task {
                    if Self.block(on: gate) { released.add() }
                    blockers.leave()
                }
            }
            // The pool has a thread a core, as the kernel counts them (a container's quota may count fewer):
            // a blocker a core, then one more for as long as a probe task still runs within 300 ms. A probe
            // that does not found every thread taken, by the blockers or by another test's synchronous work,
            // which blocks the pool as well.
            for _ in 0..<ProcessInfo.processInfo.activeProcessorCount { addBlocker() }
            while width < 256 {
                let probe = Flag()
                Task { probe.raise() }
                usleep(300_000)
                guard probe.isRaised else { break }
                addBlocker()
            }
            let content: [UInt8]
            do {
                // Once every call below was answered, or one failed: each blocker released by the gate answers
                // that the calls before were answered while it held its thread.
                defer {
                    for _ in 0..<width { gate.signal() }
                    blockers.wait()
                }
                let caseID = try vault.openCase(header: Self.header, mediators: [], author: nil).id
                let form = try vault.file(
                    NewRecord(
                        caseID: caseID, type: .intakeForm,
                        content: Array(#"{"dispute_category":"roommate","screening":"busy pool"}"#.utf8))
                ).record
                content = try vault.get(form.id).content
            }
            return (content, released.value, width)
        }
        #expect(String(decoding: content, as: UTF8.self).contains("busy pool"))
        #expect(released == width, "blockers the calls' answers let go: \(released) of \(width)")
    }

    /// Blocks this thread until `gate` is signalled (true) or 20 s passed (false): a test's stand-in for
    /// synchronous work on a thread of the cooperative pool.
    static func block(on gate: DispatchSemaphore) -> Bool {
        gate.wait(timeout: .now() + .seconds(20)) == .success
    }
}

/// A count tasks add to and another thread reads.
final class Count: Sendable {
    private let count = Atomic(0)
    var value: Int { self.count.load(ordering: .acquiring) }
    func add() { self.count.add(1, ordering: .releasing) }
}

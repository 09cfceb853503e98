import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import Dispatch
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

/// The filings and reads the server awaits on its event loops (`Vault.awaitFile`, `Vault.awaitRead`), called
/// from a blocking test thread as the blocking calls are: each runs in a task of its own while the thread
/// waits, so that a test written for one path runs the other (`awaited`).
extension Vault where Storage == PostgresStorage {
    func file(_ record: NewRecord, awaited: Bool) throws -> (record: RecordMetadata, shredded: [RecordID]) {
        guard awaited else { return try self.file(record) }
        return try Self.waiting {
            try await self.awaitFile(record, rosterUID: nil) { _, _ throws(CaseVaultError) in .daemon }
        }
    }

    func read(
        _ id: RecordID, rosterUID: UInt32?, awaited: Bool,
        decide: @escaping @Sendable (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) throws -> Record {
        guard awaited else { return try self.read(id, rosterUID: rosterUID, decide: decide) }
        return try Self.waiting { try await self.awaitRead(id, rosterUID: rosterUID, decide: decide) }
    }

    /// `get(_:)`, or when `awaited` the server's awaited read with a decision that allows it.
    func get(_ id: RecordID, awaited: Bool) throws -> Record {
        guard awaited else { return try self.get(id) }
        return try self.read(id, rosterUID: nil, awaited: true) { _, _, _ throws(CaseVaultError) in }
    }

    /// Runs `body` as a task and blocks this thread until it ends.
    private static func waiting<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
        let answer = Answer<T>()
        Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            answer.result.withLock { $0 = result }
            answer.done.signal()
        }
        answer.done.wait()
        return try answer.result.withLock { $0! }.get()
    }
}

/// What a task `waiting` ran answered, and when.
private final class Answer<T: Sendable>: Sendable {
    let result = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
}

extension EpochExchangeTests {
    /// Holds the case's lock, awaited: reads, raises `locked`, waits for `ended`, reads again; the code it
    /// failed with, or `nil`.
    static func awaitedLockBody(_ storage: PostgresStorage, _ caseID: CaseID, locked: Flag, ended: Flag) async
        -> CaseVaultError.Code?
    {
        do {
            try await storage.awaitWithCaseLock(caseID, readingRoster: nil) { _, _ async throws(CaseVaultError) in
                _ = try await storage.awaitNotesToDestroy(caseID)
                locked.raise()
                while !ended.isRaised { try? await Task.sleep(for: .milliseconds(10)) }
                _ = try await storage.awaitAgreements(caseID)
            }
            return nil
        } catch {
            return error.code
        }
    }

    @Test(
        "awaited calls hold at most the limit's connections at once, the others waiting, suspended; a call that fails gives its permit back; with one permit, the calls go in the order they came"
    )
    func awaitedConnectionsLimit() async throws {
        for limit in [3, 1] {
            let gate = AwaitedConnections(limit: limit)
            let tally = PermitTally()
            // The first `limit` calls hold their permits until every other call is waiting.
            let release = Flag()
            let failed = try await withThrowingTaskGroup(of: Bool.self) { group in
                for number in 0..<12 {
                    group.addTask {
                        do {
                            try await gate.withPermit { () async throws(CaseVaultError) in
                                tally.state.withLock { state in
                                    state.inside += 1
                                    state.most = max(state.most, state.inside)
                                    state.order.append(number)
                                }
                                while number < limit && !release.isRaised {
                                    try? await Task.sleep(for: .milliseconds(5))
                                }
                                tally.state.withLock { $0.inside -= 1 }
                                if number % 4 == 1 { throw CaseVaultError(.storageFailure, "refused") }
                            }
                            return false
                        } catch {
                            return true
                        }
                    }
                    // Each call waits (or, the first ones, holds its permit) before the next starts.
                    while number >= limit
                        ? gate.waiting < number - limit + 1 : tally.state.withLock({ $0.order.count }) <= number
                    {
                        try await Task.sleep(for: .milliseconds(1))
                    }
                }
                release.raise()
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            let seen = tally.state.withLock { $0 }
            #expect(seen.most == limit && seen.inside == 0, "limit \(limit)")
            #expect(seen.order.count == 12 && failed == 3, "limit \(limit)")
            // One inside at a time: the order they entered in is the order the permits went in.
            if limit == 1 { #expect(seen.order == Array(0..<12), "\(seen.order)") }
            // Every permit came back, those of the calls that failed too.
            #expect(gate.waiting == 0 && gate.free == limit, "limit \(limit)")
        }
    }
}

/// Who is inside `AwaitedConnections.withPermit`, the most at once, and the order they entered in.
private final class PermitTally: Sendable {
    let state = Mutex<(inside: Int, most: Int, order: [Int])>((0, 0, []))
}

/// How a task of the test ended: the code it failed with, `nil` inside when it did not fail.
final class Outcome: Sendable {
    private let ended = Mutex<CaseVaultError.Code??>(nil)
    var code: CaseVaultError.Code?? { self.ended.withLock { $0 } }
    func end(_ code: CaseVaultError.Code?) { self.ended.withLock { $0 = .some(code) } }
}

/// A flag one task raises and another watches.
final class Flag: Sendable {
    private let raised = Atomic(false)
    var isRaised: Bool { self.raised.load(ordering: .acquiring) }
    func raise() { self.raised.store(true, ordering: .releasing) }
}

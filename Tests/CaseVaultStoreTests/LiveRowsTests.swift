import CaseVaultCore
import CaseVaultStore
import Foundation
import Synchronization
import Testing

/// Gets keep the rows of live records they read (`LiveRows`), so these tests read every record first and
/// then destroy it each way the store can: what a get says afterwards must come from the destruction, not
/// from what an earlier get kept.
@Suite("Gets after a shred, when earlier gets read the same records")
struct LiveRowsTests {
    /// Both kinds of get say `shredded`: the one by id (`Vault.get`) and the one that asks the case and the
    /// roster in the same trip (`Vault.read`, what the server's GET runs).
    static func expectShredded(
        _ store: RecordStore, _ ids: [RecordID], sourceLocation: SourceLocation = #_sourceLocation
    ) {
        for id in ids {
            for (way, read) in [
                ("get", { () throws(CaseVaultError) in _ = try store.sealed.get(id) }),
                (
                    "read",
                    { () throws(CaseVaultError) in _ = try store.sealed.read(id, rosterUID: 4001) { _, _, _ in } }
                ),
            ] as [(String, () throws(CaseVaultError) -> Void)] {
                do {
                    try read()
                    Issue.record("a \(way) of a shredded record opened it", sourceLocation: sourceLocation)
                } catch {
                    #expect(error.code == .shredded, "a \(way) said \(error.code)", sourceLocation: sourceLocation)
                }
            }
        }
    }

    /// Reads each record twice, both ways, so that the second reads come from what the first ones kept.
    static func readTwice(_ store: RecordStore, _ ids: [RecordID]) throws {
        for _ in 0..<2 {
            for id in ids {
                _ = try store.sealed.get(id)
                _ = try store.sealed.read(id, rosterUID: 4001) { _, _, _ in }
            }
        }
    }

    /// A case in session, its two notes read twice both ways, in a store on `clock`; `destroy` then
    /// destroys the notes, after which both ways of reading them must say `shredded`.
    static func readThenDestroy(
        clock: TestClock = TestClock("2024-01-01T00:00:00Z"),
        _ destroy: (RecordStore, CaseSummary, [RecordID]) throws -> Void
    ) throws {
        let vault = TestVault()
        let store = try vault.open(clock: clock)
        defer { store.close() }
        let (summary, notes) = try Lifecycle.caseInSession(store)
        try Self.readTwice(store, notes)
        try destroy(store, summary, notes)
        Self.expectShredded(store, notes)
    }

    @Test("a shred asked for by id")
    func shredByID() throws {
        try Self.readThenDestroy { store, summary, notes in
            try store.shred([notes[0]])
            Self.expectShredded(store, [notes[0]])
            #expect(try store.sealed.get(notes[1]).metadata.caseID == summary.id)
            try store.shred(Array(notes[1...]))
        }
    }

    @Test("a final agreement's notes, marked by the same commit that files it")
    func finalAgreement() throws {
        try Self.readThenDestroy { store, summary, notes in
            let filed = try store.sealed.file(
                NewRecord(caseID: summary.id, type: .finalAgreement, content: Lifecycle.finalAgreement))
            #expect(Set(filed.shredded) == Set(notes))
        }
    }

    @Test("a case closed without an agreement")
    func closedCase() throws {
        try Self.readThenDestroy { store, summary, notes in
            let shredded = try store.closeCase(summary.id, outcome: .withdrawn)
            #expect(Set(shredded) == Set(notes))
        }
    }

    @Test("the retention sweep")
    func sweep() throws {
        let clock = TestClock("2024-01-01T00:00:00Z")
        try Self.readThenDestroy(clock: clock) { store, _, notes in
            clock.now = TestClock.parse("2024-03-01T00:00:00Z")  // session notes are kept 30 days
            let report = try store.sweep()
            #expect(report.disposed >= notes.count)
        }
    }

    /// A store that, each time it reaches `point`, runs what `probe` holds then (on the writer's thread,
    /// as a get from elsewhere could run at that instant).
    final class Probe: Sendable {
        let action = Mutex<(@Sendable () -> Void)?>(nil)
        let ran = Atomic(0)

        func open(_ vault: TestVault, at point: CrashPoint, clock: TestClock = TestClock(0)) throws -> RecordStore {
            try vault.open(clock: clock) { configuration in
                configuration.crashPointObserver = { reached in
                    guard reached == point, let action = self.action.withLock({ $0 }) else { return }
                    action()
                    self.ran.add(1, ordering: .relaxed)
                }
            }
        }
    }

    @Test(
        "between a shred's mark and its overwrites, when the key and the ciphertext are still on disk, a get says shredded"
    )
    func getBetweenMarkAndOverwrite() throws {
        let vault = TestVault()
        let probe = Probe()
        let clock = TestClock("2024-01-01T00:00:00Z")
        let store = try probe.open(vault, at: .shredAfterMark, clock: clock)
        defer { store.close() }
        let (_, notes) = try Lifecycle.caseInSession(store)
        try Self.readTwice(store, notes)
        probe.action.withLock { $0 = { Self.expectShredded(store, [notes[0]]) } }
        try store.shred([notes[0]])
        try Self.readTwice(store, [notes[1]])
        // A sweep marks through the same step.
        probe.action.withLock { $0 = { Self.expectShredded(store, [notes[1]]) } }
        clock.now = TestClock.parse("2024-03-01T00:00:00Z")
        _ = try store.sweep()
        #expect(probe.ran.load(ordering: .relaxed) == 2)
    }

    @Test("right after the commit that files a final agreement, before its notes are overwritten, a get says shredded")
    func getRightAfterAFinalAgreement() throws {
        let vault = TestVault()
        let probe = Probe()
        let store = try probe.open(vault, at: .putAfterCommit)
        defer { store.close() }
        let (summary, notes) = try Lifecycle.caseInSession(store)
        try Self.readTwice(store, notes)
        probe.action.withLock { $0 = { Self.expectShredded(store, notes) } }
        _ = try store.sealed.file(
            NewRecord(caseID: summary.id, type: .finalAgreement, content: Lifecycle.finalAgreement))
        #expect(probe.ran.load(ordering: .relaxed) == 1)
    }

    @Test("once the store is closed, no get is served from the rows earlier gets kept")
    func noGetAfterClose() throws {
        let vault = TestVault()
        let store = try vault.open()
        let (_, notes) = try Lifecycle.caseInSession(store)
        try Self.readTwice(store, notes)
        store.close()
        for id in notes {
            #expect(throws: CaseVaultError.self) { _ = try store.sealed.get(id) }
            #expect(throws: CaseVaultError.self) { _ = try store.metadata(id) }
        }
    }

    @Test("gets racing a shred: once it returns, no get opens a record it destroyed")
    func getsRacingAShred() throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let (summary, _) = try Lifecycle.caseInSession(store)
        let ids = try (0..<200).map { n in
            try store.sealed.put(
                NewRecord(
                    caseID: summary.id, type: .sessionNote, content: Samples.content(.sessionNote, marker: "r\(n)"))
            ).id
        }
        try Self.readTwice(store, ids)
        let done = Atomic(false)
        let readers = (0..<4).map { _ in
            Thread {
                while !done.load(ordering: .acquiring) {
                    for id in ids { _ = try? store.sealed.get(id) }
                }
            }
        }
        for reader in readers { reader.start() }
        for first in stride(from: 0, to: ids.count, by: 20) {
            try store.shred(Array(ids[first..<(first + 20)]))
            Self.expectShredded(store, Array(ids[first..<(first + 20)]))
        }
        done.store(true, ordering: .releasing)
        while readers.contains(where: { !$0.isFinished }) { usleep(1000) }
        Self.expectShredded(store, ids)
    }
}

import CaseVaultCore
import CaseVaultStore
import Testing

/// Gets keep what they asked of a record's case and of the roster (`CaseAnswers`), so these tests read a
/// record first, then change its case or the roster each way the store can: what the next get's check is
/// given must come from the change, not from what an earlier get kept. It decides who may read.
@Suite("Gets after a case or the roster changed, when earlier gets asked the same")
struct CaseAnswersTests {
    /// What a read of `id` by uid 4001 hands its check: the case's summary and the roster's answer. Asked
    /// twice, so that the second comes from what the first kept when nothing changed in between.
    static func seen(_ store: RecordStore, _ id: RecordID) throws -> (summary: CaseSummary, onRoster: Bool) {
        var seen: [(CaseSummary, Bool)] = []
        for _ in 0..<2 {
            _ = try store.sealed.read(id, rosterUID: 4001) { _, summary, onRoster in seen.append((summary, onRoster)) }
        }
        #expect(seen[0].0 == seen[1].0 && seen[0].1 == seen[1].1)
        return seen[1]
    }

    /// A case in session (mediator 4001) and one of its agreements to mediate, which closing keeps.
    static func caseAndAgreement(_ store: RecordStore) throws -> (CaseSummary, RecordID) {
        let (summary, _) = try Lifecycle.caseInSession(store)
        let agreement = try #require(try store.agreements(summary.id).first).id
        return (summary, agreement)
    }

    /// Runs `body` on a fresh store holding one case in session and its agreement (`caseAndAgreement`).
    static func withCase(_ body: (RecordStore, CaseSummary, RecordID) throws -> Void) throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let (summary, agreement) = try Self.caseAndAgreement(store)
        try body(store, summary, agreement)
    }

    @Test("the roster: a uid taken off it, and put back")
    func roster() throws {
        try Self.withCase { (store, _, agreement) throws in
            #expect(try !Self.seen(store, agreement).onRoster)
            #expect(try store.addToRoster(4001))
            #expect(try Self.seen(store, agreement).onRoster)
            #expect(try store.removeFromRoster(4001))
            #expect(try !Self.seen(store, agreement).onRoster)
        }
    }

    @Test("a case's mediators and supervisors replaced")
    func assignments() throws {
        try Self.withCase { (store, summary, agreement) throws in
            #expect(try Self.seen(store, agreement).summary.mediators == [4001])
            try store.assign(.mediators, summary.id, [4002])
            #expect(try Self.seen(store, agreement).summary.mediators == [4002])
            try store.assign(.supervisors, summary.id, [5001])
            #expect(try Self.seen(store, agreement).summary.supervisors == [5001])
            try store.assign(.supervisors, summary.id, [])
            #expect(try Self.seen(store, agreement).summary.supervisors == [])
        }
    }

    /// Closing marks the case's notes, which empties the rows kept too (`LiveRows`): this checks what a
    /// get is given after it, whichever of the two caches would have kept it.
    @Test("a case closed, and one closed by its final agreement")
    func closing() throws {
        try Self.withCase { (store, first, firstAgreement) throws in
            #expect(try Self.seen(store, firstAgreement).summary.state == .session)
            _ = try store.closeCase(first.id, outcome: .withdrawn)
            #expect(try Self.seen(store, firstAgreement).summary.state == .closed)

            let (second, secondAgreement) = try Self.caseAndAgreement(store)
            let before = try Self.seen(store, secondAgreement).summary
            _ = try store.sealed.file(
                NewRecord(caseID: second.id, type: .finalAgreement, content: Lifecycle.finalAgreement))
            let after = try Self.seen(store, secondAgreement).summary
            #expect(before.state == .session && after.state == .closed)
            #expect(after == (try store.caseSummary(second.id)))
        }
    }
}

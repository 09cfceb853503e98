import CaseVaultPostgres
import Testing

/// `DatabaseChecks.epochVerdict`, the judgement doctor makes of the erase epochs, at the edges of half the
/// erase window: a shred is promised complete by its time plus the window, half of it for the epoch current
/// at the shred to be replaced and half for every daemon to destroy it.
@Suite("doctor's verdict on the erase epochs")
struct EpochVerdictTests {
    /// A day's window: half of it is 43,200 s.
    static let window: Int64 = 86_400

    static func verdict(
        turned: Int64, waiting: [String] = [], holding: [DatabaseChecks.Holder] = []
    ) -> DatabaseChecks.Check {
        DatabaseChecks.epochVerdict(
            current: 7, secondsSinceTurned: turned, waiting: waiting, holding: holding, eraseWindow: Self.window)
    }

    @Test("the current epoch passes up to half the window after its turn and fails a second past it")
    func currentEpochAge() {
        #expect(Self.verdict(turned: 0).status == .pass)
        #expect(Self.verdict(turned: 43_200).status == .pass)
        let late = Self.verdict(turned: 43_201)
        #expect(late.status == .fail)
        #expect(late.detail.contains("no daemon has turned since"), "\(late.detail)")
    }

    @Test("a copy of the current epoch's key still waiting is a turn under way, and named as late with a late epoch")
    func waitingCopy() {
        let underWay = Self.verdict(turned: 43_200, waiting: ["b", "a"])
        #expect(underWay.status == .warn)
        #expect(underWay.detail.contains("not yet received epoch 7: b, a"), "\(underWay.detail)")
        let late = Self.verdict(turned: 43_201, waiting: ["a"])
        #expect(late.status == .fail)
        #expect(late.detail.contains("not yet received epoch 7: a"), "\(late.detail)")
    }

    @Test("an older epoch still held warns up to half the window after its successor's turn, and fails past it")
    func olderEpochHeld() {
        let pending = Self.verdict(
            turned: 10, holding: [DatabaseChecks.Holder(daemon: "a", epoch: 6, secondsSinceReplaced: 43_200)])
        #expect(pending.status == .warn)
        #expect(pending.detail.contains("a (epoch 6)"), "\(pending.detail)")
        let overdue = Self.verdict(
            turned: 10,
            holding: [
                DatabaseChecks.Holder(daemon: "a", epoch: 5, secondsSinceReplaced: 43_201),
                DatabaseChecks.Holder(daemon: "b", epoch: 6, secondsSinceReplaced: 20),
            ])
        #expect(overdue.status == .fail)
        #expect(overdue.detail.contains("not complete: a (epoch 5)"), "\(overdue.detail)")
        #expect(overdue.detail.contains("b (epoch 6)"), "the turn under way is named beside the failure")
    }
}

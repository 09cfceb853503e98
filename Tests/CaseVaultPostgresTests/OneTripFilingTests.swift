import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Synchronization
import Testing

/// The filing in one trip on PostgreSQL (`Vault.awaitFile`, `PostgresStorage.awaitFileIfUnchanged`): decided
/// on the case read without its lock, committed only if that read still holds under the lock.
extension EpochExchangeTests {
    static func intake(_ marker: String) -> [UInt8] {
        Array(#"{"dispute_category":"roommate","screening":"\#(marker)"}"#.utf8)
    }

    /// `Vault.awaitFile` with `decide`, the code it failed with or the record it filed.
    static func awaitedFiling(
        _ vault: Vault<PostgresStorage>, _ record: NewRecord, rosterUID: UInt32? = nil,
        decide: @escaping @Sendable (CaseSummary, Bool) throws(CaseVaultError) -> Authority = { _, _ in .daemon }
    ) async -> Result<RecordMetadata, CaseVaultError> {
        do {
            return .success(try await vault.awaitFile(record, rosterUID: rosterUID, decide: decide).record)
        } catch {
            return .failure(error)
        }
    }

    /// Runs `change` (a blocking call of the other daemon's storage) between the next one-trip filing's read
    /// and its commit; what it threw is kept in `failure`.
    func between(
        _ storage: PostgresStorage, _ failure: HookFailure, _ change: @escaping @Sendable () throws -> Void
    ) {
        storage.runBeforeOneTripCommit {
            do {
                try await self.blocking(change)
            } catch {
                failure.text.withLock { $0 = "\(error)" }
            }
        }
    }

    @Test(
        "a filing that only adds its record is made in one trip on PostgreSQL and reads back at the other daemon; a case closed, its mediators replaced, or the filer taken off the roster between its read and its commit makes it decide again under the case's lock, which refuses it (case-closed, forbidden) and files nothing; a case's lock held elsewhere makes it wait under the lock and file once it is let go; a session note, which needs the agreements, and a record that supersedes another, go under the lock from the start"
    )
    func oneTripFiling() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (_, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let storage = vaultA.storage
        let (caseID, otherCase, thirdCase) = try await self.blocking {
            let first = try vaultA.openCase(header: Self.header, mediators: [4001], author: nil).id
            let second = try vaultA.openCase(header: Self.header, mediators: [4001], author: nil).id
            let third = try vaultA.openCase(header: Self.header, mediators: [4001], author: nil).id
            _ = try vaultA.storage.addToRoster(4001)
            return (first, second, third)
        }
        let hookFailure = HookFailure()

        // Filed in one trip, by a mediator of the case on the roster; read back at the other daemon.
        let mediator: @Sendable (CaseSummary, Bool) throws(CaseVaultError) -> Authority = {
            summary, listed throws(CaseVaultError) in
            guard listed, summary.mediators.contains(4001) else {
                throw CaseVaultError(.forbidden, "not a mediator of the case on the roster")
            }
            return Authority(uid: 4001, role: "mediator")
        }
        let filed = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: caseID, type: .intakeForm, content: Self.intake("first")), rosterUID: 4001,
            decide: mediator)
        let first = try filed.get()
        #expect(storage.oneTripCounts == (read: 1, filed: 1, changed: 0))
        let read = try await self.blocking { try vaultB.get(first.id) }
        #expect(read.content == Self.intake("first") && read.metadata.caseID == caseID)

        // The case closed after the filing read it: refused under the lock, nothing filed.
        self.between(storage, hookFailure) {
            _ = try vaultB.storage.closeCase(caseID, outcome: .withdrawn, authority: .daemon)
        }
        let afterClosing = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: caseID, type: .intakeForm, content: Self.intake("closed")))
        #expect(afterClosing.failureCode == .caseClosed, "\(afterClosing)")
        #expect(storage.oneTripCounts == (read: 2, filed: 1, changed: 1))

        // The case's mediators replaced after the filing read them: forbidden under the lock.
        self.between(storage, hookFailure) { try vaultB.storage.assign(.mediators, otherCase, [4002]) }
        let afterAssigning = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: otherCase, type: .intakeForm, content: Self.intake("assigned")), rosterUID: 4001,
            decide: mediator)
        #expect(afterAssigning.failureCode == .forbidden, "\(afterAssigning)")
        #expect(storage.oneTripCounts == (read: 3, filed: 1, changed: 2))

        // The filer taken off the roster after the filing read it: forbidden under the lock, nothing filed.
        self.between(storage, hookFailure) { _ = try vaultB.storage.removeFromRoster(4001) }
        let afterRemoval = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: thirdCase, type: .intakeForm, content: Self.intake("removed")), rosterUID: 4001,
            decide: mediator)
        storage.runBeforeOneTripCommit(nil)
        #expect(afterRemoval.failureCode == .forbidden, "\(afterRemoval)")
        #expect(storage.oneTripCounts == (read: 4, filed: 1, changed: 3))
        #expect(hookFailure.text.withLock { $0 } == nil)

        let kept = try await self.blocking {
            try [caseID, otherCase, thirdCase].map { id in
                try vaultB.storage.records(caseID: id).filter { $0.type == .intakeForm }.map(\.id)
            }
        }
        #expect(kept == [[first.id], [], []])

        // The case's lock held by the other daemon: the call takes no lock it would wait for, and the filing
        // waits under the lock instead, filing once it is let go.
        let locked = Flag()
        let release = Flag()
        let holder = Task {
            try await vaultB.storage.awaitWithCaseLock(thirdCase, readingRoster: nil) {
                _, _ async throws(CaseVaultError) in
                locked.raise()
                while !release.isRaised { try? await Task.sleep(for: .milliseconds(5)) }
            }
        }
        while !locked.isRaised { try await Task.sleep(for: .milliseconds(5)) }
        let waiting = Task {
            await Self.awaitedFiling(
                vaultA, NewRecord(caseID: thirdCase, type: .intakeForm, content: Self.intake("waited")))
        }
        let deadline = ContinuousClock.now + .seconds(20)
        while storage.oneTripCounts.changed < 4 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(storage.oneTripCounts == (read: 5, filed: 1, changed: 4))
        release.raise()
        try await holder.value
        let waited = try await waiting.value.get()
        let after = try await self.blocking { try vaultB.get(waited.id) }
        #expect(after.content == Self.intake("waited") && after.metadata.caseID == thirdCase)

        // What needs more than the case goes under the lock from the start: a session note needs the
        // agreements, and a record it supersedes is read (here another case's, refused).
        let note = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: otherCase, type: .sessionNote, content: Self.note("n")))
        #expect(note.failureCode == .agreementsMissing, "\(note)")
        let superseding = await Self.awaitedFiling(
            vaultA,
            NewRecord(caseID: otherCase, type: .intakeForm, content: Self.intake("again"), supersedes: first.id))
        #expect(superseding.failureCode == .invalidField, "\(superseding)")
        #expect(storage.oneTripCounts == (read: 5, filed: 1, changed: 4))
    }
}

/// What a test's hook threw, if it did.
final class HookFailure: Sendable {
    let text = Mutex<String?>(nil)
}

extension Result where Failure == CaseVaultError {
    /// The code of the error, `nil` for a success.
    var failureCode: CaseVaultError.Code? {
        if case .failure(let error) = self { return error.code }
        return nil
    }
}

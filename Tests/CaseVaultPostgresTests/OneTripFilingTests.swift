import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Testing

/// The filing in one trip on PostgreSQL (`Vault.awaitFile`, `PostgresStorage.awaitCommitUnchanged`): decided
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

    @Test(
        "a filing that only adds its record is made in one trip on PostgreSQL and reads back at the other daemon; a case closed, or a filer taken off the roster, between its read and its commit makes it decide again under the case's lock, which refuses it (case-closed, forbidden) and files nothing; a session note, which needs the agreements, goes under the lock from the start"
    )
    func oneTripFiling() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (_, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let storage = vaultA.storage
        let (caseID, otherCase) = try await self.blocking {
            let first = try vaultA.openCase(header: Self.header, mediators: [4001], author: nil).id
            let second = try vaultA.openCase(header: Self.header, mediators: [4001], author: nil).id
            _ = try vaultA.storage.addToRoster(4001)
            return (first, second)
        }

        // Filed in one trip, by a mediator on the roster; read back at the other daemon.
        let onRoster: @Sendable (CaseSummary, Bool) throws(CaseVaultError) -> Authority = {
            _, listed throws(CaseVaultError) in
            guard listed else { throw CaseVaultError(.forbidden, "not on the roster") }
            return Authority(uid: 4001, role: "mediator")
        }
        let filed = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: caseID, type: .intakeForm, content: Self.intake("first")), rosterUID: 4001,
            decide: onRoster)
        let first = try filed.get()
        #expect(storage.oneTripCounts == (filed: 1, changed: 0))
        let read = try await self.blocking { try vaultB.get(first.id) }
        #expect(read.content == Self.intake("first") && read.metadata.caseID == caseID)

        // The case closed after the filing read it: refused under the lock, nothing filed.
        storage.runBeforeOneTripCommit {
            _ = try? await self.blocking {
                try vaultB.storage.closeCase(caseID, outcome: .withdrawn, authority: .daemon)
            }
        }
        let afterClosing = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: caseID, type: .intakeForm, content: Self.intake("closed")))
        storage.runBeforeOneTripCommit(nil)
        #expect(afterClosing.failureCode == .caseClosed, "\(afterClosing)")
        #expect(storage.oneTripCounts == (filed: 1, changed: 1))

        // The filer taken off the roster after the filing read it: forbidden under the lock, nothing filed.
        storage.runBeforeOneTripCommit {
            _ = try? await self.blocking { try vaultB.storage.removeFromRoster(4001) }
        }
        let afterRemoval = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: otherCase, type: .intakeForm, content: Self.intake("removed")), rosterUID: 4001,
            decide: onRoster)
        storage.runBeforeOneTripCommit(nil)
        #expect(afterRemoval.failureCode == .forbidden, "\(afterRemoval)")
        #expect(storage.oneTripCounts == (filed: 1, changed: 2))

        let kept = try await self.blocking {
            (try vaultB.storage.records(caseID: caseID), try vaultB.storage.records(caseID: otherCase))
        }
        #expect(kept.0.filter { $0.type == .intakeForm }.map(\.id) == [first.id])
        #expect(kept.1.filter { $0.type == .intakeForm }.isEmpty)

        // What needs more than the case goes under the lock: a session note needs the agreements.
        let note = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: otherCase, type: .sessionNote, content: Self.note("n")))
        #expect(note.failureCode == .agreementsMissing, "\(note)")
        #expect(storage.oneTripCounts == (filed: 1, changed: 2))
    }
}

extension Result where Failure == CaseVaultError {
    /// The code of the error, `nil` for a success.
    var failureCode: CaseVaultError.Code? {
        if case .failure(let error) = self { return error.code }
        return nil
    }
}

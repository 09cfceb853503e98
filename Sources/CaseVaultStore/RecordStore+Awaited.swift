package import CaseVaultCore
package import CaseVaultSealing
internal import Dispatch

// Filings the server awaits on its event loops (`SuspendingStorage`), so that a PUT holds no thread of the
// blocking pool while its batch flushes: the case's lock is waited for suspended (`CaseLocks.awaitLock`),
// the reads under it are answered on the calling thread as a GET's are (the index is in WAL mode: a read
// never waits for a flush; past its 8 lookup connections it waits for one of GRDB's readers, as a GET
// does), and the put waits suspended for its batch (`WriteQueue`'s async `submit`), whose leader runs on a
// thread of the write queue's. Each call means what the blocking call of the same name means.
extension RecordStore {
    package func awaitWithCaseLock<T>(
        _ id: CaseID, readingRoster rosterUID: UInt32?,
        _ body: (CaseSummary?, Bool) async throws(CaseVaultError) -> T
    ) async throws(CaseVaultError) -> T {
        try await self.caseLocks.awaitLock(id) { () async throws(CaseVaultError) -> T in
            let (summary, onRoster) = try self.caseAndRoster(id, rosterUID: rosterUID)
            return try await body(summary, onRoster)
        }
    }

    package func awaitCommit(_ record: SealedRecord, effects: FilingEffects) async throws(CaseVaultError)
        -> RecordMetadata
    {
        let pending = PendingPut(record, effects: effects, createdAt: self.now())
        return try await self.writes.submit(
            pending, prepare: { self.prepare($0, drain: $1) }, finish: { self.finish($0) }
        ).get()
    }

    package func awaitMetadata(_ id: RecordID) async throws(CaseVaultError) -> RecordMetadata {
        try self.metadata(id)
    }

    package func awaitNotesToDestroy(_ caseID: CaseID) async throws(CaseVaultError) -> [RecordID] {
        try self.notesToDestroy(caseID)
    }

    package func awaitAgreements(_ caseID: CaseID) async throws(CaseVaultError)
        -> [(id: RecordID, sealedParticipant: [UInt8]?)]
    {
        try self.agreements(caseID)
    }

    /// `finishMarkedShreds` on a thread of its own: a shred writes and flushes as the only writer.
    package func awaitFinishMarkedShreds(_ ids: [RecordID]) async throws(CaseVaultError) {
        guard !ids.isEmpty else { return }
        let result: Result<Void, CaseVaultError> = await withCheckedContinuation { continuation in
            self.filingShreds.async {
                continuation.resume(returning: Result { () throws(CaseVaultError) in try self.finishMarkedShreds(ids) })
            }
        }
        try result.get()
    }
}

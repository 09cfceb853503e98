package import CaseVaultCore

/// A storage whose filings the server makes from its event loops: each call below suspends the calling task
/// while the storage waits (for the database's answer, or for a put batch's flush and commit), where
/// `RecordStorage`'s own calls block a thread of the server's blocking pool, and hop to it and back. Same
/// meaning, call for call, as the `RecordStorage` call of the same name; `Vault.awaitFile` is `Vault.file`
/// made of them. Both storages provide it (`ServedStorage` requires it): PostgreSQL awaits its connection;
/// the local store waits for its case locks and put batches suspended, and answers the reads under a case's
/// lock on the calling thread, as it answers a GET.
package protocol SuspendingStorage: RecordStorage {
    /// `withCaseLock(_:readingRoster:_:)`, its body awaited. Never nested in another case's lock.
    func awaitWithCaseLock<T>(
        _ id: CaseID, readingRoster rosterUID: UInt32?,
        _ body: (CaseSummary?, Bool) async throws(CaseVaultError) -> T
    ) async throws(CaseVaultError) -> T
    func awaitCommit(_ record: SealedRecord, effects: FilingEffects) async throws(CaseVaultError) -> RecordMetadata
    func awaitMetadata(_ id: RecordID) async throws(CaseVaultError) -> RecordMetadata
    func awaitNotesToDestroy(_ caseID: CaseID) async throws(CaseVaultError) -> [RecordID]
    func awaitAgreements(_ caseID: CaseID) async throws(CaseVaultError)
        -> [(id: RecordID, sealedParticipant: [UInt8]?)]
    func awaitFinishMarkedShreds(_ ids: [RecordID]) async throws(CaseVaultError)
}

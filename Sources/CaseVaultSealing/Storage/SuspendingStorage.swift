package import CaseVaultCore

/// A storage whose filings the server makes from its event loops: each call below suspends the calling task
/// while the storage waits (for the database's answer, or for a put batch's flush and commit), where
/// `RecordStorage`'s own calls block a thread of the server's blocking pool, and hop to it and back. Same
/// meaning, call for call, as the `RecordStorage` call of the same name; `Vault.awaitFile` is `Vault.file`
/// made of them (on PostgreSQL, a filing in one trip first: `awaitFileIfUnchanged`). Both storages provide
/// it (`ServedStorage` requires it): PostgreSQL awaits its connection;
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
    /// A filing in one trip (`FilingSnapshot`); by default, none.
    func awaitFileIfUnchanged(
        _ id: CaseID, readingRoster rosterUID: UInt32?, sealing seal: (FilingSnapshot) -> SealedRecord?
    ) async throws(CaseVaultError) -> RecordMetadata?
}

/// What a filing read of its case without the case's lock (`SuspendingStorage.awaitFileIfUnchanged`): the
/// case's row (`nil` for an unknown case), whether the roster uid asked about is on the roster, and the erase
/// epoch new wraps used then (`nil` where none is ready, or where the storage wraps under none). A filing
/// decided on it is committed only if all of it still holds under the case's lock.
package struct FilingSnapshot: Sendable {
    package var summary: CaseSummary?
    package var onRoster: Bool
    package var wrapEpoch: UInt64?

    package init(summary: CaseSummary?, onRoster: Bool, wrapEpoch: UInt64?) {
        self.summary = summary
        self.onRoster = onRoster
        self.wrapEpoch = wrapEpoch
    }
}

/// A filing in one trip to the storage, for a storage whose case lock costs trips of its own (PostgreSQL:
/// a transaction's begin, lock, read and commit). `Vault.awaitFile` has the storage read the case without
/// its lock; on that read it decides and seals (`seal`, which answers `nil` for a filing it refuses or that
/// would change more than add its record), and the storage commits the sealed record only if the case, the
/// roster and the wrap epoch it read still hold once the lock is taken. Otherwise the filing is made as
/// before, under the lock from the start. The default (the local store, whose case lock is a lock in
/// memory) offers no such path.
extension SuspendingStorage {
    /// Reads the case, the roster and the wrap epoch without the case's lock, has `seal` decide and seal on
    /// them, and files what it sealed if what was read still holds under the lock, in one trip; `nil`,
    /// having filed nothing, when the storage has no one-trip filing, `seal` declined, the lock was busy or
    /// something changed: the filing is then decided again under the lock.
    package func awaitFileIfUnchanged(
        _ id: CaseID, readingRoster rosterUID: UInt32?, sealing seal: (FilingSnapshot) -> SealedRecord?
    ) async throws(CaseVaultError) -> RecordMetadata? {
        nil
    }
}

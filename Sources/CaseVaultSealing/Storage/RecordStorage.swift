package import CaseVaultCore
package import Logging

/// The storage protocol: what the sealing layer (`Vault`) needs of the place that keeps a vault's records.
/// Everything that crosses it is ciphertext, ids and metadata: sealed records and their wrapped keys, case
/// rows, sealed hold reasons and sealed statistical facts. No content, no key and no hold reason in clear
/// ever reaches an implementation. Files and SQLite (`RecordStore`) are the first implementation; what a
/// second one on a networked engine must provide for the shred guarantee is in docs/ARCHITECTURE.md.
///
/// Every call may block on I/O. Errors are `CaseVaultError`s: `not-found` for an unknown id, `shredded` for
/// a record whose shred has begun, `storage-failure` for the engine's own failures.
package protocol RecordStorage: AnyObject, Sendable {
    /// The vault's keys as the storage may use them (rewrap in a rotation, sign, MAC, seal backup keys):
    /// ciphertext in, ciphertext out. The sealing layer reaches the barrier behind them.
    var sealing: SealingServices { get }
    var logger: Logger { get }
    /// The largest record content accepted, in bytes.
    var maxContentBytes: Int { get }
    /// The storage's clock, milliseconds since the Unix epoch.
    func now() -> Int64

    // MARK: Records

    /// Files `record` durably with `effects` in the same transaction, so that a crash leaves all or none of
    /// it: places its blob, wraps its key into a slot (`SealedRecord.wrappedKey`), commits its row. Inside
    /// a case's lock, a storage may make the lock's end the commit (PostgreSQL): the filing is kept once
    /// `withCaseLock` returns. The storage must not keep `record` past the commit: it holds the record's
    /// data key.
    func commit(_ record: SealedRecord, effects: FilingEffects) throws(CaseVaultError) -> RecordMetadata
    /// A live record's metadata: `not-found` or `shredded` as `storedRecord`.
    func metadata(_ id: RecordID) throws(CaseVaultError) -> RecordMetadata
    /// A live record's wrapped key and blob.
    func storedRecord(_ id: RecordID) throws(CaseVaultError) -> StoredRecord
    /// `storedRecord(_:)` once `decide` approves it: one trip to the index gives the record's metadata,
    /// its case and whether `rosterUID` is on the mediator roster; `decide` throws to refuse.
    func storedRecord(
        _ id: RecordID,
        rosterUID: UInt32?,
        decide: (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> StoredRecord
    /// Whether `id`'s shred has begun (or is done): what a read that failed to authenticate reports.
    func shredHasBegun(_ id: RecordID) throws(CaseVaultError) -> Bool

    /// The reads above, for a caller on the server's event loops, which must never block a thread: a
    /// storage that waits on the network (PostgreSQL) suspends the calling task until the answer comes. The
    /// local store answers them on the calling thread (its reads never wait on a flush: the extension below).
    func awaitStoredRecord(
        _ id: RecordID,
        rosterUID: UInt32?,
        decide: (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) async throws(CaseVaultError) -> StoredRecord
    func awaitStoredRecord(_ id: RecordID) async throws(CaseVaultError) -> StoredRecord
    func awaitShredHasBegun(_ id: RecordID) async throws(CaseVaultError) -> Bool

    // MARK: Cases

    /// Runs `body` holding the case's lock: filings, holds and closings of one case run one at a time. A
    /// storage may run the body in one transaction that a throw rolls back (PostgreSQL), or keep each call's
    /// own commit (the local store): the sealing layer relies on neither, and throws before it writes.
    func withCaseLock<T>(_ id: CaseID, _ body: () throws(CaseVaultError) -> T) throws(CaseVaultError) -> T
    /// The case's row; `not-found` for an unknown id.
    func caseSummary(_ id: CaseID) throws(CaseVaultError) -> CaseSummary
    /// `withCaseLock`, with the case's row (`nil` for an unknown id) and whether `rosterUID` is on the roster,
    /// read under the lock in one trip (for an unknown case the roster may be answered `false` unread): what
    /// a filing's decision sees. PostgreSQL takes the lock and reads them in one wait on the database.
    func withCaseLock<T>(
        _ id: CaseID, readingRoster rosterUID: UInt32?,
        _ body: (CaseSummary?, Bool) throws(CaseVaultError) -> T
    ) throws(CaseVaultError) -> T
    /// The id of the case's sealed header; `not-found` for an unknown case.
    func caseHeaderID(_ id: CaseID) throws(CaseVaultError) -> RecordID
    /// The session notes a final agreement destroys (none while a hold keeps them).
    func notesToDestroy(_ caseID: CaseID) throws(CaseVaultError) -> [RecordID]
    /// The live agreements to mediate of a case, in filing order, each with its sealed participant as
    /// `commit` was given it (`SealedRecord.sealedParticipant`); `nil` where the storage does not have it.
    func agreements(_ caseID: CaseID) throws(CaseVaultError) -> [(id: RecordID, sealedParticipant: [UInt8]?)]
    /// Runs the rest of the shred protocol for records a commit marked `shredding`.
    func finishMarkedShreds(_ ids: [RecordID]) throws(CaseVaultError)

    // MARK: Legal holds

    /// Whether the storage keeps residue it cannot overwrite (PostgreSQL: dead tuples, the WAL, standbys,
    /// backups), so that nothing may be sealed for it under a subkey of the root key, which outlives every
    /// erase epoch: each hold's reason is then sealed under a key of its own that the storage wraps under an
    /// erase epoch (`SealedHold.wrappedReasonKey(under:)`), and no agreement's participant is sealed beside
    /// it (a filing opens the agreements instead). `false` (the default): the local store, whose shreds and
    /// releases overwrite in place.
    var sealsUnderEraseEpochs: Bool { get }

    /// Keeps a hold whose reason is sealed.
    func insertHold(_ hold: SealedHold) throws(CaseVaultError)
    /// The holds standing, oldest first, reasons sealed.
    func sealedHolds() throws(CaseVaultError) -> [SealedHold]

    // MARK: Statistics

    /// Every case's row, what its records of `types` are now (newest and count) and the sealed facts kept.
    func statisticsSnapshot(types: [RecordType]) throws(CaseVaultError) -> StatisticsSnapshot
    /// The live records of `types` in a case, oldest first.
    func statisticsRecordIDs(_ caseID: CaseID, types: [RecordType]) throws(CaseVaultError) -> [RecordID]
    /// Keeps freshly sealed facts and drops the facts of cases that are gone.
    func keepStatisticsFacts(_ facts: [KeptFacts]) throws(CaseVaultError)

    // MARK: Attachments

    /// Starts the sealed file of `id`'s attachment: `attachment-exists` if it has one or one is under way.
    /// The file is not visible until `finishAttachment`, and a shred of the record removes it.
    func beginAttachment(_ id: RecordID) throws(CaseVaultError) -> (key: StoredKey, file: any AttachmentSink)
    /// Makes the attachment visible, only while its record is live (`shredded` otherwise).
    func finishAttachment(_ file: any AttachmentSink) throws(CaseVaultError)
    /// `id`'s sealed attachment; `not-found` when it has none.
    func openAttachment(_ id: RecordID) throws(CaseVaultError) -> (key: StoredKey, file: any AttachmentSource)
}

/// Where an attachment's sealed chunks are written, one after another.
package protocol AttachmentSink: AnyObject {
    var recordID: RecordID { get }
    /// Appends sealed bytes; `shredded` once the record's shred removed the file.
    func append(_ sealed: [UInt8]) throws(CaseVaultError)
    /// Makes what was appended durable.
    func flush() throws(CaseVaultError)
}

/// An attachment's sealed file, read at offsets.
package protocol AttachmentSource: AnyObject {
    var size: Int64 { get }
    func read(count: Int, at offset: Int64) throws(CaseVaultError) -> [UInt8]
}

extension RecordStorage {
    package var sealsUnderEraseEpochs: Bool { false }
}

extension RecordStorage {
    /// The read on the calling thread: for a storage whose reads never wait for more than a local read.
    package func awaitStoredRecord(
        _ id: RecordID,
        rosterUID: UInt32?,
        decide: (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) async throws(CaseVaultError) -> StoredRecord {
        try self.storedRecord(id, rosterUID: rosterUID, decide: decide)
    }

    package func awaitStoredRecord(_ id: RecordID) async throws(CaseVaultError) -> StoredRecord {
        try self.storedRecord(id)
    }

    package func awaitShredHasBegun(_ id: RecordID) async throws(CaseVaultError) -> Bool {
        try self.shredHasBegun(id)
    }
}

package import CaseVaultCore

/// What the server asks of a storage beyond what the sealing layer needs (`RecordStorage`): cases' rows and
/// the roster, the lists, closings and assignments, holds' release, shreds on request and certificates, and
/// the retention sweep and the storage's own life (closing, zeroing its keys, whether it still answers).
/// Every call may block on I/O, but for the filings the server awaits on its event loops
/// (`SuspendingStorage`). The local store (`RecordStore`) and the database (`PostgresStorage`) both provide
/// it.
package protocol ServedStorage: SuspendingStorage {
    // MARK: The roster

    func roster() throws(CaseVaultError) -> [UInt32]
    func isOnRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool
    /// Whether `uid` was added (`false`: it was on the roster already).
    func addToRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool
    /// Whether `uid` was removed (`false`: it was not on the roster).
    func removeFromRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool

    // MARK: Lists

    /// A page of the case list, newest first, each case's live records counted by type: whether
    /// `rosterUID` is on the roster is read first, and `query` builds the query from it, in one read.
    func listCases(
        rosterUID: UInt32?, _ query: (_ onRoster: Bool) -> CaseQuery
    ) throws(CaseVaultError) -> (rows: [CaseListRow], onRoster: Bool)
    /// A page of a case's live records of `types`, in filing order after `after`, with the next page's
    /// cursor when there may be one.
    func liveRecords(
        caseID: CaseID, types: Set<RecordType>, after: RecordListCursor?, limit: Int
    ) throws(CaseVaultError) -> (records: [RecordMetadata], next: RecordListCursor?)
    /// Every live record of a case, in filing order.
    func records(caseID: CaseID) throws(CaseVaultError) -> [RecordMetadata]

    // MARK: Cases

    /// Closes a case without a final agreement, its session notes shredded in the same operation; returns
    /// the notes shredded.
    @discardableResult
    func closeCase(_ id: CaseID, outcome: ClosingOutcome, authority: Authority) throws(CaseVaultError) -> [RecordID]
    /// Replaces a case's mediators or supervisors.
    func assign(_ assignment: CaseAssignment, _ id: CaseID, _ uids: [UInt32]) throws(CaseVaultError)
    /// Releases a hold; returns its case.
    func releaseHold(_ id: HoldID) throws(CaseVaultError) -> CaseID

    // MARK: Shreds and certificates

    /// Shreds `ids` on request, refused whole (`not-found`, `shredded`, `held`) changing nothing; returns
    /// the metadata of the records shredded.
    @discardableResult
    func shred(_ ids: [RecordID], order: ShredOrder) throws(CaseVaultError) -> [RecordMetadata]
    /// Disposes of every record whose retention has run out and that no hold covers (nothing in a dry run),
    /// stopping after about `limit` disposals; counts by type, never ids.
    func sweep(dryRun: Bool, limit: Int?, authority: Authority) throws(CaseVaultError) -> SweepReport
    /// Every shredded record's id and time of shredding (ms), oldest first: the shred ledger's export, ids
    /// and times only.
    func shreddedRecords() throws(CaseVaultError) -> [(id: RecordID, shreddedAt: Int64)]
    /// Certificate documents, oldest first; of one case when `caseID` is given.
    func certificates(caseID: CaseID?) throws(CaseVaultError) -> [[UInt8]]
    /// One certificate document; `not-found` for an unknown id.
    func certificate(_ id: String) throws(CaseVaultError) -> [UInt8]

    // MARK: Backups

    /// Writes a backup through `write` (called with each piece of the file, in order) while the vault
    /// serves: first destroys the backup keys in `keys` older than `retentionDays`, then makes and keeps this
    /// backup's own key there. A data directory's backup holds its files' bytes, a database's its rows; both
    /// leave session notes out.
    func backup(
        id: String, keys: BackupKeyFile, retentionDays: Int, write: (_ bytes: [UInt8]) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> BackupSummary
    /// Begins restoring a backup, whose key `keys` holds, into this vault, which holds nothing yet. `ledger`
    /// is the shred ledger (each record's id and time of shredding): the records of the backup it names are
    /// shredded again on `authority`'s order, and it is kept, so that this vault's own ledger names every
    /// one of them. `not-on-this-backend` for a data directory,
    /// which is restored without the daemon (`casevaultctl restore --data-dir`).
    func beginRestore(keys: BackupKeyFile, ledger: [RecordID: Int64], authority: Authority) throws(CaseVaultError)
        -> any BackupRestore

    // MARK: Several daemons

    /// Records an operator's word that the erase epoch key file of daemon `name`, which does not serve now,
    /// is destroyed (its host is gone for good), so that the erasures it held back are certified; returns
    /// the epochs whose holding by it was marked destroyed. `not-on-this-backend` where one daemon keeps
    /// the vault (the local store).
    func forgetDaemon(_ name: DaemonName) throws(CaseVaultError) -> [UInt64]
    /// Asks the daemons to turn the erase epochs now rather than at half the window, and to destroy the
    /// older ones as they do after any turn; each later call reports how far that has got, the call that
    /// finds it complete ending the rotation. `not-on-this-backend` on the local store (which rotates its
    /// key-encryption key instead).
    func rotateErasureEpochs() throws(CaseVaultError) -> ErasureRotation

    /// For the status: the epoch new data keys are wrapped under, and the epochs this daemon still holds
    /// (the local store: its key-encryption key's epochs not yet retired; PostgreSQL: the erase epochs its
    /// key file holds). More than one while a rotation, or a turn, is under way.
    func keyEpochs() throws(CaseVaultError) -> (current: UInt64, active: [UInt64])
    /// What the vault holds, for the operator's metrics: its live records (case headers not counted) and
    /// the bytes it takes (the local store's data directory; the vault's tables in PostgreSQL).
    func footprint() throws(CaseVaultError) -> (liveRecords: Int, bytes: Int64)

    // MARK: Life

    /// Ends the storage's use: later calls fail. A failure to close cleanly is returned (and logged).
    @discardableResult
    func close() -> CaseVaultError?
    /// Zeroes every key the storage holds (call `close` first): for sealing and stopping.
    func wipeKeys()
    /// Whether the storage lost commits it had acknowledged and the daemon must stop (the local index).
    var indexLost: Bool { get }
    /// Whether the storage answers a trivial call: what the service manager's watchdog asks.
    func isResponsive() -> Bool
}

extension ServedStorage {
    /// The Ed25519 key certificates are signed with.
    package var certificatePublicKey: [UInt8] { self.sealing.certificatePublicKey }
}

/// Where an operator's rotation of the erase epochs stands, for a vault kept in PostgreSQL
/// (`ServedStorage.rotateErasureEpochs`): the daemons turn, rewrap and destroy at their steps; a call asks
/// for the turn, or reports how far it has got.
package struct ErasureRotation: Sendable, Equatable {
    /// The epoch the rotation turns to.
    package var epoch: UInt64
    /// Whether this call asked for the rotation (otherwise it reported on one asked for before).
    package var opened: Bool
    /// Live records and holds whose keys are still wrapped under an older epoch.
    package var remaining: Int
    /// The daemons that still hold an older epoch's key (or a copy of one waiting for them).
    package var holding: [String]
    /// Whether the turn is done, nothing live is wrapped under an older epoch and every daemon has destroyed
    /// the older epochs: the residue of every record shredded before the call opens for no one.
    package var complete: Bool

    package init(epoch: UInt64, opened: Bool, remaining: Int, holding: [String], complete: Bool) {
        self.epoch = epoch
        self.opened = opened
        self.remaining = remaining
        self.holding = holding
        self.complete = complete
    }
}

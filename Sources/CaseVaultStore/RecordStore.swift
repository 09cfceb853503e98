package import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
package import CaseVaultSealing
internal import Foundation
package import Logging
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// The sealed record store, the first implementation of the storage protocol (`RecordStorage`) on files
/// and SQLite: it keeps sealed records in segments and their wrapped keys in key slots, indexes them, lists
/// a case's records, and shreds by the protocol of docs/ARCHITECTURE.md. It sees ciphertext, ids and
/// metadata only: the sealing layer (`Vault`) seals content before it arrives and opens it after it
/// leaves. Safe to use from many threads; puts from concurrent callers share one flush (group commit).
///
/// Every call blocks on disk I/O: call it from a thread that may block, not from a Swift concurrency
/// executor that must stay responsive; but for the awaited calls (`SuspendingStorage`, `awaitStoredRecord`),
/// which the server makes from its event loops: their reads run on the calling thread (they never wait for
/// a flush), and a filing waits for its case's lock and its put batch suspended.
package final class RecordStore: ServedStorage {
    let configuration: StoreConfiguration
    let directory: DataDirectory
    let index: Index
    let slots: KeySlotFile
    let segments: Segments
    package let sealing: SealingServices
    let writer: Mutex<WriterState>
    /// The epoch new keys are wrapped under; rotation moves it on.
    let epochs: Mutex<EpochState>
    let writes: WriteQueue<PendingPut, Result<RecordMetadata, CaseVaultError>>
    let caseLocks = CaseLocks()
    /// Where the shreds that awaited filings mark (a final agreement's notes) run, off the event loops: one
    /// at a time, as shreds run anyway (`asShredder`).
    let filingShreds = DispatchQueue(label: "casevault.filing-shreds")
    /// Live records' rows as gets read them (`LiveRows`): shut while a commit marks or removes records.
    let liveRows = LiveRows()
    /// Held by whoever runs a shred, from its mark to its end (`asShredder`).
    let shredder = NSLock()
    /// Held by a retention sweep from its listing to its end: sweeps run one at a time, each the only one
    /// adding batches to its open order.
    let sweeping = NSLock()
    package let logger: Logger
    /// The audit log, when its entries ride on the flushes of put batches (`letRide`).
    let rider = Mutex<(any FlushRider)?>(nil)
    /// Where put batches' leaders spent their time (`batchPhases`).
    let phases = Mutex(BatchPhases())
    /// Failed commits of put batches, for the batches behind them (`BatchFailures`).
    let batchFailures = Mutex(BatchFailures())
    private let closed = Atomic<Bool>(false)
    /// Whether `close` has begun.
    var isClosed: Bool { self.closed.load(ordering: .acquiring) }

    /// The epoch new keys are wrapped under: changed by a rotation as the only writer.
    struct EpochState {
        var current: UInt32
    }

    /// What the single writer changes as it commits: which slot and which segment region come next, and
    /// the settled mark: up to it, every frame's index row and key slot are durable on their own; past it,
    /// recovery rebuilds them from the frames. Only the holder of the write queue touches it, but for the
    /// settled mark, which a put batch's commit moves forward after the lead has passed on; it is persisted
    /// in the index by the same commit.
    struct WriterState {
        var slots: SlotAllocator
        var cursor: Segments.Cursor
        var settled: Segments.Cursor

        /// Takes back the slots and the segment place a failed put batch took since `before`; the settled
        /// mark, which earlier batches' commits may have moved on meanwhile, stays.
        mutating func restorePlacement(_ before: WriterState) {
            self.slots = before.slots
            self.cursor = before.cursor
        }
    }

    /// Opens (creating on first use) the store in `configuration.dataDirectory`, then finishes any shred a
    /// crash interrupted and scrubs what uncommitted puts left in key slots and segments.
    package static func open(_ configuration: StoreConfiguration, logger: Logger) throws(CaseVaultError) -> RecordStore
    {
        let rootKey: RootKey
        switch configuration.keySource {
        case .file:
            let directory = try DataDirectory.prepare(path: configuration.dataDirectory.path)
            rootKey = try RootKeyFile.loadOrCreate(path: configuration.rootKeyFile.path, dataDirectory: directory.path)
        case .systemdCredential(let name, let credentials):
            rootKey = try RootKeyFile.loadCredential(name: name, directory: credentials)
        case .passphrase:
            throw CaseVaultError(.sealed, "the passphrase key source opens the store only at unseal")
        }
        return try Self.open(configuration, rootKey: rootKey, logger: logger)
    }

    /// Creates the data directory and its audit folder, without opening the store: what a sealed daemon
    /// needs to audit requests before anyone unseals it. Returns the audit folder.
    package static func prepareDirectories(_ configuration: StoreConfiguration) throws(CaseVaultError) -> String {
        let directory = try DataDirectory.prepare(path: configuration.dataDirectory.path)
        try DataDirectory.makeDirectory(directory.auditPath, createParents: false)
        return directory.auditPath
    }

    /// Opens the store with `rootKey` (from whichever source). Refuses a key that is not the one the data
    /// directory was made with (a keyed check value in the index), so that another vault's key or shares
    /// are told apart from damage.
    static func open(_ configuration: StoreConfiguration, rootKey: RootKey, logger: Logger) throws(CaseVaultError)
        -> RecordStore
    {
        let directory = try DataDirectory.prepare(path: configuration.dataDirectory.path)
        if !DataDirectory.exists(directory.indexPath) {
            // Created here with 0600 so that SQLite's -wal and -shm files inherit the same mode.
            _ = try PosixFile(path: directory.indexPath, flags: O_WRONLY | O_CREAT, mode: 0o600)
        }
        try DataDirectory.checkPrivateFile(directory.indexPath)
        let index = try Index.open(
            path: directory.indexPath, checkpointFrames: configuration.indexCheckpointFrames,
            checkpointObserver: configuration.checkpointObserver)
        let slots = try KeySlotFile(path: directory.slotsPath)
        // Make the names of files created above durable (SQLite syncs its own journal's directory entry).
        try DataDirectory.flushDirectory(directory.path)
        let segments = try Segments(path: directory.segmentsPath, maxBytes: configuration.maxSegmentBytes)
        try DataDirectory.makeDirectory(directory.attachmentsPath, createParents: false)
        try DataDirectory.makeDirectory(directory.auditPath, createParents: false)
        try DataDirectory.flushDirectory(directory.path)
        let (state, epoch) = try index.read { db in (try Index.writerState(db), try Index.currentEpoch(db)) }
        let sealing = try SealingServices(rootKey: rootKey)
        let bound = try Self.checkRootKey(sealing, index)
        sealing.retire(try index.read { db in try Index.retiredEpochs(db) })
        let store = RecordStore(
            configuration: configuration,
            directory: directory,
            index: index,
            slots: slots,
            segments: segments,
            sealing: sealing,
            state: state,
            epoch: epoch,
            logger: logger
        )
        try store.recover()
        store.catchUpShredLedgerCopy()
        if !bound {
            // Last, once all else of the first open has succeeded: an open that failed before (a new vault's
            // init on a failing disk) leaves the directory bound to no key, for the next init's.
            do {
                try index.write { db in try Index.setRootKeyCheck(db, sealing.rootKeyCheck) }
            } catch {
                var uncertain = error
                uncertain.cause = BindingUncertain(underlying: error.cause)
                throw uncertain
            }
        }
        return store
    }

    /// The cause an error of a new directory's binding to its key carries (the last step of its first open):
    /// the commit may have reached the disk, or be read back from the WAL at the next open, so the key is
    /// to be kept (`VaultKeeper.initialise`).
    package struct BindingUncertain: Error, Sendable {
        /// The binding's own error's cause.
        package let underlying: (any Error & Sendable)?
    }

    /// Compares the root key's check value with the one the directory is bound to, if any: false when it is
    /// bound to none yet (the first open, which records it last).
    private static func checkRootKey(_ sealing: SealingServices, _ index: Index) throws(CaseVaultError) -> Bool {
        let stored = try index.read { db in try Index.meta(db, "root_key_check") }
        if stored == 0 { return false }
        if stored != sealing.rootKeyCheck {
            throw CaseVaultError(
                .unsealRefused,
                "this root key does not open this data directory: it belongs to another vault, or the key file or shares are not this vault's"
            )
        }
        return true
    }

    /// Zeroes every key the store holds, now: for sealing. Call `close()` first.
    package func wipeKeys() {
        self.sealing.wipe()
    }

    private init(
        configuration: StoreConfiguration,
        directory: DataDirectory,
        index: Index,
        slots: KeySlotFile,
        segments: Segments,
        sealing: SealingServices,
        state: WriterState,
        epoch: UInt32,
        logger: Logger
    ) {
        self.configuration = configuration
        self.directory = directory
        self.index = index
        self.slots = slots
        self.segments = segments
        self.sealing = sealing
        self.writer = Mutex(state)
        self.epochs = Mutex(EpochState(current: epoch))
        self.writes = WriteQueue(maxBatch: configuration.maxBatch, overdue: Self.shredTurn)
        self.logger = logger
    }

    /// Truncates the index's WAL and closes the index. Further calls fail. A failure is logged as an
    /// error and returned: the WAL may then still hold page images of shredded rows, until the next open
    /// checkpoints it.
    @discardableResult
    package func close() -> CaseVaultError? {
        guard !self.closed.exchange(true, ordering: .acquiringAndReleasing) else { return nil }
        self.liveRows.close()
        // Waits for the writer and the put batches' commits in flight, if any, then settles what the puts
        // left unflushed, on the writer's state as the index has it if a batch's commit failed.
        let failure: CaseVaultError? = self.writes.exclusive {
            do {
                try self.reloadAfterFailedBatches()
                try self.settle()
                try self.index.truncateWAL()
                try self.index.close()
                return nil
            } catch {
                // The index lets go of its files all the same; it never checkpoints at close (`Index.Loss`), so
                // the WAL is truncated here first unless the index lost commits (no page image of a shredded
                // row stays in it).
                if !self.index.loss.happened { try? self.index.truncateWAL() }
                try? self.index.close()
                return error as? CaseVaultError ?? Index.failure(error)
            }
        }
        // No batch runs after this: the rider (the audit log, which holds this store as its anchor) is let go,
        // so that neither keeps the other, and this store's files, open.
        self.rider.withLock { $0 = nil }
        if let failure {
            self.logger.error(
                "the index did not close cleanly; its WAL is checkpointed at the next open",
                metadata: ["error.code": "\(failure.code.rawValue)"]
            )
        }
        return failure
    }

    /// Runs `body` as the only writer, unless the store is closed: once `close` has begun, nothing more is
    /// written, so that no key is used after `wipeKeys` (a rotation would rewrap slots under wiped keys).
    /// The puts before it are settled first: no exclusive writer overwrites a frame, scrubs a slot or
    /// rewraps one that recovery might still replay (a shred's sections: `asShredWriter`).
    func asWriter<Result>(_ body: () throws(CaseVaultError) -> Result) throws(CaseVaultError) -> Result {
        try self.asShredWriter { () throws(CaseVaultError) -> Result in
            try self.settle()
            return try body()
        }
    }

    /// `asWriter` for a section of a shred, which writes only the records it names (their rows, slots and
    /// frames) and the index's shred tables: it does not settle. The section that selects the records
    /// (a mark, or a resumed shred's listing) calls `settle(ifTouching:)` before it writes, so that no frame
    /// recovery might still replay is overwritten and no slot it might rewrite is scrubbed; the mark only
    /// moves forward, so the later sections find the same records settled. Settling before every section
    /// cost a sweep two flushes each time a put batch came between two of its sections.
    func asShredWriter<Result>(_ body: () throws(CaseVaultError) -> Result) throws(CaseVaultError) -> Result {
        try self.writes.exclusive { () throws(CaseVaultError) -> Result in
            try self.refuseIfClosed()
            try self.reloadAfterFailedBatches()
            return try body()
        }
    }

    /// Settles (`settle`) when one of `rows` has its frame at or past the settled mark. Called as the only
    /// writer.
    func settle(ifTouching rows: [Index.Row]) throws(CaseVaultError) {
        let mark = self.writer.withLock { $0.settled }
        guard rows.contains(where: { $0.isFiled(atOrPast: mark) }) else { return }
        try self.settle()
    }

    /// Makes the key slots and index rows of every frame filed so far durable on their own (a flush of the
    /// slot file, a flushed index commit) and moves the settled mark to the segment cursor. Called as the
    /// only writer; costs nothing when no put came since the last settle.
    func settle() throws(CaseVaultError) {
        let state = self.writer.withLock { $0 }
        guard state.settled != state.cursor else { return }
        try self.slots.flush()
        try self.index.write { db in
            try Index.setSettled(db, state.cursor)
        }
        self.writer.withLock { $0.settled = state.cursor }
    }

    /// `sealed` once `close` has begun.
    func refuseIfClosed() throws(CaseVaultError) {
        guard !self.closed.load(ordering: .acquiring) else {
            throw CaseVaultError(.sealed, "the store is closed: the vault was sealed or the daemon is stopping")
        }
    }

    /// Whether the index may have lost commits the disk refused (`Index.Loss`): every call of the store is
    /// refused from then on, and only opening the store again (the daemon's restart) mends the index.
    package var indexLost: Bool { self.index.loss.happened }

    /// What every call of a store whose index lost commits is refused with, and the daemon stops with.
    package static var indexLossError: CaseVaultError { Index.Loss.error }

    /// Whether the index answers a trivial query: what the service manager's watchdog asks before each ping.
    package func isResponsive() -> Bool {
        (try? self.index.lookup { db in try Index.answers(db) }) ?? false
    }

    /// What the store holds, for the operator's metrics: its live records (case headers not counted) and
    /// the bytes of every file in its data directory (segments, index, key slots, attachments).
    package func footprint() throws(CaseVaultError) -> (liveRecords: Int, bytes: Int64) {
        let live = try self.index.read { db in try Index.liveRecordCount(db) }
        var bytes: Int64 = 0
        let root = URL(fileURLWithPath: self.directory.path)
        let keys: Set<URLResourceKey> = [.isRegularFileKey, .fileSizeKey]
        if let files = FileManager.default.enumerator(at: root, includingPropertiesForKeys: Array(keys)) {
            for case let file as URL in files {
                guard let values = try? file.resourceValues(forKeys: keys), values.isRegularFile == true else {
                    continue
                }
                bytes += Int64(values.fileSize ?? 0)
            }
        }
        return (live, bytes)
    }

    /// How well group commit is batching: puts committed and the flushes (batches) they took.
    package var groupCommitCounts: (puts: Int, batches: Int) {
        let counts = self.writes.counts
        return (counts.jobs, counts.batches)
    }

    /// Where the leaders of the put batches acknowledged so far spent their time, phase by phase.
    package var batchPhases: BatchPhases { self.phases.withLock { $0 } }

    func observe(_ point: CrashPoint) {
        self.configuration.crashPointObserver?(point)
    }

    /// The largest record content the sealing layer accepts (`StoreConfiguration.maxContentBytes`).
    package var maxContentBytes: Int { self.configuration.maxContentBytes }

    /// The store's clock (`StoreConfiguration.clock`), milliseconds since the Unix epoch.
    package func now() -> Int64 {
        self.configuration.clock()
    }
}

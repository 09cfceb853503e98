public import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Foundation
internal import GRDB
public import Logging
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// The sealed record store: files records under per-record data keys, reads them back, lists a case's
/// records, and shreds by the protocol of DESIGN §6. Safe to use from many threads; puts from concurrent
/// callers share one flush (group commit).
///
/// Every call blocks on disk I/O: call it from a thread that may block, not from a Swift concurrency
/// executor that must stay responsive.
public final class RecordStore: Sendable {
    let configuration: StoreConfiguration
    let directory: DataDirectory
    let index: Index
    let slots: KeySlotFile
    let segments: Segments
    let barrier: Barrier
    let validator: RecordValidator
    let writer: Mutex<WriterState>
    /// The epoch new keys are wrapped under; rotation moves it on.
    let epochs: Mutex<EpochState>
    let writes: WriteQueue<PendingPut, Result<RecordMetadata, CaseVaultError>>
    let caseLocks = CaseLocks()
    let logger: Logger
    /// The audit log, when its entries ride on the flushes of put batches (`letRide`).
    let rider = Mutex<(any FlushRider)?>(nil)
    private let closed = Atomic<Bool>(false)

    /// The epoch new keys are wrapped under: changed by a rotation as the only writer.
    struct EpochState {
        var current: UInt32
    }

    /// What the single writer changes as it commits: which slot and which segment region come next.
    /// Only the holder of the write queue touches it; it is persisted in the index by the same commit.
    struct WriterState {
        var slots: SlotAllocator
        var cursor: Segments.Cursor
    }

    /// Opens (creating on first use) the store in `configuration.dataDirectory`, then finishes any shred a
    /// crash interrupted and scrubs what uncommitted puts left in key slots and segments.
    public static func open(_ configuration: StoreConfiguration, logger: Logger) throws(CaseVaultError) -> RecordStore {
        let rootKey: SecureBytes
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
    public static func prepareDirectories(_ configuration: StoreConfiguration) throws(CaseVaultError) -> String {
        let directory = try DataDirectory.prepare(path: configuration.dataDirectory.path)
        try DataDirectory.makeDirectory(directory.auditPath, createParents: false)
        return directory.auditPath
    }

    /// Opens the store with `rootKey` (from whichever source). Refuses a key that is not the one the data
    /// directory was made with (a keyed check value in the index), so that another vault's key or shares
    /// are told apart from damage.
    static func open(_ configuration: StoreConfiguration, rootKey: SecureBytes, logger: Logger) throws(CaseVaultError)
        -> RecordStore
    {
        let directory = try DataDirectory.prepare(path: configuration.dataDirectory.path)
        if !DataDirectory.exists(directory.indexPath) {
            // Created here with 0600 so that SQLite's -wal and -shm files inherit the same mode.
            _ = try PosixFile(path: directory.indexPath, flags: O_WRONLY | O_CREAT, mode: 0o600)
        }
        try DataDirectory.checkPrivateFile(directory.indexPath)
        let index = try Index.open(path: directory.indexPath)
        let slots = try KeySlotFile(path: directory.slotsPath)
        // Make the names of files created above durable (SQLite syncs its own journal's directory entry).
        try DataDirectory.flushDirectory(directory.path)
        let segments = try Segments(path: directory.segmentsPath, maxBytes: configuration.maxSegmentBytes)
        try DataDirectory.makeDirectory(directory.attachmentsPath, createParents: false)
        try DataDirectory.makeDirectory(directory.auditPath, createParents: false)
        try DataDirectory.flushDirectory(directory.path)
        let (state, epoch) = try index.read { db in (try Index.writerState(db), try Index.currentEpoch(db)) }
        let barrier = try Barrier(rootKey: rootKey)
        try Self.checkRootKey(barrier, index)
        barrier.retire(
            try index.read { db in
                try Int64.fetchAll(db, sql: "SELECT epoch FROM epochs WHERE retired_at IS NOT NULL").map { UInt32($0) }
            })
        let store = RecordStore(
            configuration: configuration,
            directory: directory,
            index: index,
            slots: slots,
            segments: segments,
            barrier: barrier,
            state: state,
            epoch: epoch,
            logger: logger
        )
        try store.recover()
        store.catchUpShredLedgerCopy()
        return store
    }

    /// The first open records the root key's check value; every later open compares it.
    private static func checkRootKey(_ barrier: Barrier, _ index: Index) throws(CaseVaultError) {
        let check = barrier.rootKeyCheck
        let stored = try index.read { db in try Index.meta(db, "root_key_check") }
        if stored == 0 {
            try index.write { db in
                try db.execute(
                    sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('root_key_check', ?)", arguments: [check])
            }
        } else if stored != check {
            throw CaseVaultError(
                .unsealRefused,
                "this root key does not open this data directory: it belongs to another vault, or the key file or shares are not this vault's"
            )
        }
    }

    /// Zeroes every key the store holds, now: for sealing. Call `close()` first.
    public func wipeKeys() {
        self.barrier.wipe()
    }

    private init(
        configuration: StoreConfiguration,
        directory: DataDirectory,
        index: Index,
        slots: KeySlotFile,
        segments: Segments,
        barrier: Barrier,
        state: WriterState,
        epoch: UInt32,
        logger: Logger
    ) {
        self.configuration = configuration
        self.directory = directory
        self.index = index
        self.slots = slots
        self.segments = segments
        self.barrier = barrier
        self.validator = RecordValidator(maxContentBytes: configuration.maxContentBytes)
        self.writer = Mutex(state)
        self.epochs = Mutex(EpochState(current: epoch))
        self.writes = WriteQueue(maxBatch: configuration.maxBatch)
        self.logger = logger
    }

    /// Truncates the index's WAL and closes the index. Further calls fail. A failure is logged as an
    /// error and returned: the WAL may then still hold page images of shredded rows, until the next open
    /// checkpoints it.
    @discardableResult
    public func close() -> CaseVaultError? {
        guard !self.closed.exchange(true, ordering: .acquiringAndReleasing) else { return nil }
        // Waits for the writer in flight, if any; every write was flushed before it returned.
        let failure: CaseVaultError? = self.writes.exclusive {
            do {
                try self.index.truncateWAL()
                try self.index.pool.close()
                return nil
            } catch let error as CaseVaultError {
                return error
            } catch {
                return Index.failure(error)
            }
        }
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
    func asWriter<Result>(_ body: () throws(CaseVaultError) -> Result) throws(CaseVaultError) -> Result {
        try self.writes.exclusive { () throws(CaseVaultError) -> Result in
            try self.refuseIfClosed()
            return try body()
        }
    }

    /// `sealed` once `close` has begun.
    func refuseIfClosed() throws(CaseVaultError) {
        guard !self.closed.load(ordering: .acquiring) else {
            throw CaseVaultError(.sealed, "the store is closed: the vault was sealed or the daemon is stopping")
        }
    }

    /// Whether the index answers a trivial query: what the service manager's watchdog asks before each ping.
    public func isResponsive() -> Bool {
        (try? self.index.lookup { db in try Int.fetchOne(db, sql: "SELECT 1") }) == 1
    }

    /// How well group commit is batching: puts committed and the flushes (batches) they took.
    public var groupCommitCounts: (puts: Int, batches: Int) {
        let counts = self.writes.counts
        return (counts.jobs, counts.batches)
    }

    func observe(_ point: CrashPoint) {
        self.configuration.crashPointObserver?(point)
    }

    /// The store's clock (`StoreConfiguration.clock`), milliseconds since the Unix epoch.
    func now() -> Int64 {
        self.configuration.clock()
    }

    // MARK: Put

    /// What a put changes besides adding its record, in the same index transaction: so that a crash leaves
    /// either all of it or none of it.
    struct CommitEffects {
        /// A case to create (opening a case files its sealed header).
        var newCase: (summary: CaseSummary, header: RecordID)?
        /// The case's state afterwards.
        var caseState: (id: CaseID, state: CaseState, closedAt: Int64?, outcome: String?)?
        /// Records to mark `shredding` (a final agreement's session notes); their shred finishes right after
        /// the commit, or on the next open after a crash.
        var markShredding: [RecordID] = []
        /// Who ordered those shreds, kept with them until their certificate is issued.
        var shredOrder: ShredOrder?
    }

    final class PendingPut {
        let metadata: RecordMetadata
        let dataKey: SecureBytes
        let sealed: [UInt8]
        let effects: CommitEffects

        init(metadata: RecordMetadata, dataKey: SecureBytes, sealed: [UInt8], effects: CommitEffects) {
            self.metadata = metadata
            self.dataKey = dataKey
            self.sealed = sealed
            self.effects = effects
        }
    }

    /// Validates, seals and durably files a record, with no lifecycle rule: the low-level primitive under
    /// `file(_:)`, which the server uses. When this returns, the record survives a crash.
    public func put(_ record: NewRecord) throws(CaseVaultError) -> RecordMetadata {
        try self.validator.validate(type: record.type, content: record.content)
        return try self.put(validated: record, effects: CommitEffects())
    }

    func put(validated record: NewRecord, effects: CommitEffects, id: RecordID? = nil) throws(CaseVaultError)
        -> RecordMetadata
    {
        if let supersedes = record.supersedes {
            let previous = try self.liveRow(supersedes).metadata
            guard previous.caseID == record.caseID, previous.type == record.type else {
                throw CaseVaultError(
                    .invalidField,
                    "supersedes must name a record of the same case and type; an amendment replaces its own record",
                    field: "supersedes"
                )
            }
        }
        let metadata = RecordMetadata(
            id: id ?? RecordID(bytes: Random.bytes(count: RecordID.byteCount)),
            caseID: record.caseID,
            type: record.type,
            createdAt: self.now(),
            author: record.author,
            supersedes: record.supersedes,
            sealedSize: Barrier.sealedSize(contentSize: record.content.count)
        )
        let dataKey = self.barrier.newDataKey()
        // Validation and sealing run on the caller's thread, in parallel with other callers; only placing
        // the blob and the slot, the flush and the index commit are batched.
        let sealed = self.barrier.seal(content: record.content, dataKey: dataKey, record: metadata)
        let pending = PendingPut(metadata: metadata, dataKey: dataKey, sealed: sealed, effects: effects)
        let result = self.writes.submit(pending, perform: self.commit)
        let stored = try result.get()
        self.logger.debug("record filed", metadata: ["record.id": "\(stored.id)", "case.id": "\(stored.caseID)"])
        return stored
    }

    /// The leader's half of a put batch: one slot and one segment region per record, one filesystem
    /// flush for all of them, one index commit.
    private func commit(_ batch: [PendingPut]) -> [Result<RecordMetadata, CaseVaultError>] {
        // A batch that leads after `close` began writes nothing: its keys may be wiped by now, and a slot
        // wrapped under a wiped key would open for anyone.
        do throws(CaseVaultError) {
            try self.refuseIfClosed()
        } catch {
            return batch.map { _ in .failure(error) }
        }
        let before = self.writer.withLock { $0 }
        let slots: [Int64]
        do throws(CaseVaultError) {
            slots = try self.takeUnownedSlots(batch.count)
        } catch {
            self.writer.withLock { $0 = before }
            return batch.map { _ in .failure(error) }
        }
        let placed = self.writer.withLock { state in
            zip(batch, slots).map { put, slot in
                (slot: slot, location: state.cursor.reserve(put.sealed.count, maxBytes: self.segments.maxBytes))
            }
        }
        let after = self.writer.withLock { $0 }
        // A rotation changes the epoch only as the only writer, so it holds for the whole batch.
        let epoch = self.currentEpoch
        do throws(CaseVaultError) {
            for (put, place) in zip(batch, placed) {
                try self.segments.write(put.sealed, at: place.location)
                self.observe(.putAfterBlobWrite)
                let wrapped = try self.barrier.wrap(
                    dataKey: put.dataKey, recordID: put.metadata.id, slot: place.slot, epoch: epoch
                )
                try self.slots.write(place.slot, wrapped)
            }
            // What the audit log wrote before this point (the batch's request entries among it) is written
            // back beside the segment and made durable by the key slots' device flush.
            let rider = self.rider.withLock { $0 }
            let ride = rider?.prepareRide()
            try self.segments.flush(Set(placed.map(\.location.segment)))
            let boarded = ride.map { rider?.board($0) ?? false } ?? false
            try self.slots.flush()
            if let rider, let ride, boarded { rider.rode(ride) }
            self.observe(.putAfterSlotFlush)
            try self.index.write { db in
                for (put, place) in zip(batch, placed) {
                    let record = put.metadata
                    try db.cachedStatement(
                        sql: """
                            INSERT INTO records (\(Index.columns))
                            VALUES (?, ?, ?, 'live', ?, ?, ?, ?, ?, ?, ?)
                            """
                    ).execute(arguments: [
                        record.id.rawValue, record.caseID.rawValue, record.type.rawValue, record.createdAt,
                        record.author, record.supersedes?.rawValue, record.sealedSize, place.slot,
                        place.location.segment, place.location.offset,
                    ])
                    try Index.takeOffFreeList(db, [place.slot])
                    try Self.apply(put.effects, db)
                }
                try Index.setMeta(db, "slot_high_water", after.slots.highWater)
                try Index.setMeta(db, "segment_current", Int64(after.cursor.segment))
                try Index.setMeta(db, "segment_end", after.cursor.end)
            }
            self.observe(.putAfterCommit)
            return batch.map { .success($0.metadata) }
        } catch {
            // Nothing was acknowledged: undo what reached the disk so no orphan key or ciphertext remains.
            let stream = OverwriteStream()
            for place in placed {
                try? self.slots.scrub(place.slot)
                try? self.segments.overwrite(place.location, from: stream)
            }
            try? self.segments.flush(Set(placed.map(\.location.segment)))
            try? self.slots.flush()
            // The index holds what was committed; a slot dropped by `takeUnownedSlots` stays dropped.
            let reloaded = try? self.index.read { db in try Index.writerState(db) }
            self.writer.withLock { $0 = reloaded ?? before }
            self.logger.error(
                "a batch of puts failed",
                metadata: ["batch.size": "\(batch.count)", "error.code": "\(error.code.rawValue)"]
            )
            return batch.map { _ in .failure(error) }
        }
    }

    /// `count` distinct slots that no record in the index owns, taken from the allocator. A slot the free
    /// list or the high-water mark offers although a record owns it (an index damaged by hand or by a
    /// disk, never by the store) is not written: writing it would destroy that record's key, and so would
    /// scrubbing it when the batch fails. It leaves the free list for good, and the log says how many.
    private func takeUnownedSlots(_ count: Int) throws(CaseVaultError) -> [Int64] {
        var chosen: [Int64] = []
        var seen: Set<Int64> = []
        var owned: Set<Int64> = []
        while chosen.count < count {
            let candidates = self.writer.withLock { state in (chosen.count..<count).map { _ in state.slots.take() } }
            let found = try self.index.lookup { db in try Index.ownedSlots(db, among: candidates) }
            if !found.isEmpty {
                owned.formUnion(found)
                // A high-water mark below an owned slot: start above every owned slot at once.
                let top =
                    try self.index.lookup { db in try Int64.fetchOne(db, sql: "SELECT max(slot) FROM records") } ?? -1
                self.writer.withLock { state in state.slots.highWater = max(state.slots.highWater, top + 1) }
            }
            for slot in candidates where !found.contains(slot) && seen.insert(slot).inserted {
                chosen.append(slot)
            }
        }
        if !owned.isEmpty {
            try self.index.write { db in try Index.takeOffFreeList(db, owned) }
            self.logger.error(
                "the free-slot list offered key slots that records own; they were taken off it unwritten",
                metadata: ["slots.count": "\(owned.count)"]
            )
        }
        return chosen
    }

    // MARK: Get and list

    /// The record with its decrypted content. Throws `shredded` for a shredded record, `not-found` for an
    /// unknown id, `integrity-failure` when its slot or blob does not authenticate.
    public func get(_ id: RecordID) throws(CaseVaultError) -> CaseVaultCore.Record {
        try self.open(try self.liveRow(id))
    }

    /// Opens a record only once `decide` approves it. One trip to the index (point lookups without a
    /// transaction, each atomic, as `get` does) gives the record's metadata, its case and whether
    /// `rosterUID` is on the mediator roster; `decide` sees those, never content, and throws to refuse.
    /// Throws `not-found` or `shredded` as `get` does.
    public func read(
        _ id: RecordID,
        rosterUID: UInt32?,
        decide: (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> CaseVaultCore.Record {
        let (row, shredded, summary, onRoster) = try self.index.lookup { db in
            let row = try Index.row(db, id: id)
            let shredded = row == nil ? try Index.isShredded(db, id: id) : false
            let summary = try row.flatMap { row in try Index.caseSummary(db, id: row.metadata.caseID) }
            let onRoster =
                try rosterUID.map { uid in
                    try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM roster WHERE uid = ?"), arguments: [uid])
                        ?? false
                } ?? false
            return (row, shredded, summary, onRoster)
        }
        guard let row else {
            if shredded { throw Self.shreddedError() }
            throw CaseVaultError(.notFound, "no record has this id; check the id")
        }
        guard row.state == .live else { throw Self.shreddedError() }
        guard let summary else {
            throw CaseVaultError(.storageFailure, "the index holds a record whose case is missing")
        }
        try decide(row.metadata, summary, onRoster)
        return try self.open(row)
    }

    /// Decrypts a row's content through the barrier.
    func open(_ row: Index.Row) throws(CaseVaultError) -> CaseVaultCore.Record {
        let id = row.metadata.id
        do throws(CaseVaultError) {
            let slotBytes = try self.slots.read(row.slot)
            let dataKey = try self.barrier.unwrap(slotBytes: slotBytes, recordID: id, slot: row.slot)
            let sealed = try self.segments.read(row.location)
            let content = try self.barrier.open(blob: sealed, dataKey: dataKey, record: row.metadata)
            return CaseVaultCore.Record(metadata: row.metadata, content: content)
        } catch {
            // A shred that ran while we read makes the slot or blob fail; report it as what it is.
            if try self.index.read({ db in
                try Index.isShredded(db, id: id) || Index.row(db, id: id)?.state == .shredding
            }) {
                throw Self.shreddedError()
            }
            throw error
        }
    }

    /// The record's metadata, without opening its content.
    public func metadata(_ id: RecordID) throws(CaseVaultError) -> RecordMetadata {
        try self.liveRow(id).metadata
    }

    /// Metadata of every live record of a case, in the order they were filed.
    public func records(caseID: CaseID) throws(CaseVaultError) -> [RecordMetadata] {
        try self.index.read { db in try Index.rows(db, caseID: caseID) }.filter { $0.state == .live }.map(\.metadata)
    }

    /// Whether `id` names a record that was shredded.
    public func isShredded(_ id: RecordID) throws(CaseVaultError) -> Bool {
        try self.index.read { db in try Index.isShredded(db, id: id) }
    }

    func liveRow(_ id: RecordID) throws(CaseVaultError) -> Index.Row {
        // Row first, ledger second: a shred deletes the row and writes the ledger in one transaction, so a
        // reader that misses the row finds the ledger entry.
        let (row, shredded) = try self.index.lookup { db in
            let row = try Index.row(db, id: id)
            return (row, row == nil ? try Index.isShredded(db, id: id) : false)
        }
        guard let row else {
            if shredded { throw Self.shreddedError() }
            throw CaseVaultError(.notFound, "no record has this id; check the id")
        }
        guard row.state == .live else { throw Self.shreddedError() }
        return row
    }

    static func shreddedError() -> CaseVaultError {
        CaseVaultError(.shredded, "the record was shredded and can never be read again")
    }
}

#if canImport(Glibc)
internal import Glibc
#endif
public import CaseVaultCore
internal import CaseVaultCrypto
internal import GRDB
internal import Foundation
public import Logging
internal import Synchronization

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
    let blobs: SealedBlobs
    let barrier: Barrier
    let validator: RecordValidator
    let allocator: Mutex<SlotAllocator>
    let epoch: UInt32
    let writes: WriteQueue<PendingPut, Result<RecordMetadata, CaseVaultError>>
    let logger: Logger
    private let closed = Atomic<Bool>(false)

    /// Opens (creating on first use) the store in `configuration.dataDirectory`, then finishes any shred a
    /// crash interrupted and scrubs key slots and blobs that no record owns.
    public static func open(_ configuration: StoreConfiguration, logger: Logger) throws(CaseVaultError) -> RecordStore {
        let directory = try DataDirectory.prepare(path: configuration.dataDirectory.path)
        let rootKey = try RootKeyFile.loadOrCreate(path: configuration.rootKeyFile.path, dataDirectory: directory.path)
        if !DataDirectory.exists(directory.indexPath) {
            // Created here with 0600 so that SQLite's -wal and -shm files inherit the same mode.
            _ = try FileHandle(path: directory.indexPath, flags: O_WRONLY | O_CREAT, mode: 0o600)
        }
        try DataDirectory.checkPrivateFile(directory.indexPath)
        let index = try Index.open(path: directory.indexPath)
        let slots = try KeySlotFile(path: directory.slotsPath)
        let (allocator, epoch) = try index.read { db in
            let free = try Int64.fetchAll(db, sql: "SELECT slot FROM free_slots ORDER BY slot DESC")
            let highWater = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'slot_high_water'") ?? 0
            return (SlotAllocator(free: free, highWater: highWater), try Index.currentEpoch(db))
        }
        let store = RecordStore(
            configuration: configuration,
            directory: directory,
            index: index,
            slots: slots,
            barrier: Barrier(rootKey: rootKey),
            allocator: allocator,
            epoch: epoch,
            logger: logger
        )
        try store.recover()
        return store
    }

    private init(
        configuration: StoreConfiguration,
        directory: DataDirectory,
        index: Index,
        slots: KeySlotFile,
        barrier: Barrier,
        allocator: SlotAllocator,
        epoch: UInt32,
        logger: Logger
    ) {
        self.configuration = configuration
        self.directory = directory
        self.index = index
        self.slots = slots
        self.blobs = SealedBlobs(directory: directory)
        self.barrier = barrier
        self.validator = RecordValidator(maxContentBytes: configuration.maxContentBytes)
        self.allocator = Mutex(allocator)
        self.epoch = epoch
        self.writes = WriteQueue(maxBatch: configuration.maxBatch)
        self.logger = logger
    }

    /// Marks a clean shutdown, so the next open can skip the scan for orphaned blobs.
    public func close() {
        guard !self.closed.exchange(true, ordering: .relaxed) else { return }
        try? self.writes.exclusive { () throws(CaseVaultError) in
            try self.slots.flushFilesystem()
            _ = try FileHandle(path: self.directory.cleanShutdownMarker, flags: O_WRONLY | O_CREAT, mode: 0o600)
            try DataDirectory.flushDirectory(self.directory.path)
        }
        try? self.index.pool.close()
    }

    func observe(_ point: CrashPoint) {
        self.configuration.crashPointObserver?(point)
    }

    static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }

    // MARK: Put

    final class PendingPut {
        let metadata: RecordMetadata
        let dataKey: SecureBytes

        init(metadata: RecordMetadata, dataKey: SecureBytes) {
            self.metadata = metadata
            self.dataKey = dataKey
        }
    }

    /// Validates, seals and durably files a record. When this returns, the record survives a crash.
    public func put(_ record: NewRecord) throws(CaseVaultError) -> RecordMetadata {
        try self.validator.validate(type: record.type, content: record.content)
        let metadata = RecordMetadata(
            id: RecordID(bytes: Random.bytes(count: RecordID.byteCount)),
            caseID: record.caseID,
            type: record.type,
            createdAt: Self.now(),
            author: record.author,
            supersedes: record.supersedes,
            sealedSize: Barrier.sealedSize(contentSize: record.content.count)
        )
        let dataKey = self.barrier.newDataKey()
        // Sealing and writing the blob happen on the caller's thread, in parallel with other callers;
        // only slot assignment, the flush and the index commit are batched.
        try self.blobs.create(metadata.id, self.barrier.seal(content: record.content, dataKey: dataKey, record: metadata))
        self.observe(.putAfterBlobWrite)
        let result = self.writes.submit(PendingPut(metadata: metadata, dataKey: dataKey), perform: self.commit)
        let stored = try result.get()
        self.logger.debug("record filed", metadata: ["record.id": "\(stored.id)", "case.id": "\(stored.caseID)"])
        return stored
    }

    /// The leader's half of a put batch: wrap each data key into a slot, one filesystem flush for slots and
    /// blobs, one index commit.
    private func commit(_ batch: [PendingPut]) -> [Result<RecordMetadata, CaseVaultError>] {
        let previous = self.allocator.withLock { $0.highWater }
        let assigned = self.allocator.withLock { allocator in batch.map { _ in allocator.take() } }
        do {
            for (put, slot) in zip(batch, assigned) {
                let bytes = try self.barrier.wrap(dataKey: put.dataKey, recordID: put.metadata.id, slot: slot, epoch: self.epoch)
                try self.slots.write(slot, bytes)
            }
            try self.slots.flushFilesystem()
            self.observe(.putAfterSlotFlush)
            let highWater = self.allocator.withLock { $0.highWater }
            try self.index.write { db in
                for (put, slot) in zip(batch, assigned) {
                    let record = put.metadata
                    try db.cachedStatement(sql: """
                            INSERT INTO records (id, case_id, type, state, created_at, author, supersedes, sealed_size, slot)
                            VALUES (?, ?, ?, 'live', ?, ?, ?, ?, ?)
                            """).execute(
                    arguments: [
                            record.id.rawValue, record.caseID.rawValue, record.type.rawValue, record.createdAt,
                            record.author, record.supersedes?.rawValue, record.sealedSize, slot,
                        ]
                    )
                    if slot < previous {
                        try db.cachedStatement(sql: "DELETE FROM free_slots WHERE slot = ?").execute(
                    arguments: [slot])
                    }
                }
                try db.cachedStatement(sql: "UPDATE meta SET value = ? WHERE key = 'slot_high_water'").execute(
                    arguments: [highWater])
            }
            self.observe(.putAfterCommit)
            return batch.map { .success($0.metadata) }
        } catch {
            // Nothing was acknowledged: undo what reached the disk so no orphan key or blob remains.
            for (put, slot) in zip(batch, assigned) {
                try? self.slots.scrub(slot)
                try? self.blobs.overwrite(put.metadata.id)
                try? self.blobs.remove(put.metadata.id)
            }
            try? self.slots.flushFilesystem()
            self.allocator.withLock { $0.giveBack(assigned, previousHighWater: previous) }
            self.logger.error("a batch of puts failed", metadata: ["batch.size": "\(batch.count)", "error.code": "\(error.code.rawValue)"])
            return batch.map { _ in .failure(error) }
        }
    }

    // MARK: Get and list

    /// The record with its decrypted content. Throws `shredded` for a shredded record, `not-found` for an
    /// unknown id, `integrity-failure` when its slot or blob does not authenticate.
    public func get(_ id: RecordID) throws(CaseVaultError) -> CaseVaultCore.Record {
        let row = try self.liveRow(id)
        do throws(CaseVaultError) {
            let slotBytes = try self.slots.read(row.slot)
            let dataKey = try self.barrier.unwrap(slotBytes: slotBytes, recordID: id, slot: row.slot)
            guard let sealed = try self.blobs.read(id) else {
                throw CaseVaultError(
                    .integrityFailure,
                    "the record's sealed content is missing from the data directory; restore it from a backup"
                )
            }
            let content = try self.barrier.open(blob: sealed, dataKey: dataKey, record: row.metadata)
            return CaseVaultCore.Record(metadata: row.metadata, content: content)
        } catch {
            // A shred that ran while we read makes the slot or blob fail; report it as what it is.
            if try self.index.read({ db in try Index.isShredded(db, id: id) || Index.row(db, id: id)?.state == .shredding }) {
                throw Self.shreddedError()
            }
            throw error
        }
    }

    /// The record's metadata, without opening its content.
    public func metadata(_ id: RecordID) throws(CaseVaultError) -> RecordMetadata {
        try self.liveRow(id).metadata
    }

    /// Metadata of every live record of a case, oldest first.
    public func records(caseID: CaseID) throws(CaseVaultError) -> [RecordMetadata] {
        try self.index.read { db in try Index.rows(db, caseID: caseID) }.filter { $0.state == .live }.map(\.metadata)
    }

    /// Whether `id` names a record that was shredded.
    public func isShredded(_ id: RecordID) throws(CaseVaultError) -> Bool {
        try self.index.read { db in try Index.isShredded(db, id: id) }
    }

    func liveRow(_ id: RecordID) throws(CaseVaultError) -> Index.Row {
        let (row, shredded) = try self.index.read { db in
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

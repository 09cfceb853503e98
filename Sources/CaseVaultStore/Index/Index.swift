internal import CCaseVaultSQLite
internal import CaseVaultCore
internal import GRDB
internal import Synchronization

/// The SQLite index: record metadata, slot numbers, the free-slot list, epochs and the shred ledger.
/// It never holds content, wrapped keys, names or disclosure categories.
///
/// WAL mode (GRDB's `DatabasePool`: one writer, concurrent readers; point lookups on connections of their
/// own, `LookupConnections`) with `synchronous=FULL`, so a commit is on disk when it returns (except a batch
/// of puts', `writeUnflushed`, which the segments' frames make durable); `secure_delete` so
/// deleted rows are zeroed rather than left in free pages; `temp_store=MEMORY` so a large sort (a sweep's
/// certificates, its candidates) never spills ids into a temporary file outside the data directory.
struct Index: Sendable {
    let pool: DatabasePool
    /// Connections of their own for point lookups (`lookup`).
    let lookups: LookupConnections
    /// The writer connection's `synchronous` setting, set again only when a commit needs the other one.
    let synchronous = WriterSynchronous()
    /// Set once the index may have lost commits the disk refused (`Loss`): nothing uses it again.
    let loss: Loss
    /// The WAL's checkpoints, off the writer (`Checkpoints`).
    let checkpoints: Checkpoints
    /// What gets asked of records' cases and of the roster (`CaseAnswers`): shut while the writer runs.
    let caseAnswers = CaseAnswers()

    /// Whether the index may have lost commits the disk refused. A flush that failed (or a write, or a page that reads
    /// back malformed) means the kernel may have marked pages of the WAL clean that never reached the disk, or dropped
    /// them: SQLite's checksums end the log at the first such frame when it is read again from the disk, taking every
    /// later commit with it, and a later flush of the file succeeds all the same (Linux reports a writeback error once:
    /// PostgreSQL's "fsyncgate"). So after the first such error nothing is read or committed again in this process (the
    /// daemon stops, `IndexLossWatch`); the next open reads the WAL from the disk, and recovery adds again the rows of
    /// puts from their segment frames (`replayUnsettledFrames`). PostgreSQL makes the same choice (it panics). Two of
    /// SQLite's own habits would hide or spread such a loss, and are changed at open (`prepareDatabase`): its automatic
    /// checkpoint drops a failed flush's error (ours, off the writer, keeps it and marks the loss at once, and a
    /// flushed commit waits for a checkpoint in flight before it is answered: `Checkpoints`), and its checkpoint when
    /// the last connection closes would copy into the database, through the page cache, what the disk may have lost
    /// (turned off: `close` truncates the WAL itself first, `truncateWAL`).
    final class Loss: Sendable {
        private let lost = Atomic<Bool>(false)

        var happened: Bool { self.lost.load(ordering: .acquiring) }

        /// Whether `error` is `Loss.error` (a store that could not open, or not be admitted, for it).
        static func isLoss(_ error: CaseVaultError) -> Bool {
            error.code == Self.error.code && error.message == Self.error.message
        }

        /// The error every call gets once the index lost commits; stable, for the daemon to stop on.
        static let error = CaseVaultError(
            .storageFailure,
            "the disk refused a write of the index; restart casevaultd: its start rebuilds the index from the segments"
        )

        /// Whether `error`, met on the writer (`onWriter`) or by a reader, means commits may be lost: a failed
        /// flush, write or read of the files on the writer (not the shared memory's or a lock's, nor a full
        /// disk, after which nothing was written), and a malformed page anywhere.
        static func means(_ error: any Error, onWriter: Bool) -> Bool {
            guard let error = error as? DatabaseError else { return false }
            return Self.means(code: error.extendedResultCode.rawValue, onWriter: onWriter)
        }

        /// `means(_:onWriter:)` of an extended result code.
        static func means(code: Int32, onWriter: Bool) -> Bool {
            switch ResultCode(rawValue: code).primaryResultCode {
            case .SQLITE_CORRUPT, .SQLITE_NOTADB: true
            case .SQLITE_IOERR: onWriter && Self.losing.contains(code)
            default: false
            }
        }

        /// The I/O errors after which the WAL may lack what a commit wrote (an error SQLite does not name is
        /// counted among them).
        static let losing: Set<Int32> = Set(
            [
                ResultCode.SQLITE_IOERR, .SQLITE_IOERR_FSYNC, .SQLITE_IOERR_DIR_FSYNC, .SQLITE_IOERR_WRITE,
                .SQLITE_IOERR_READ, .SQLITE_IOERR_SHORT_READ, .SQLITE_IOERR_DATA, .SQLITE_IOERR_CORRUPTFS,
            ].map(\.rawValue))

        func record() {
            self.lost.store(true, ordering: .releasing)
        }
    }

    /// What `PRAGMA synchronous` the writer connection is at: nil when unknown (a change that failed).
    final class WriterSynchronous: Sendable {
        private let flushed = Mutex<Bool?>(true)

        /// Sets the writer to FULL (`flushed`) or NORMAL unless it is there already; called by the writer.
        func set(flushed: Bool, on db: Database) throws {
            guard self.flushed.withLock({ $0 }) != flushed else { return }
            self.flushed.withLock { $0 = nil }
            try db.execute(sql: flushed ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL")
            self.flushed.withLock { $0 = flushed }
        }
    }

    enum State: String {
        case live
        case shredding
    }

    struct Row {
        var metadata: RecordMetadata
        var state: State
        var slot: Int64
        var location: Segments.Location
        /// The row's place in `records` (its rowid): statements over many rows name them by it, not by id.
        var seq: Int64
        /// Where the record's segment frame begins (`SegmentFrame`), before its blob; nil for a record
        /// filed before index v11, whose blob stands alone. A restore copies it with the backup's index
        /// and writes the blob alone: the head's bytes are zeros there.
        var frameStart: Int64?

        /// Whether the record's frame begins at or past `mark` (the settled mark): recovery may replay it.
        /// A record from before frames (no `frameStart`) was filed before any mark.
        func isFiled(atOrPast mark: Segments.Cursor) -> Bool {
            guard let frameStart else { return false }
            return Segments.Cursor(segment: self.location.segment, end: frameStart) >= mark
        }

        /// The bytes a shred overwrites: the whole frame, or the blob alone when there is none.
        var region: Segments.Location {
            guard let frameStart else { return self.location }
            return Segments.Location(
                segment: self.location.segment, offset: frameStart,
                length: self.location.length + Int(self.location.offset - frameStart))
        }
    }

    /// The columns `decode` reads, in its order.
    static let columns =
        "id, case_id, type, state, created_at, author, supersedes, sealed_size, slot, segment, offset, seq, frame_start"

    /// Opens the index at `path`; a commit that leaves `checkpointFrames` frames or more in the WAL asks for
    /// a checkpoint (`Checkpoints`), which calls `checkpointObserver` (a test's) before it ends.
    static func open(
        path: String, checkpointFrames: Int32, checkpointObserver: (@Sendable () -> Void)? = nil
    ) throws(CaseVaultError) -> Index {
        let loss = Loss()
        let checkpoints = Checkpoints(frames: checkpointFrames, loss: loss, observer: checkpointObserver)
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;")
            if !db.configuration.readonly {
                // The writer's page cache: SQLite's default of 2 MiB makes a sweep's batch of deletes re-read
                // the index's pages from the kernel for every row once the vault has a few thousand records.
                try db.execute(sql: "PRAGMA cache_size = -65536")
                // `Loss`: checkpoints run off the writer (`Checkpoints`), and none when the connection closes.
                try Self.turnOffCheckpointAtClose(db)
                guard let connection = db.sqliteConnection else {
                    throw CaseVaultError(.storageFailure, "the index's writer has no connection")
                }
                checkpoints.install(on: connection)
            }
        }
        configuration.busyMode = .timeout(10)
        do {
            let pool = try DatabasePool(path: path, configuration: configuration)
            // GRDB's pool turns WAL on after `prepareDatabase` and sets its writer to synchronous=NORMAL
            // there, under which a commit is durable only at the next checkpoint: a power cut lost the index
            // rows of acknowledged puts (found by the power-cut test; SIGKILL keeps the page cache and never
            // showed it). FULL again on the writer, and checked.
            let level = try pool.writeWithoutTransaction { db -> Int in
                try db.execute(sql: "PRAGMA synchronous = FULL")
                return try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? 0
            }
            guard level == 2 else {
                throw CaseVaultError(
                    .storageFailure,
                    "the index cannot be made to flush every commit (PRAGMA synchronous is \(level), not FULL)")
            }
            // Certifying takes rows off with `DELETE … RETURNING` (SQLite 3.35): an older SQLite is refused at
            // open, not found out at a sweep's end.
            let version = try pool.read { db in try String.fetchOne(db, sql: "SELECT sqlite_version()") } ?? ""
            guard Self.isAtLeast(version, 3, 35) else {
                throw CaseVaultError(
                    .storageFailure, "the index needs SQLite 3.35 or later; this system's SQLite is \(version)")
            }
            // An index a later CaseVault migrated is refused, not used by rules it does not know (since v11 a
            // build from before would leave frames' heads behind at shred, and ignore frames at open).
            guard try !pool.read({ db in try Self.migrator.hasBeenSuperseded(db) }) else {
                throw CaseVaultError(
                    .storageFailure,
                    "the index was written by a later version of CaseVault; run that version (a data directory cannot be moved back)"
                )
            }
            try Self.migrator.migrate(pool)
            // A new index turns WAL on with its first write. A flush that failed there left SQLite in its
            // rollback journal (found by the failing-disk test), whose deleted journal a power cut can bring
            // back and play over later commits: refused, so that the next start turns WAL on again.
            let mode = try pool.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") } ?? ""
            guard mode == "wal" else {
                throw CaseVaultError(
                    .storageFailure,
                    "the index did not turn its write-ahead log on (journal mode \(mode)); check the disk and start again"
                )
            }
            try checkpoints.start(path: path)
            let index = Index(pool: pool, lookups: LookupConnections(path: path), loss: loss, checkpoints: checkpoints)
            // A WAL that a crash left behind may hold page images of rows shredded before it.
            try index.truncateWAL()
            return index
        } catch let error as CaseVaultError {
            checkpoints.close()
            throw error
        } catch {
            checkpoints.close()
            throw Self.failure(error)
        }
    }

    /// Turns off the checkpoint SQLite runs when the last connection closes (`Loss`), on the writer and on
    /// the checkpoints' connection.
    static func turnOffCheckpointAtClose(_ db: Database) throws {
        guard let connection = db.sqliteConnection,
            casevault_sqlite_no_checkpoint_on_close(UnsafeMutableRawPointer(connection)) == 0
        else {
            throw CaseVaultError(.storageFailure, "the index's checkpoint at close could not be turned off")
        }
    }

    static func caseSummary(_ db: Database, id: CaseID) throws -> CaseSummary? {
        let rows = try GRDB.Row.fetchCursor(
            db.cachedStatement(sql: "SELECT state, participant_count, created_at, closed_at FROM cases WHERE id = ?"),
            arguments: [id.rawValue])
        guard let found = try rows.next() else { return nil }
        let row = (
            state: try found.decode(atIndex: 0) as String, participants: try found.decode(atIndex: 1) as Int,
            created: try found.decode(atIndex: 2) as Int64,
            closed: try found.decode(atIndex: 3) as Int64?
        )
        // Mediators and supervisors in one statement: a get and a filing ask this of every case they touch.
        var (mediators, supervisors): ([UInt32], [UInt32]) = ([], [])
        let assigned = try GRDB.Row.fetchCursor(
            db.cachedStatement(
                sql: """
                    SELECT uid, 0 FROM case_mediators WHERE case_id = ?
                    UNION ALL SELECT uid, 1 FROM case_supervisors WHERE case_id = ? ORDER BY 1
                    """),
            arguments: [id.rawValue, id.rawValue])
        while let row = try assigned.next() {
            if try row.decode(atIndex: 1) as Int == 0 {
                mediators.append(try row.decode(atIndex: 0))
            } else {
                supervisors.append(try row.decode(atIndex: 0))
            }
        }
        guard let state = CaseState(rawValue: row.state) else {
            throw CaseVaultError(.storageFailure, "the index holds a case in an unknown state")
        }
        return CaseSummary(
            id: id, state: state, participantCount: row.participants, mediators: mediators,
            supervisors: supervisors, createdAt: row.created, closedAt: row.closed
        )
    }

    static func failure(_ error: any Error) -> CaseVaultError {
        // GRDB's DatabaseError describes the SQL and the SQLite code; it never contains content
        // because the index holds none.
        CaseVaultError(
            .storageFailure,
            "the index failed: \(error); check free space and the data directory",
            cause: error
        )
    }

    func read<T>(_ body: (Database) throws -> T) throws(CaseVaultError) -> T {
        try self.mappingErrors(onWriter: false) { try self.pool.read(body) }
    }

    /// A read without a transaction, for a single point lookup: one statement is atomic on its own, and
    /// skipping BEGIN/COMMIT makes a get cheaper. On a connection of its own, outside GRDB's pool.
    func lookup<T>(_ body: (Database) throws -> T) throws(CaseVaultError) -> T {
        try self.mappingErrors(onWriter: false) { try self.lookups.read(body) ?? self.pool.unsafeRead(body) }
    }

    /// Closes the checkpoints' connection once a checkpoint in flight is done, the lookups' connections and
    /// the pool (no checkpoint: `Loss`).
    func close() throws {
        self.checkpoints.close()
        self.caseAnswers.close()
        self.lookups.close()
        try self.pool.close()
    }

    /// A transaction whose commit is on disk when it returns (`synchronous=FULL`).
    func write<T>(_ body: (Database) throws -> T) throws(CaseVaultError) -> T {
        try self.commit(flushed: true, body)
    }

    /// `write`, for a commit that changes no case and not the roster (the audit anchor's, every second
    /// while requests come): what gets asked of cases stays kept across it (`CaseAnswers`).
    func writeBesideCases<T>(_ body: (Database) throws -> T) throws(CaseVaultError) -> T {
        try self.commit(flushed: true, changingCases: false, body)
    }

    /// A transaction committed without a flush (`synchronous=NORMAL`): visible at once, durable with the
    /// next flushed commit or checkpoint, or lost with a power cut before them. Only for rows that recovery
    /// rebuilds from the segments' frames (a batch of puts without filing effects). It changes no case and
    /// not the roster (a batch whose filings carry effects settles, with `write`): what gets asked of cases
    /// stays kept across it (`CaseAnswers`).
    func writeUnflushed<T>(_ body: (Database) throws -> T) throws(CaseVaultError) -> T {
        try self.commit(flushed: false, changingCases: false, body)
    }

    /// One transaction on the writer, with `synchronous` set for it first when it is not already so: a
    /// run of put batches sets NORMAL once, and the first flushed commit after them FULL again.
    private func commit<T>(
        flushed: Bool, changingCases: Bool = true, _ body: (Database) throws -> T
    ) throws(CaseVaultError) -> T {
        try self.onWriter(changingCases: changingCases, flushed: flushed) { db in
            try self.synchronous.set(flushed: flushed, on: db)
            var result: T?
            try db.inTransaction {
                result = try body(db)
                return .commit
            }
            return result!
        }
    }

    /// Copies the WAL into the database and truncates it to zero bytes, so that no page image of a
    /// shredded row lives on in it (`secure_delete` zeroes the database's own pages, not the WAL's
    /// frames). Readers that began before it are waited for (the busy timeout); readers after it read the
    /// database file alone.
    func truncateWAL() throws(CaseVaultError) {
        _ = try self.onWriter { db in try self.checkpoints.exclusively { try db.checkpoint(.truncate) } }
    }

    /// Copies the WAL into the database off the writer, while commits go on, before the caller takes the
    /// writer to truncate it (`truncateWAL`): the truncation, which every put waits for, then copies only
    /// what came since.
    func checkpointBeforeTruncating() {
        self.checkpoints.runNow()
    }

    /// One access of the writer, where a loss is checked and recorded (`Loss`), so that a write queued behind
    /// the one that met it does not commit: first the loss recorded since the last access (by the writer or
    /// a checkpoint), then `body`'s error; then, unless the access was a commit without a flush
    /// (`flushed`), the loss a checkpoint in flight meets, which may have taken a failure of the WAL's
    /// write-back that this access's flush was not told of (`Checkpoints`). A checkpoint that the access's
    /// commit made due is asked for last. What requests keep of cases is shut meanwhile (`CaseAnswers`),
    /// unless the caller says it changes no case.
    private func onWriter<T>(
        changingCases: Bool = true, flushed: Bool = true, _ body: (Database) throws -> T
    ) throws(CaseVaultError) -> T {
        guard changingCases else { return try self.onWriterAlone(flushed: flushed, body) }
        return try self.caseAnswers.changing { () throws(CaseVaultError) -> T in
            try self.onWriterAlone(flushed: flushed, body)
        }
    }

    private func onWriterAlone<T>(flushed: Bool, _ body: (Database) throws -> T) throws(CaseVaultError) -> T {
        try self.mappingErrors(onWriter: true) {
            try self.pool.writeWithoutTransaction { db in
                guard !self.loss.happened else { throw Loss.error }
                defer { self.checkpoints.afterWriterAccess(db) }
                do {
                    let result = try body(db)
                    if flushed {
                        self.checkpoints.awaitIdle()
                        guard !self.loss.happened else { throw Loss.error }
                    }
                    return result
                } catch {
                    if Loss.means(error, onWriter: true) { self.loss.record() }
                    throw error
                }
            }
        }
    }

    /// Copies the index as it stands into a new database file at `path` (`VACUUM INTO`), read on a reader: a
    /// malformed page met there is a loss (`Loss`); a failed write of the copy is not.
    func snapshotInto(_ path: String) throws(CaseVaultError) {
        try self.mappingErrors(onWriter: false) {
            try self.pool.unsafeRead { db in try db.execute(sql: "VACUUM INTO ?", arguments: [path]) }
        }
    }

    /// Runs `body` unless the index lost commits, and records a loss its error means (`Loss`).
    private func mappingErrors<T>(onWriter: Bool, _ body: () throws -> T) throws(CaseVaultError) -> T {
        guard !self.loss.happened else { throw Loss.error }
        do {
            return try body()
        } catch let error as CaseVaultError {
            throw error
        } catch {
            guard Loss.means(error, onWriter: onWriter) else { throw Self.failure(error) }
            self.loss.record()
            throw CaseVaultError(Loss.error.code, Loss.error.message, cause: error)
        }
    }

    // MARK: Queries

    /// Record `id`'s row, in any connection and transaction (a get's point lookup is `lookupRow`).
    static func row(_ db: Database, id: RecordID) throws -> Row? {
        // A cursor's row reads its columns from the statement where they lie; `fetchOne` would copy every
        // one into a row of its own first.
        let rows = try GRDB.Row.fetchCursor(
            db.cachedStatement(sql: "SELECT \(Self.columns) FROM records WHERE id = ?"), arguments: [id.rawValue])
        guard let row = try rows.next() else { return nil }
        return try Self.decode(row)
    }

    static func rows(_ db: Database, caseID: CaseID) throws -> [Row] {
        try GRDB.Row.fetchAll(
            db,
            sql: "SELECT \(Self.columns) FROM records WHERE case_id = ? ORDER BY seq",
            arguments: [caseID.rawValue]
        ).map(Self.decode)
    }

    /// Whether the dotted version `version` ("3.40.1") is `major.minor` or later.
    static func isAtLeast(_ version: String, _ major: Int, _ minor: Int) -> Bool {
        let parts = version.split(separator: ".").map { Int($0) ?? 0 }
        guard parts.count >= 2 else { return false }
        return (parts[0], parts[1]) >= (major, minor)
    }

    /// Runs `body` once per chunk of at most `chunkSize` ids, with the chunk's `?, ?, …` placeholders:
    /// set-based statements cost far less per row than one statement per id.
    static func inChunks(
        _ ids: [some DatabaseValueConvertible], _ body: (String, StatementArguments) throws -> Void
    ) throws {
        var start = 0
        while start < ids.count {
            let chunk = Array(ids[start..<min(start + Self.chunkSize, ids.count)])
            start += chunk.count
            let placeholders =
                chunk.count == Self.chunkSize
                ? Self.fullChunk : Array(repeating: "?", count: chunk.count).joined(separator: ",")
            try body(placeholders, StatementArguments(chunk))
        }
    }

    static let chunkSize = 500
    private static let fullChunk = Array(repeating: "?", count: chunkSize).joined(separator: ",")

    /// The statement `sql`, whose `IN (…)` list is the `placeholders` of an `inChunks` chunk: prepared once
    /// and kept for a full chunk (a sweep runs the same few statements on hundreds of full chunks, and
    /// preparing them each time cost about a tenth of its removal from the index), prepared for this once
    /// otherwise, so that the connection's cache keeps one statement per text and not one per chunk size.
    static func statement(_ db: Database, inChunk placeholders: String, _ sql: String) throws -> Statement {
        placeholders.utf8.count == Self.fullChunk.utf8.count
            ? try db.cachedStatement(sql: sql) : try db.makeStatement(sql: sql)
    }

    /// Those of `slots` that a record in the index owns (live or `shredding`). The free list and the
    /// high-water mark say which slots are unowned; this asks the records themselves, through the
    /// `UNIQUE` index on `records.slot`, so that a free list the index disagrees with never costs a key.
    static func ownedSlots(_ db: Database, among slots: some Collection<Int64>) throws -> Set<Int64> {
        var owned: Set<Int64> = []
        var rest = slots[...]
        while !rest.isEmpty {
            let chunk = rest.prefix(500)
            rest = rest.dropFirst(chunk.count)
            let placeholders = Array(repeating: "?", count: chunk.count).joined(separator: ",")
            // Cached: a put batch asks once per batch, with a batch's few sizes.
            let statement = try db.cachedStatement(sql: "SELECT slot FROM records WHERE slot IN (\(placeholders))")
            owned.formUnion(try Int64.fetchAll(statement, arguments: StatementArguments(Array(chunk))))
        }
        return owned
    }

    /// Takes `slots` off the free list (a put now owns them, or a record was found owning them).
    static func takeOffFreeList(_ db: Database, _ slots: some Sequence<Int64>) throws {
        let statement = try db.cachedStatement(sql: "DELETE FROM free_slots WHERE slot = ?")
        for slot in slots {
            try statement.execute(arguments: [slot])
        }
    }

    /// The writer's state as the index records it: the free list, the high-water mark and the segment cursor.
    static func writerState(_ db: Database) throws -> RecordStore.WriterState {
        guard let segment = UInt32(exactly: try Self.meta(db, "segment_current")) else {
            throw CaseVaultError(.storageFailure, "the index's segment cursor is out of range")
        }
        return RecordStore.WriterState(
            slots: SlotAllocator(
                free: try Int64.fetchAll(db, sql: "SELECT slot FROM free_slots ORDER BY slot DESC"),
                highWater: try Self.meta(db, "slot_high_water")
            ),
            cursor: Segments.Cursor(segment: segment, end: try Self.meta(db, "segment_end")),
            settled: Segments.Cursor(
                segment: UInt32(clamping: try Self.meta(db, "settled_segment")), end: try Self.meta(db, "settled_end"))
        )
    }

    /// The rows of `ids` that exist, by id.
    static func rows(_ db: Database, ids: [String]) throws -> [String: Row] {
        Dictionary(try Self.rows(db, column: "id", ids).map { ($0.metadata.id.rawValue, $0) }) { first, _ in first }
    }

    /// The rows at the rowids `seqs` that exist, by rowid. A rowid is reused once its row is deleted: the
    /// caller checks each row is the record it listed.
    static func rows(_ db: Database, seqs: [Int64]) throws -> [Int64: Row] {
        Dictionary(try Self.rows(db, column: "seq", seqs).map { ($0.seq, $0) }) { first, _ in first }
    }

    private static func rows(_ db: Database, column: String, _ keys: [some DatabaseValueConvertible]) throws -> [Row] {
        var rows: [Row] = []
        try Self.inChunks(keys) { placeholders, arguments in
            let found = try GRDB.Row.fetchCursor(
                Self.statement(
                    db, inChunk: placeholders,
                    "SELECT \(Self.columns) FROM records WHERE \(column) IN (\(placeholders))"),
                arguments: arguments)
            while let row = try found.next() { rows.append(try Self.decode(row)) }
        }
        return rows
    }

    static func isShredded(_ db: Database, id: RecordID) throws -> Bool {
        try Bool.fetchOne(
            db.cachedStatement(sql: "SELECT 1 FROM shred_ledger WHERE record_id = ?"),
            arguments: [id.rawValue]
        ) ?? false
    }

    static func decode(_ row: GRDB.Row) throws -> Row {
        do {
            // By position: name lookups are case-insensitive and cost a lowercased string per column.
            return try Self.row(
                id: try row.decode(atIndex: 0), caseID: try row.decode(atIndex: 1), type: try row.decode(atIndex: 2),
                state: try row.decode(atIndex: 3), createdAt: try row.decode(atIndex: 4),
                author: try row.decode(atIndex: 5), supersedes: try row.decode(atIndex: 6),
                sealedSize: try row.decode(atIndex: 7), slot: try row.decode(atIndex: 8),
                segment: try row.decode(atIndex: 9), offset: try row.decode(atIndex: 10),
                seq: try row.decode(atIndex: 11), frameStart: try row.decode(atIndex: 12))
        } catch {
            throw Self.malformedRow(cause: error)
        }
    }

    /// A record row from the values of `Index.columns`, each checked: both decoders (`decode(_:)` and the
    /// point lookup's) end here.
    static func row(
        id: String, caseID: String, type: String, state: String, createdAt: Int64, author: String?,
        supersedes: String?, sealedSize: Int, slot: Int64, segment: UInt32, offset: Int64, seq: Int64,
        frameStart: Int64?
    ) throws(CaseVaultError) -> Row {
        guard let type = RecordType(rawValue: type), let state = State(rawValue: state) else {
            throw Self.malformedRow()
        }
        // A length or offset no put writes is damage, and would otherwise reach a read's allocation.
        guard offset >= 0, sealedSize > 0, sealedSize <= Int(Int32.max),
            frameStart.map({ (0..<offset).contains($0) }) ?? true
        else { throw Self.malformedRow() }
        let metadata = RecordMetadata(
            id: try RecordID(id),
            caseID: try CaseID(caseID),
            type: type,
            createdAt: createdAt,
            author: author,
            supersedes: try supersedes.map { text throws(CaseVaultError) in try RecordID(text) },
            sealedSize: sealedSize
        )
        let location = Segments.Location(segment: segment, offset: offset, length: sealedSize)
        return Row(metadata: metadata, state: state, slot: slot, location: location, seq: seq, frameStart: frameStart)
    }

    /// A record row that does not decode.
    static func malformedRow(cause: (any Error & Sendable)? = nil) -> CaseVaultError {
        CaseVaultError(
            .storageFailure, "the index holds a malformed record row; restore the data directory from a backup",
            cause: cause)
    }

    static func meta(_ db: Database, _ key: String) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT value FROM meta WHERE key = ?"), arguments: [key]) ?? 0
    }

    static func setMeta(_ db: Database, _ key: String, _ value: Int64) throws {
        try db.cachedStatement(sql: "UPDATE meta SET value = ? WHERE key = ?").execute(arguments: [value, key])
    }

    static func currentEpoch(_ db: Database) throws -> UInt32 {
        try UInt32.fetchOne(db, sql: "SELECT max(epoch) FROM epochs WHERE retired_at IS NULL") ?? 1
    }
}

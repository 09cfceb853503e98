package import CaseVaultCore
package import CaseVaultSealing
package import Logging
package import PostgresNIO

/// Records on PostgreSQL as the storage sees them: ids, the case, the type, the time, the erase epoch the
/// record's data key is wrapped under, the wrapped key and the sealed blob. Never a key in the clear and
/// never content: a data key is wrapped and rewrapped inside the sealing layer (`EpochKey`), and a blob is
/// sealed there.
///
/// What keeps a shred's promise here is the epochs' schedule (docs/ARCHITECTURE.md, "The vault on
/// PostgreSQL"): a shred deletes the row at once, and what PostgreSQL keeps of it (dead tuples, the WAL,
/// standbys, archives, base backups) holds the data key wrapped under an epoch whose key every daemon
/// destroys once no live record is wrapped under it. Two rules make "no live record is wrapped under it"
/// hold for good once `wrappedBelow` says so:
///
/// - a record is filed only under the epoch new wraps use, checked by the insert itself
///   (`insertUnderWrapEpoch`) in the filing's transaction: a filer that read the epoch before a turn is
///   refused and wraps again, and
///   no record is filed under an epoch turned to while a copy of its key sealed at the turn still waits to
///   be received (`ready_at`);
/// - filings hold a shared advisory lock for their transaction, and `wrappedBelow` takes it exclusively, so
///   that its count waits for every filing under way: once it has counted none, every later filing sees
///   the newer epoch ready and is refused under the older one.
///
/// Both rest on each statement seeing what committed before it began, so these transactions run at READ
/// COMMITTED whatever the database's default (`PostgresConnection.transaction`; at REPEATABLE READ,
/// `wrappedBelow`'s snapshot would be taken before its lock waited out a filing, and miss it). Advisory
/// locks belong to a session: each caller needs its connection to itself while a call runs.
package struct PostgresRecords: Sendable {
    /// The advisory lock filings share and `wrappedBelow` takes alone (`CVRECORD` in ASCII).
    package static let filingLock: Int64 = 0x4356_5245_434F_5244

    /// How many records one transaction of `rewrap` rewraps.
    package static let rewrapBatch = 500

    let logger: Logger

    package init(logger: Logger) {
        self.logger = logger
    }

    /// A record's row: what the storage keeps of it.
    package struct Row: Sendable, Equatable {
        package var id: RecordID
        package var caseID: CaseID
        package var type: RecordType
        package var createdAt: Int64
        /// The erase epoch `wrappedKey` is wrapped under.
        package var epoch: UInt64
        package var wrappedKey: [UInt8]
        package var blob: [UInt8]
        /// Who filed it: a role or a uid, never a name (`RecordMetadata.author`).
        package var author: String?
        package var supersedes: RecordID?

        package init(
            id: RecordID, caseID: CaseID, type: RecordType, createdAt: Int64, epoch: UInt64, wrappedKey: [UInt8],
            blob: [UInt8], author: String? = nil, supersedes: RecordID? = nil
        ) {
            self.id = id
            self.caseID = caseID
            self.type = type
            self.createdAt = createdAt
            self.epoch = epoch
            self.wrappedKey = wrappedKey
            self.blob = blob
            self.author = author
            self.supersedes = supersedes
        }

        /// What a reader is told of the record, without its key or blob.
        package var metadata: RecordMetadata {
            RecordMetadata(
                id: self.id, caseID: self.caseID, type: self.type, createdAt: self.createdAt, author: self.author,
                supersedes: self.supersedes, sealedSize: self.blob.count)
        }
    }

    /// Files `row`, durable when this returns (the server's `synchronous_commit`). `key-unavailable`, filing
    /// nothing, when `row.epoch` is not the epoch new wraps use (a turn came in between: wrap again under
    /// that epoch) or when no epoch is ready yet.
    package func insert(_ row: Row, on connection: PostgresConnection) async throws {
        let filed = try await connection.transaction(logger: self.logger) { connection -> Bool in
            try await self.shareFilingLock(on: connection)
            return try await self.insertUnderWrapEpoch(row, on: connection)
        }
        guard filed else {
            throw CaseVaultError(
                .keyUnavailable,
                "the record's key is wrapped under erase epoch \(row.epoch), not the one new wraps use (or none is ready yet): wrap it again"
            )
        }
    }

    /// Takes the lock filings share until the end of the caller's transaction (`shareFilingLock`) and reads
    /// the epoch new wraps use (`nil` while none is ready), in one statement. The epoch is read in the
    /// statement's snapshot, which may be older than the lock's grant: an epoch turned while the lock was
    /// awaited is missed, and the insert's own check (`insertUnderWrapEpoch`), a later statement that sees
    /// the turn, files nothing under the stale epoch.
    func shareFilingLockReadingWrapEpoch(on connection: PostgresConnection) async throws -> UInt64? {
        let statement = Prepared.FilingLockAndWrapEpoch(filingLock: Self.filingLock)
        let epoch = try await connection.rows(statement, logger: self.logger).first ?? nil
        return epoch.map { UInt64($0) }
    }

    /// Takes the lock filings share, until the end of the caller's transaction, before it files records
    /// (`insert`; a filing of the storage's takes it with the epoch: `shareFilingLockReadingWrapEpoch`).
    func shareFilingLock(on connection: PostgresConnection) async throws {
        try await connection.perform("SELECT pg_advisory_xact_lock_shared(\(Self.filingLock))", logger: self.logger)
    }

    /// Takes the lock filings share, until the end of the caller's transaction, then refuses with
    /// `vault-moved`, having written nothing, when a move out of the database marked the vault: what every
    /// write of the vault's rows but a filing's and a hold's does first in its transaction (their inserts
    /// read the mark themselves: `insertUnderWrapEpoch`). A move holds the filing lock alone from before its
    /// copy to after its mark, so a write either commits before the copy, which keeps it, or reads the mark
    /// in a statement after the lock's grant. A daemon whose session a failover ended serves until its next
    /// step, and a shred, a closing or a hold's release it made after a move would otherwise be kept only in
    /// the copy the move left behind, while the record lives on in the vault moved.
    ///
    /// A restore holds the lock alone for as long as its upload runs: the wait, and every later lock of the
    /// transaction, is bounded by `writeLockLimit` (`lock_timeout`, for the transaction alone), after which
    /// the write fails with `storage-unavailable` (`PostgresStorage.lockTimedOut`) rather than hold a thread
    /// of the server's blocking pool, and a connection, until the restore ends.
    static func shareFilingLockUnlessMoved(on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.perform("SET LOCAL lock_timeout = '\(unescaped: Self.writeLockLimit)'", logger: logger)
        try await connection.perform("SELECT pg_advisory_xact_lock_shared(\(Self.filingLock))", logger: logger)
        try await PostgresSchema.refuseMoved(on: connection, logger: logger)
    }

    /// How long a write waits for the filing lock and the locks after it (`shareFilingLockUnlessMoved`), as
    /// PostgreSQL's `lock_timeout` reads it: as long as a statement of a case's lock may take
    /// (`PostgresStorage.caseStatementLimit`).
    static let writeLockLimit = "30s"

    /// `shareFilingLockUnlessMoved` without waiting: nothing when the lock is held alone (a restore, a move,
    /// a count of `wrappedBelow`) or asked for alone (PostgreSQL grants no shared lock ahead of a request
    /// already waiting); returns whether it took the lock.
    static func tryShareFilingLockUnlessMoved(on connection: PostgresConnection, logger: Logger) async throws
        -> Bool
    {
        var taken = false
        for try await granted in try await connection.query(
            "SELECT pg_try_advisory_xact_lock_shared(\(Self.filingLock))", logger: logger
        ).decode(Bool.self) {
            taken = granted
        }
        guard taken else { return false }
        try await PostgresSchema.refuseMoved(on: connection, logger: logger)
        return true
    }

    /// Inserts `row` when `row.epoch` is the epoch new wraps use, in the caller's transaction, which holds
    /// the shared filing lock (`shareFilingLock`); returns whether it did. `vault-moved` when a move out of
    /// the database marked the vault, files nothing: a filing that waited for the filing lock behind the
    /// move (a daemon whose session a failover ended, while the move held its name) would otherwise land in
    /// the copy the move left.
    func insertUnderWrapEpoch(_ row: Row, on connection: PostgresConnection) async throws -> Bool {
        let count = try await connection.rows(Prepared.InsertRecord(row: row), logger: self.logger).count
        if count == 0 { try await PostgresSchema.refuseMoved(on: connection, logger: self.logger) }
        return count == 1
    }

    /// The row of `id`, or `nil` when no live record has it.
    package func row(_ id: RecordID, on connection: PostgresConnection) async throws -> Row? {
        let rows = try await connection.query(
            """
            SELECT case_id, type, created_at, epoch, wrapped_key, blob, author, supersedes
            FROM casevault_records WHERE id = \(ByteBuffer(bytes: id.bytes))
            """, logger: self.logger)
        for try await columns in rows.decode(Columns.self) {
            return try Self.row(id, columns)
        }
        return nil
    }

    /// A record's row as a query reads it: `case_id, type, created_at, epoch, wrapped_key, blob, author,
    /// supersedes`.
    typealias Columns = (ByteBuffer, String, Int64, Int64, ByteBuffer, ByteBuffer, String?, ByteBuffer?)

    /// The row of `id` from its columns; `integrity-failure` when they are malformed.
    static func row(_ id: RecordID, _ columns: Columns) throws(CaseVaultError) -> Row {
        let (caseID, type, createdAt, epoch, wrapped, blob, author, supersedes) = columns
        guard caseID.readableBytes == CaseID.byteCount, let type = RecordType(rawValue: type), epoch > 0,
            supersedes.map({ $0.readableBytes == RecordID.byteCount }) ?? true
        else {
            throw CaseVaultError(.integrityFailure, "a record's row in the database is malformed")
        }
        return Row(
            id: id, caseID: CaseID(bytes: Array(caseID.readableBytesView)), type: type, createdAt: createdAt,
            epoch: UInt64(epoch), wrappedKey: Array(wrapped.readableBytesView), blob: Array(blob.readableBytesView),
            author: author, supersedes: supersedes.map { RecordID(bytes: Array($0.readableBytesView)) })
    }

    /// Deletes `id`'s row (a shred's first step here: the record is gone for every reader from this commit
    /// on); returns whether there was one. Its residue opens for no one once its epoch is destroyed.
    package func delete(_ id: RecordID, on connection: PostgresConnection) async throws -> Bool {
        let deleted = try await connection.query(
            "DELETE FROM casevault_records WHERE id = \(ByteBuffer(bytes: id.bytes)) RETURNING 1", logger: self.logger)
        var count = 0
        for try await _ in deleted.decode(Int32.self) { count += 1 }
        return count == 1
    }

    /// Whether any live record's key is wrapped under an epoch older than `epoch`: what must be false before
    /// a daemon destroys those epochs (`EpochSchedule`). Waits for the filings under way (`filingLock`).
    package func wrappedBelow(_ epoch: UInt64, on connection: PostgresConnection) async throws -> Bool {
        try await connection.transaction(logger: self.logger) { connection -> Bool in
            try await connection.perform("SELECT pg_advisory_xact_lock(\(Self.filingLock))", logger: self.logger)
            let rows = try await connection.query(
                """
                SELECT EXISTS (SELECT 1 FROM casevault_records WHERE epoch < \(Int64(epoch)))
                    OR EXISTS (SELECT 1 FROM casevault_holds WHERE epoch < \(Int64(epoch)))
                """, logger: self.logger)
            var exists = true
            for try await found in rows.decode(Bool.self) { exists = found }
            return exists
        }
    }

    /// What a turn rewraps: records' data keys, and legal holds' reason keys (each wrap bound to its own
    /// kind of id).
    enum Wrapped: CaseIterable {
        case records
        case holds

        var table: String {
            switch self {
            case .records: "casevault_records"
            case .holds: "casevault_holds"
            }
        }

        var noun: String {
            switch self {
            case .records: "record"
            case .holds: "legal hold"
            }
        }

        func rewrap(_ wrapped: [UInt8], id: [UInt8], from key: EpochKey, under next: EpochKey)
            throws(CaseVaultError) -> [UInt8]
        {
            switch self {
            case .records: try key.rewrap(wrapped, recordID: RecordID(bytes: id), under: next)
            case .holds: try key.rewrap(wrapped, holdID: HoldID(bytes: id), under: next)
            }
        }
    }

    /// Step 3 of a turn: every live record and standing hold wrapped under an epoch older than `epoch` whose
    /// key is among `keys` (the epoch keys this daemon holds) rewrapped under `epoch`'s key, `rewrapBatch`
    /// at a time, each batch its own transaction (rows another daemon is rewrapping are skipped, not waited
    /// for). Rows under an older epoch this daemon does not hold are left to a daemon that does
    /// (`wrappedBelow` stays true). A wrapped key that does not open is `integrity-failure`, naming the
    /// record or hold. Returns how many were rewrapped.
    package func rewrap(below epoch: UInt64, keys: [EpochKey], on connection: PostgresConnection) async throws -> Int {
        guard let next = keys.first(where: { $0.number == epoch }) else {
            throw CaseVaultError(.keyUnavailable, "this daemon does not hold epoch \(epoch)'s key to rewrap under")
        }
        let older = keys.map(\.number).filter { $0 < epoch }.map { Int64($0) }
        guard !older.isEmpty else { return 0 }
        var total = 0
        for kind in Wrapped.allCases {
            while true {
                let count = try await self.rewrapBatch(
                    kind, below: epoch, older: older, keys: keys, next: next, on: connection)
                total += count
                if count == 0 { break }
            }
        }
        return total
    }

    /// One transaction of `rewrap`: up to `rewrapBatch` rows of `kind`; returns how many it moved.
    private func rewrapBatch(
        _ kind: Wrapped, below epoch: UInt64, older: [Int64], keys: [EpochKey], next: EpochKey,
        on connection: PostgresConnection
    ) async throws -> Int {
        try await connection.transaction(logger: self.logger) { connection -> Int in
            let rows = try await connection.query(
                """
                SELECT id, epoch, wrapped_key FROM \(unescaped: kind.table) WHERE epoch = ANY(\(older))
                ORDER BY id LIMIT \(Self.rewrapBatch) FOR UPDATE SKIP LOCKED
                """, logger: self.logger)
            var batch: [(id: [UInt8], epoch: UInt64, wrapped: [UInt8])] = []
            for try await (id, old, wrapped) in rows.decode((ByteBuffer, Int64, ByteBuffer).self) {
                guard id.readableBytes == RecordID.byteCount else {
                    throw CaseVaultError(.integrityFailure, "a \(kind.noun)'s row in the database is malformed")
                }
                batch.append((Array(id.readableBytesView), UInt64(old), Array(wrapped.readableBytesView)))
            }
            var rewrapped: [ByteBuffer] = []
            rewrapped.reserveCapacity(batch.count)
            for row in batch {
                // Selected by the epochs `keys` hold.
                guard let key = keys.first(where: { $0.number == row.epoch }) else {
                    throw CaseVaultError(.keyUnavailable, "erase epoch \(row.epoch)'s key went missing")
                }
                do throws(CaseVaultError) {
                    rewrapped.append(
                        ByteBuffer(bytes: try kind.rewrap(row.wrapped, id: row.id, from: key, under: next)))
                } catch {
                    // Secure memory that could not be had is not an altered key.
                    guard error.code == .integrityFailure else { throw error }
                    throw CaseVaultError(
                        .integrityFailure,
                        "\(kind.noun) \(Hex.encode(row.id))'s wrapped key does not open under erase epoch \(row.epoch): it was altered, or written by someone without the epoch's key",
                        cause: error)
                }
            }
            // The batch's rows in one statement, each with its new wrap. Each was locked by the select, so
            // each is moved; were one not, the next select would find it again and the loop never end.
            guard !batch.isEmpty else { return 0 }
            let ids = batch.map { ByteBuffer(bytes: $0.id) }
            let moved = try await connection.query(
                """
                UPDATE \(unescaped: kind.table) AS r SET epoch = \(Int64(epoch)), wrapped_key = u.wrapped_key
                FROM unnest(\(ids)::bytea[], \(rewrapped)::bytea[]) AS u (id, wrapped_key)
                WHERE r.id = u.id RETURNING 1
                """, logger: self.logger)
            var count = 0
            for try await _ in moved.decode(Int32.self) { count += 1 }
            guard count == batch.count else {
                throw CaseVaultError(
                    .storageFailure, "the rewrap moved \(count) of the \(batch.count) \(kind.table) rows it had locked")
            }
            return count
        }
    }

    /// The epochs older than `epoch` under which live records' keys are still wrapped, oldest first.
    package func epochs(below epoch: UInt64, on connection: PostgresConnection) async throws -> [UInt64] {
        var epochs: [UInt64] = []
        for try await number in try await connection.query(
            """
            SELECT epoch FROM casevault_records WHERE epoch < \(Int64(epoch))
            UNION SELECT epoch FROM casevault_holds WHERE epoch < \(Int64(epoch)) ORDER BY epoch
            """,
            logger: self.logger
        ).decode(Int64.self) {
            epochs.append(UInt64(number))
        }
        return epochs
    }
}

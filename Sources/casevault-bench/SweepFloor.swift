import Foundation
import GRDB

/// What SQLite alone spends on a sweep's marking and removal: a copy of the filled vault's index, and on it
/// the statements a sweep runs for each batch (`Index.markShredding`, a commit per section of 500 as the
/// store makes; `Index.removeShredded`, one commit), in the same batches and sections, then the WAL's
/// truncation once at the end, with the writer's settings (`Index.open`: WAL, `synchronous=FULL`,
/// `secure_delete`, a 64 MiB cache, `wal_autocheckpoint = 8192`, temporary tables in memory). No files, no
/// keys, no listing, no certificates, no rereading of rows: the least this index and these statements take
/// here, at this batch size. The statements are kept in step with the store's by hand; they are few and the
/// figure asserts nothing.
extension Bench {
    /// Returns the whole time and each part's: the marking, each of the removal's statements, their commits,
    /// and the WAL's truncation.
    func sweepIndexFloor(copying indexPath: String, into path: String, batch: Int, shreddedAt: Int64) throws -> (
        total: Double, parts: KeyValuePairs<String, Double>
    ) {
        var readOnly = Configuration()
        readOnly.readonly = true
        let source = try DatabaseQueue(path: indexPath, configuration: readOnly)
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(
                sql: """
                    PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;
                    PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 8192
                    """)
        }
        let floor = try DatabaseQueue(path: path, configuration: configuration)
        try source.backup(to: floor)
        try source.close()
        try floor.writeWithoutTransaction { db in
            _ = try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL")
        }
        let seqs = try floor.read { db in
            try Int64.fetchAll(db, sql: "SELECT seq FROM records WHERE type = 'evaluation' ORDER BY seq")
        }
        let orderID = try floor.write { db in
            try db.execute(
                sql:
                    "INSERT INTO shred_order_list (method, uid, role, reason, open) VALUES ('retention_sweep', NULL, 'daemon', NULL, 1)"
            )
            return db.lastInsertedRowID
        }
        var parts = [Double](repeating: 0, count: 7)
        var mark = Date()
        func lap(_ part: Int) {
            let now = Date()
            parts[part] += now.timeIntervalSince(mark)
            mark = now
        }
        let started = Date()
        let batch = max(1, batch)
        for first in stride(from: 0, to: seqs.count, by: batch) {
            let batchSeqs = Array(seqs[first..<min(first + batch, seqs.count)])
            mark = Date()
            try Self.sections(batchSeqs) { list, arguments in
                try floor.write { db in
                    try Self.statement(
                        db, list,
                        """
                        UPDATE records SET state = 'shredding', shred_order = coalesce(?, shred_order)
                        WHERE state = 'live' AND seq IN (\(list))
                        """
                    ).execute(arguments: [orderID] + arguments)
                }
            }
            lap(0)
            try floor.write { db in
                try Self.sections(batchSeqs) { list, arguments in
                    try Self.statement(
                        db, list,
                        "INSERT OR IGNORE INTO free_slots (slot) SELECT slot FROM records WHERE seq IN (\(list))"
                    ).execute(arguments: arguments)
                    lap(1)
                    try Self.statement(
                        db, list,
                        """
                        INSERT OR IGNORE INTO shred_ledger (record_id, case_id, type, shredded_at)
                        SELECT id, case_id, type, ? FROM records WHERE seq IN (\(list))
                        """
                    ).execute(arguments: [shreddedAt] + arguments)
                    lap(2)
                    try Self.statement(
                        db, list,
                        """
                        INSERT INTO shred_certifying (record_id, order_id, case_id, type)
                        SELECT id, (SELECT id FROM shred_order_list WHERE id = shred_order), case_id, type
                        FROM records WHERE seq IN (\(list))
                        """
                    ).execute(arguments: arguments)
                    lap(3)
                    try Self.statement(db, list, "DELETE FROM records WHERE seq IN (\(list))").execute(
                        arguments: arguments)
                    lap(4)
                }
            }
            lap(5)
        }
        // Once for the whole sweep, as `RecordStore.closeSweepOrder` does.
        mark = Date()
        try floor.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
        lap(6)
        let elapsed = Date().timeIntervalSince(started)
        try floor.close()
        for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
        return (
            elapsed,
            [
                "marking": parts[0], "free slots": parts[1], "shred ledger": parts[2],
                "awaiting certificates": parts[3],
                "deleting the rows": parts[4], "commit": parts[5], "WAL truncation": parts[6],
            ]
        )
    }

    /// The statement `sql` for a section whose placeholders are `list`, kept prepared for a full section as
    /// `Index.statement(_:inChunk:_:)` keeps it.
    private static func statement(_ db: Database, _ list: String, _ sql: String) throws -> Statement {
        list.utf8.count == 2 * 500 - 1 ? try db.cachedStatement(sql: sql) : try db.makeStatement(sql: sql)
    }

    /// `keys` 500 at a time, as the index's statements take them: a list of placeholders and its arguments.
    private static func sections(_ keys: [Int64], _ body: (String, StatementArguments) throws -> Void) throws {
        for first in stride(from: 0, to: keys.count, by: 500) {
            let section = Array(keys[first..<min(first + 500, keys.count)])
            try body(Array(repeating: "?", count: section.count).joined(separator: ","), StatementArguments(section))
        }
    }
}

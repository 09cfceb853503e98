import Foundation
import GRDB

/// What SQLite alone spends on a sweep's index work: a copy of the filled vault's index, and on it the
/// statements a sweep runs for each batch (`Index.markShredding`, `Index.removeShredded`, then the WAL's
/// truncation), in the same batches and sections, with the store's settings (WAL, `synchronous=FULL`,
/// `secure_delete`, a 64 MiB cache). No files, no keys, no certificates: the least a sweep of this index can
/// take here, as `casevault-floor` is for the socket. The statements are kept in step with the store's by
/// hand; they are few and the figure asserts nothing.
extension Bench {
    /// Returns the whole time and each part's: the marking, each of the removal's statements with its share
    /// of the commit counted to the last, and the WAL's truncations.
    func sweepIndexFloor(copying indexPath: String, into path: String, batch: Int) throws -> (
        total: Double, parts: KeyValuePairs<String, Double>
    ) {
        var readOnly = Configuration()
        readOnly.readonly = true
        let source = try DatabaseQueue(path: indexPath, configuration: readOnly)
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(
                sql: "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; PRAGMA cache_size = -65536")
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
        for first in stride(from: 0, to: seqs.count, by: batch) {
            let batchSeqs = Array(seqs[first..<min(first + batch, seqs.count)])
            mark = Date()
            try floor.write { db in
                try Self.sections(batchSeqs) { list, arguments in
                    try db.execute(
                        sql: """
                            UPDATE records SET state = 'shredding', shred_order = coalesce(?, shred_order)
                            WHERE state = 'live' AND seq IN (\(list))
                            """,
                        arguments: [orderID] + arguments)
                }
            }
            lap(0)
            try floor.write { db in
                try Self.sections(batchSeqs) { list, arguments in
                    try db.execute(
                        sql: "INSERT OR IGNORE INTO free_slots (slot) SELECT slot FROM records WHERE seq IN (\(list))",
                        arguments: arguments)
                    lap(1)
                    try db.execute(
                        sql: """
                            INSERT OR IGNORE INTO shred_ledger (record_id, case_id, type, shredded_at)
                            SELECT id, case_id, type, 0 FROM records WHERE seq IN (\(list))
                            """,
                        arguments: arguments)
                    lap(2)
                    try db.execute(
                        sql: """
                            INSERT INTO shred_certifying (record_id, order_id, case_id, type)
                            SELECT id, shred_order, case_id, type FROM records WHERE seq IN (\(list))
                            """,
                        arguments: arguments)
                    lap(3)
                    try db.execute(sql: "DELETE FROM records WHERE seq IN (\(list))", arguments: arguments)
                    lap(4)
                }
            }
            lap(5)
            try floor.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
            lap(6)
        }
        let elapsed = Date().timeIntervalSince(started)
        try floor.close()
        return (
            elapsed,
            [
                "marking": parts[0], "free slots": parts[1], "shred ledger": parts[2],
                "awaiting certificates": parts[3],
                "deleting the rows": parts[4], "commit": parts[5], "WAL truncation": parts[6],
            ]
        )
    }

    /// `keys` 500 at a time, as the index's statements take them: a list of placeholders and its arguments.
    private static func sections(_ keys: [Int64], _ body: (String, StatementArguments) throws -> Void) throws {
        for first in stride(from: 0, to: keys.count, by: 500) {
            let section = Array(keys[first..<min(first + 500, keys.count)])
            try body(Array(repeating: "?", count: section.count).joined(separator: ","), StatementArguments(section))
        }
    }
}

internal import CaseVaultCore
internal import Foundation
internal import GRDB

// Legal holds and the retention sweep's candidates: the rows that decide what a sweep may dispose of.
extension Index {
    // MARK: Legal holds

    /// A hold's row as the index keeps it; the reason stays sealed.
    struct StoredHold {
        var id: String
        var caseID: String
        var placedAt: Int64
        var uid: UInt32?
        var role: String
        var sealedReason: Data
    }

    /// Records a hold placed on `caseID`, with its reason already sealed.
    static func insertHold(
        _ db: Database, id: HoldID, caseID: CaseID, placedAt: Int64, placedBy authority: Authority,
        sealedReason: [UInt8]
    ) throws {
        try db.execute(
            sql: "INSERT INTO holds (id, case_id, placed_at, uid, role, reason) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [
                id.rawValue, caseID.rawValue, placedAt, authority.uid.map { Int64($0) },
                authority.role,
                Data(sealedReason),
            ]
        )
    }

    /// The holds standing, oldest first (then by id), their reasons sealed.
    static func holds(_ db: Database) throws -> [StoredHold] {
        try GRDB.Row.fetchAll(
            db, sql: "SELECT id, case_id, placed_at, uid, role, reason FROM holds ORDER BY placed_at, id"
        ).map { row in
            StoredHold(
                id: try row.decode(atIndex: 0), caseID: try row.decode(atIndex: 1),
                placedAt: try row.decode(atIndex: 2), uid: try row.decode(atIndex: 3), role: try row.decode(atIndex: 4),
                sealedReason: try row.decode(atIndex: 5))
        }
    }

    /// Deletes the hold `id`; the case it stood on, or nil when no such hold stands.
    static func releaseHold(_ db: Database, id: HoldID) throws -> String? {
        let caseID = try String.fetchOne(
            db, sql: "SELECT case_id FROM holds WHERE id = ?", arguments: [id.rawValue])
        // secure_delete zeroes the row, sealed reason included.
        try db.execute(sql: "DELETE FROM holds WHERE id = ?", arguments: [id.rawValue])
        return caseID
    }

    /// The cases at least one hold stands on.
    static func heldCases(_ db: Database) throws -> Set<String> {
        Set(try String.fetchAll(db, sql: "SELECT DISTINCT case_id FROM holds"))
    }

    /// Whether a hold stands on the case.
    static func isHeld(_ db: Database, caseID: CaseID) throws -> Bool {
        try Bool.fetchOne(
            db.cachedStatement(sql: "SELECT 1 FROM holds WHERE case_id = ? LIMIT 1"), arguments: [caseID.rawValue]
        ) ?? false
    }

    // MARK: Retention candidates

    /// The records of `type` filed at or before `cutoff` (one range of `records_by_type_time`), oldest
    /// first, that `isDue` finds due by their filing time. Records already `shredding` come back with
    /// `live == false`.
    static func dueByFiling(
        _ db: Database, type: RecordType, filedBy cutoff: Int64, isDue: (_ eventTime: Int64) -> Bool
    ) throws -> [RecordStore.Due] {
        let rows = try GRDB.Row.fetchCursor(
            db,
            sql:
                "SELECT id, case_id, state, created_at, seq FROM records WHERE type = ? AND created_at <= ? ORDER BY created_at, seq",
            arguments: [type.rawValue, cutoff]
        )
        return try Self.due(rows, type: type, isDue: isDue)
    }

    /// The records of `type` of cases closed at or before `cutoff` (one range of `cases_by_closing`),
    /// earliest closed first, that `isDue` finds due by their case's closing time. Records already
    /// `shredding` come back with `live == false`.
    static func dueByCaseClosing(
        _ db: Database, type: RecordType, closedBy cutoff: Int64, isDue: (_ eventTime: Int64) -> Bool
    ) throws -> [RecordStore.Due] {
        let rows = try GRDB.Row.fetchCursor(
            db,
            sql: """
                SELECT r.id, r.case_id, r.state, c.closed_at, r.seq FROM cases c JOIN records r ON r.case_id = c.id
                WHERE c.closed_at IS NOT NULL AND c.closed_at <= ? AND r.type = ?
                ORDER BY c.closed_at, r.seq
                """,
            arguments: [cutoff, type.rawValue]
        )
        return try Self.due(rows, type: type, isDue: isDue)
    }

    /// The rows of `rows` (id, case id, state, event time, seq) whose event time `isDue` accepts, judged as the
    /// cursor goes so that a candidate not due is never decoded further.
    private static func due(
        _ rows: RowCursor, type: RecordType, isDue: (_ eventTime: Int64) -> Bool
    ) throws -> [RecordStore.Due] {
        var due: [RecordStore.Due] = []
        while let row = try rows.next() {
            guard isDue(try row.decode(atIndex: 3)) else { continue }
            due.append(
                RecordStore.Due(
                    seq: try row.decode(atIndex: 4), id: try row.decode(atIndex: 0), caseID: try row.decode(atIndex: 1),
                    type: type,
                    live: (try row.decode(atIndex: 2) as String) == State.live.rawValue))
        }
        return due
    }

    /// Every record due at `now`: per type, the candidates by one index range (records filed, or cases
    /// closed, before the latest time any could be due), each then judged exactly by its rule. Records
    /// already `shredding` come back with `live == false`.
    static func dueRecords(_ db: Database, schedule: RetentionSchedule, at now: Int64) throws -> [RecordStore.Due] {
        var due: [RecordStore.Due] = []
        for type in RecordType.allCases {
            guard let rule = schedule.rules[type] else { continue }
            let cutoff = rule.latestPossibleEvent(at: now)
            switch rule.event {
            case .filed:
                due += try Index.dueByFiling(db, type: type, filedBy: cutoff) { rule.isDue(eventTime: $0, at: now) }
            case .caseClosed:
                due += try Index.dueByCaseClosing(db, type: type, closedBy: cutoff) {
                    rule.isDue(eventTime: $0, at: now)
                }
            }
        }
        return due
    }
}

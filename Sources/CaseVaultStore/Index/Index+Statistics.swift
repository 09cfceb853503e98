internal import CaseVaultCore
internal import Foundation
internal import GRDB

// The statistics' rows: what each case's facts are taken from, and the facts themselves, kept sealed
// (`statistics_facts`, RecordStore+Statistics).
extension Index {
    /// A case's times and closing outcome, as the statistics count them.
    struct StatisticsCase {
        var id: String
        var createdAt: Int64
        var closedAt: Int64?
        var closingOutcome: String?
    }

    /// Every case, in no particular order.
    static func statisticsCases(_ db: Database) throws -> [StatisticsCase] {
        try GRDB.Row.fetchAll(db, sql: "SELECT id, created_at, closed_at, closing_outcome FROM cases").map { row in
            StatisticsCase(
                id: try row.decode(atIndex: 0), createdAt: try row.decode(atIndex: 1),
                closedAt: try row.decode(atIndex: 2), closingOutcome: try row.decode(atIndex: 3))
        }
    }

    /// Per case, the newest (highest `seq`) and the number of its live records of `types` (three types).
    static func statisticsSources(
        _ db: Database, types: [String]
    ) throws -> [String: (newest: Int64, count: Int64)] {
        var current: [String: (newest: Int64, count: Int64)] = [:]
        for row in try GRDB.Row.fetchAll(
            db,
            sql:
                "SELECT case_id, MAX(seq), COUNT(*) FROM records WHERE state = 'live' AND type IN (?, ?, ?) GROUP BY case_id",
            arguments: StatementArguments(types)
        ) {
            current[try row.decode(atIndex: 0)] = (try row.decode(atIndex: 1), try row.decode(atIndex: 2))
        }
        return current
    }

    /// The facts kept, sealed, per case, with the newest and the number of records they were taken from.
    static func keptStatisticsFacts(_ db: Database) throws -> [String: (newest: Int64, count: Int64, sealed: Data)] {
        var kept: [String: (newest: Int64, count: Int64, sealed: Data)] = [:]
        for row in try GRDB.Row.fetchAll(db, sql: "SELECT case_id, newest, records, sealed FROM statistics_facts") {
            kept[try row.decode(atIndex: 0)] = (
                try row.decode(atIndex: 1), try row.decode(atIndex: 2), try row.decode(atIndex: 3)
            )
        }
        return kept
    }

    /// Keeps a case's facts, sealed, in place of any kept before.
    static func keepStatisticsFacts(
        _ db: Database, caseID: String, newest: Int64, count: Int64, sealed: [UInt8]
    ) throws {
        try db.execute(
            sql:
                "INSERT OR REPLACE INTO statistics_facts (case_id, newest, records, sealed) VALUES (?, ?, ?, ?)",
            arguments: [caseID, newest, count, Data(sealed)]
        )
    }

    /// Deletes the facts of cases that are gone (disposed by retention).
    static func deleteStatisticsFactsOfGoneCases(_ db: Database) throws {
        try db.execute(sql: "DELETE FROM statistics_facts WHERE case_id NOT IN (SELECT id FROM cases)")
    }

    /// `caseID`'s live records of `types` (three types), oldest first.
    static func statisticsRecords(_ db: Database, caseID: CaseID, types: [String]) throws -> [Row] {
        try GRDB.Row.fetchAll(
            db,
            sql:
                "SELECT \(Self.columns) FROM records WHERE case_id = ? AND state = 'live' AND type IN (?, ?, ?) ORDER BY seq",
            arguments: StatementArguments([caseID.rawValue] + types)
        ).map(Self.decode)
    }
}

internal import CaseVaultCore
internal import GRDB

// Case lists and a case's records page by page: ids, states, dates, mediators and counts, never names or
// content (the index holds none).
extension Index {
    /// The cases `query` selects, newest first (opening time, then id), at most `query.limit`.
    static func cases(_ db: Database, _ query: CaseQuery) throws -> [CaseSummary] {
        guard !query.visibility.isEmpty else { return [] }
        var conditions: [String] = []
        var arguments: [(any DatabaseValueConvertible)?] = []
        if !query.visibility.everyCase {
            var visible: [String] = []
            if query.visibility.inIntake {
                visible.append("state = 'intake'")
            }
            if let uid = query.visibility.mediator {
                visible.append("id IN (SELECT case_id FROM case_mediators WHERE uid = ?)")
                arguments.append(uid)
            }
            if let uid = query.visibility.supervisor {
                visible.append("id IN (SELECT case_id FROM case_supervisors WHERE uid = ?)")
                arguments.append(uid)
            }
            conditions.append("(" + visible.joined(separator: " OR ") + ")")
        }
        if let state = query.state {
            conditions.append("state = ?")
            arguments.append(state.rawValue)
        }
        if let from = query.openedFrom {
            conditions.append("created_at >= ?")
            arguments.append(from)
        }
        if let before = query.openedBefore {
            conditions.append("created_at < ?")
            arguments.append(before)
        }
        if let uid = query.assignedTo {
            conditions.append(
                "(id IN (SELECT case_id FROM case_mediators WHERE uid = ?) OR id IN (SELECT case_id FROM case_supervisors WHERE uid = ?))"
            )
            arguments.append(uid)
            arguments.append(uid)
        }
        if let after = query.after {
            conditions.append("(created_at, id) < (?, ?)")
            arguments.append(after.openedAt)
            arguments.append(after.id.rawValue)
        }
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        arguments.append(query.limit)
        let found = try GRDB.Row.fetchAll(
            db,
            sql: """
                SELECT id, state, participant_count, created_at, closed_at FROM cases \(filter)
                ORDER BY created_at DESC, id DESC LIMIT ?
                """,
            arguments: StatementArguments(arguments))
        let ids = try found.map { row in try CaseID(row.decode(atIndex: 0) as String) }
        let assigned = try Self.assignedUIDs(db, cases: ids.map(\.rawValue))
        return try zip(found, ids).map { row, id in
            guard let state = CaseState(rawValue: try row.decode(atIndex: 1)) else {
                throw CaseVaultError(.storageFailure, "the index holds a case in an unknown state")
            }
            return CaseSummary(
                id: id, state: state, participantCount: try row.decode(atIndex: 2),
                mediators: assigned[id.rawValue]?.mediators ?? [],
                supervisors: assigned[id.rawValue]?.supervisors ?? [],
                createdAt: try row.decode(atIndex: 3),
                closedAt: try row.decode(atIndex: 4))
        }
    }

    /// The mediators and supervisors of each of `cases` (ids as stored), by case, each list by uid.
    static func assignedUIDs(_ db: Database, cases: [String]) throws
        -> [String: (mediators: [UInt32], supervisors: [UInt32])]
    {
        var assigned: [String: (mediators: [UInt32], supervisors: [UInt32])] = [:]
        try Self.inChunks(cases) { placeholders, arguments in
            let rows = try GRDB.Row.fetchCursor(
                db,
                sql: """
                    SELECT case_id, uid, 0 FROM case_mediators WHERE case_id IN (\(placeholders))
                    UNION ALL SELECT case_id, uid, 1 FROM case_supervisors WHERE case_id IN (\(placeholders))
                    ORDER BY 2
                    """,
                arguments: arguments + arguments)
            while let row = try rows.next() {
                let (caseID, uid): (String, UInt32) = (try row.decode(atIndex: 0), try row.decode(atIndex: 1))
                if try row.decode(atIndex: 2) as Int == 0 {
                    assigned[caseID, default: ([], [])].mediators.append(uid)
                } else {
                    assigned[caseID, default: ([], [])].supervisors.append(uid)
                }
            }
        }
        return assigned
    }

    /// How many live records of each type each of `cases` holds (the case header not counted).
    static func liveCounts(_ db: Database, cases: [CaseID]) throws -> [CaseID: [RecordType: Int]] {
        var counts: [CaseID: [RecordType: Int]] = [:]
        try Self.inChunks(cases.map(\.rawValue)) { placeholders, arguments in
            let rows = try GRDB.Row.fetchCursor(
                db,
                sql: """
                    SELECT case_id, type, count(*) FROM records
                    WHERE case_id IN (\(placeholders)) AND state = 'live' AND type != 'case_header'
                    GROUP BY case_id, type
                    """,
                arguments: arguments)
            while let row = try rows.next() {
                guard let type = RecordType(rawValue: try row.decode(atIndex: 1)) else {
                    throw Self.malformedRow()
                }
                counts[try CaseID(row.decode(atIndex: 0) as String), default: [:]][type] = try row.decode(atIndex: 2)
            }
        }
        return counts
    }

    /// A case's live records of `types`, in filing order (filing time, then sequence), after `after`, at
    /// most `limit`; with the sequence of each (its cursor's second part).
    static func liveRecords(
        _ db: Database, caseID: CaseID, types: Set<RecordType>, after: RecordListCursor?, limit: Int
    ) throws -> [(metadata: RecordMetadata, sequence: Int64)] {
        guard !types.isEmpty else { return [] }
        let names = types.map(\.rawValue).sorted()
        let placeholders = Array(repeating: "?", count: names.count).joined(separator: ", ")
        var arguments: [(any DatabaseValueConvertible)?] = [caseID.rawValue]
        arguments += names
        arguments.append(after?.filedAt ?? Int64.min)
        arguments.append(after?.sequence ?? Int64.min)
        arguments.append(limit)
        return try GRDB.Row.fetchAll(
            db,
            sql: """
                SELECT \(Self.columns) FROM records
                WHERE case_id = ? AND state = 'live' AND type IN (\(placeholders)) AND (created_at, seq) > (?, ?)
                ORDER BY created_at, seq LIMIT ?
                """,
            arguments: StatementArguments(arguments)
        ).map { row in
            let decoded = try Self.decode(row)
            return (decoded.metadata, decoded.seq)
        }
    }
}

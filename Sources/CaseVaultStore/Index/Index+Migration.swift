internal import CaseVaultCore
internal import CaseVaultSealing
internal import Foundation
internal import GRDB

/// What `casevaultctl migrate` reads of the index, a page at a time, to move the vault to PostgreSQL
/// (`RecordStore.writeMigration`): ids, states, times, uids and signed documents, as the index holds them.
extension Index {
    /// Cases after `after` in id order, each with its mediators and supervisors.
    static func migrationCases(_ db: Database, after: String, limit: Int) throws -> [LogicalBackup.CaseRow] {
        let found = try GRDB.Row.fetchAll(
            db,
            sql: """
                SELECT id, state, participant_count, header, created_at, closed_at, closing_outcome FROM cases
                WHERE id > ? ORDER BY id LIMIT ?
                """,
            arguments: [after, limit])
        let uids = try Self.assignedUIDs(db, cases: try found.map { try $0.decode(atIndex: 0) as String })
        return try found.map { row in
            let id: String = try row.decode(atIndex: 0)
            return LogicalBackup.CaseRow(
                id: id, state: try row.decode(atIndex: 1), participantCount: try row.decode(atIndex: 2),
                mediators: (uids[id]?.mediators ?? []).map(Int64.init),
                supervisors: (uids[id]?.supervisors ?? []).map(Int64.init),
                createdAt: try row.decode(atIndex: 4), closedAt: try row.decode(atIndex: 5),
                outcome: try row.decode(atIndex: 6), headerID: try row.decode(atIndex: 3))
        }
    }

    /// Live records after sequence `after`, in filing order: each one's sequence and id.
    static func migrationRecords(_ db: Database, after: Int64, limit: Int) throws -> [(Int64, RecordID)] {
        try GRDB.Row.fetchAll(
            db, sql: "SELECT seq, id FROM records WHERE state = 'live' AND seq > ? ORDER BY seq LIMIT ?",
            arguments: [after, limit]
        ).map { row in (try row.decode(atIndex: 0), try RecordID(row.decode(atIndex: 1) as String)) }
    }

    /// Certificates after sequence `after`, in issuing order: each one's sequence, id, case, time and
    /// signed document.
    static func migrationCertificates(_ db: Database, after: Int64, limit: Int) throws
        -> [(Int64, LogicalBackup.Certificate)]
    {
        try GRDB.Row.fetchAll(
            db,
            sql: "SELECT seq, id, case_id, issued_at, document FROM certificates WHERE seq > ? ORDER BY seq LIMIT ?",
            arguments: [after, limit]
        ).map { row in
            (
                try row.decode(atIndex: 0),
                LogicalBackup.Certificate(
                    id: try row.decode(atIndex: 1), caseID: try row.decode(atIndex: 2),
                    issuedAt: try row.decode(atIndex: 3), epoch: 0, completes: nil,
                    document: [UInt8](try row.decode(atIndex: 4) as Data))
            )
        }
    }

    /// Inserts a certificate as it was issued elsewhere (a vault moved from a database): its id, case,
    /// time and signed document.
    static func insertMovedCertificate(_ db: Database, _ certificate: LogicalBackup.Certificate) throws {
        try db.execute(
            sql: "INSERT INTO certificates (id, case_id, issued_at, document) VALUES (?, ?, ?, ?)",
            arguments: [certificate.id, certificate.caseID, certificate.issuedAt, certificate.document])
    }
}

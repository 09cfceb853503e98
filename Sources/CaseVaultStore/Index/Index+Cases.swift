internal import CaseVaultCore
internal import CaseVaultSealing
internal import Foundation
internal import GRDB

// Cases, their mediators and the mediator roster: the rows a case's lifecycle and the director change.
extension Index {
    // MARK: Cases

    /// Creates a case's row, naming `header` as its sealed header record, and its mediators.
    static func insertCase(_ db: Database, _ summary: CaseSummary, header: RecordID) throws {
        try db.execute(
            sql: "INSERT INTO cases (id, state, participant_count, header, created_at) VALUES (?, ?, ?, ?, ?)",
            arguments: [
                summary.id.rawValue, summary.state.rawValue, summary.participantCount, header.rawValue,
                summary.createdAt,
            ]
        )
        for uid in summary.mediators {
            try Self.assign(db, .mediators, caseID: summary.id, uid: uid)
        }
    }

    /// Moves a case to `state`; a `closedAt` or an `outcome` given replaces the one recorded, nil keeps it.
    static func setCaseState(_ db: Database, id: CaseID, state: CaseState, closedAt: Int64?, outcome: String?) throws {
        try db.execute(
            sql:
                "UPDATE cases SET state = ?, closed_at = coalesce(?, closed_at), closing_outcome = coalesce(?, closing_outcome) WHERE id = ?",
            arguments: [state.rawValue, closedAt, outcome, id.rawValue]
        )
    }

    /// The id (as stored) of the case's sealed header record; nil for an unknown case.
    static func headerRecordID(_ db: Database, caseID: CaseID) throws -> String? {
        try String.fetchOne(db, sql: "SELECT header FROM cases WHERE id = ?", arguments: [caseID.rawValue])
    }

    /// The ids (as stored) of the live records of one type in a case, in filing order.
    static func liveRecordIDs(_ db: Database, caseID: CaseID, type: RecordType) throws -> [String] {
        try String.fetchAll(
            db.cachedStatement(
                sql: "SELECT id FROM records WHERE case_id = ? AND type = ? AND state = 'live' ORDER BY seq"),
            arguments: [caseID.rawValue, type.rawValue]
        )
    }

    /// The live agreements to mediate of a case, in filing order: id (as stored) and the participant each
    /// is for, sealed (NULL for one filed before the index kept it).
    static func agreements(_ db: Database, caseID: CaseID) throws -> [(id: String, participant: Data?)] {
        try GRDB.Row.fetchAll(
            db.cachedStatement(
                sql: """
                    SELECT id, participant FROM records
                    WHERE case_id = ? AND type = 'agreement_to_mediate' AND state = 'live' ORDER BY seq
                    """),
            arguments: [caseID.rawValue]
        ).map { row in (try row.decode(atIndex: 0), try row.decode(atIndex: 1)) }
    }

    // MARK: Mediators

    /// Replaces the case's mediators or supervisors with `uids`, inserted in the sequence's order.
    static func replace(
        _ db: Database, _ assignment: RecordStore.CaseAssignment, caseID: CaseID, uids: some Sequence<UInt32>
    ) throws {
        try db.execute(sql: "DELETE FROM \(assignment.table) WHERE case_id = ?", arguments: [caseID.rawValue])
        for uid in uids {
            try Self.assign(db, assignment, caseID: caseID, uid: uid)
        }
    }

    /// Assigns one mediator or supervisor to a case.
    private static func assign(
        _ db: Database, _ assignment: RecordStore.CaseAssignment, caseID: CaseID, uid: UInt32
    ) throws {
        try db.execute(
            sql: "INSERT INTO \(assignment.table) (case_id, uid) VALUES (?, ?)", arguments: [caseID.rawValue, uid])
    }

    // MARK: Roster

    /// The uids on the mediator roster, in ascending order.
    static func rosterUIDs(_ db: Database) throws -> [UInt32] {
        try UInt32.fetchAll(db, sql: "SELECT uid FROM roster ORDER BY uid")
    }

    /// Whether `uid` is on the mediator roster.
    static func isOnRoster(_ db: Database, uid: UInt32) throws -> Bool {
        try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM roster WHERE uid = ?"), arguments: [uid]) ?? false
    }

    /// Adds `uid` to the roster as added at `at` (milliseconds since the epoch); returns whether it was new.
    /// One already on it keeps its original time.
    static func addToRoster(_ db: Database, uid: UInt32, at: Int64) throws -> Bool {
        try db.execute(sql: "INSERT OR IGNORE INTO roster (uid, added_at) VALUES (?, ?)", arguments: [uid, at])
        return db.changesCount > 0
    }

    /// Takes `uid` off the roster; returns whether it was on it.
    static func removeFromRoster(_ db: Database, uid: UInt32) throws -> Bool {
        try db.execute(sql: "DELETE FROM roster WHERE uid = ?", arguments: [uid])
        return db.changesCount > 0
    }

    /// Applies a put's or a close's effects inside its index transaction, so that a crash leaves all of them
    /// or none.
    static func apply(_ db: Database, _ effects: FilingEffects) throws {
        if let (summary, header) = effects.newCase {
            try Self.insertCase(db, summary, header: header)
        }
        if let (id, state, closedAt, outcome) = effects.caseState {
            try Self.setCaseState(db, id: id, state: state, closedAt: closedAt, outcome: outcome)
        }
        try Self.markShredding(db, effects.markShredding, order: effects.shredOrder)
    }
}

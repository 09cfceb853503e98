internal import CaseVaultCore
internal import GRDB

extension Index {
    /// Epochs not yet retired, oldest first.
    static func activeEpochs(_ db: Database) throws -> [UInt32] {
        try UInt32.fetchAll(db, sql: "SELECT epoch FROM epochs WHERE retired_at IS NULL ORDER BY epoch")
    }

    /// Records `epoch` as opened at `createdAt`: new keys are wrapped under it from its commit on.
    static func openEpoch(_ db: Database, _ epoch: UInt32, createdAt: Int64) throws {
        try db.execute(sql: "INSERT INTO epochs (epoch, created_at) VALUES (?, ?)", arguments: [epoch, createdAt])
    }

    /// Retires, at `retiredAt`, every active epoch other than `target`; returns them, oldest first.
    static func retireEpochs(_ db: Database, except target: UInt32, retiredAt: Int64) throws -> [UInt32] {
        let older = try UInt32.fetchAll(
            db, sql: "SELECT epoch FROM epochs WHERE retired_at IS NULL AND epoch <> ? ORDER BY epoch",
            arguments: [target]
        )
        try db.execute(
            sql: "UPDATE epochs SET retired_at = ? WHERE retired_at IS NULL AND epoch <> ?",
            arguments: [retiredAt, target])
        return older
    }

    /// Every live record and its key slot, in slot order (records being shredded left out).
    static func liveRecordSlots(_ db: Database) throws -> [(id: RecordID, slot: Int64)] {
        try GRDB.Row.fetchAll(db, sql: "SELECT id, slot FROM records WHERE state = 'live' ORDER BY slot").map {
            row -> (id: RecordID, slot: Int64) in
            (try RecordID(try row.decode(forColumn: "id") as String), try row.decode(forColumn: "slot"))
        }
    }

    /// The slots from `first` through `last` that a live record owns.
    static func liveSlots(_ db: Database, from first: Int64, through last: Int64) throws -> Set<Int64> {
        try Set(
            Int64.fetchAll(
                db, sql: "SELECT slot FROM records WHERE state = 'live' AND slot BETWEEN ? AND ?",
                arguments: [first, last]))
    }
}

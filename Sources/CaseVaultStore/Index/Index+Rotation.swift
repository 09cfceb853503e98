internal import CaseVaultCore
internal import CaseVaultSealing
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

    /// Where the copies of their wrapped keys lie in the frames of the live records whose slots run from
    /// `first` through `last` (records filed before frames have none), by slot: `KeySlot.size` bytes just
    /// before each blob.
    static func frameKeyCopies(_ db: Database, from first: Int64, through last: Int64) throws -> [Int64: Segments
        .Location]
    {
        var copies: [Int64: Segments.Location] = [:]
        let rows = try GRDB.Row.fetchCursor(
            db,
            sql: """
                SELECT slot, segment, offset FROM records
                WHERE state = 'live' AND frame_start IS NOT NULL AND slot BETWEEN ? AND ?
                """,
            arguments: [first, last])
        while let row = try rows.next() {
            let offset: Int64 = try row.decode(atIndex: 2)
            guard offset >= Int64(KeySlot.size) else { throw Self.malformedRow() }
            copies[try row.decode(atIndex: 0)] = Segments.Location(
                segment: try row.decode(atIndex: 1), offset: offset - Int64(KeySlot.size), length: KeySlot.size)
        }
        return copies
    }

    /// The slots from `first` through `last` that a live record owns.
    static func liveSlots(_ db: Database, from first: Int64, through last: Int64) throws -> Set<Int64> {
        try Set(
            Int64.fetchAll(
                db, sql: "SELECT slot FROM records WHERE state = 'live' AND slot BETWEEN ? AND ?",
                arguments: [first, last]))
    }
}

internal import CaseVaultCore
internal import CaseVaultSealing
internal import Foundation
internal import GRDB

// The record rows a put adds, and what the store reads or records once at open or asks on the side.
extension Index {
    /// Adds a put's record as `live`, owning `slot`, its blob at `location`, in a frame from `frameStart` on.
    static func insertLiveRecord(
        _ db: Database, _ record: RecordMetadata, participant: [UInt8]?, slot: Int64, location: Segments.Location,
        frameStart: Int64
    ) throws {
        try db.cachedStatement(
            sql: """
                INSERT INTO records (
                    id, case_id, type, state, created_at, author, supersedes, sealed_size, slot, segment, offset,
                    participant, frame_start
                ) VALUES (?, ?, ?, 'live', ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(arguments: [
            record.id.rawValue, record.caseID.rawValue, record.type.rawValue, record.createdAt,
            record.author, record.supersedes?.rawValue, record.sealedSize, slot,
            location.segment, location.offset, participant.map { Data($0) }, frameStart,
        ])
    }

    /// What a put adds to the index: its record's row and the effects of its filing.
    struct PutRow {
        var metadata: RecordMetadata
        var participant: [UInt8]?
        var slot: Int64
        var location: Segments.Location
        var frameStart: Int64
        var effects: FilingEffects
    }

    /// A batch of puts' rows and effects, and the writer's state after it; with `settled`, the settled mark
    /// moved to its cursor as well.
    static func insertPuts(_ db: Database, _ rows: [PutRow], writer: RecordStore.WriterState, settled: Bool) throws {
        // An unsettled batch changes no case (`Index.writeUnflushed`, which leaves `CaseAnswers` kept).
        assert(settled || rows.allSatisfy(\.effects.isEmpty), "a batch with filing effects must settle")
        for row in rows {
            try Self.insertLiveRecord(
                db, row.metadata, participant: row.participant, slot: row.slot, location: row.location,
                frameStart: row.frameStart)
            try Self.takeOffFreeList(db, [row.slot])
            try Self.apply(db, row.effects)
        }
        try Self.setMeta(db, "slot_high_water", writer.slots.highWater)
        try Self.setMeta(db, "segment_current", Int64(writer.cursor.segment))
        try Self.setMeta(db, "segment_end", writer.cursor.end)
        if settled {
            try Self.setSettled(db, writer.cursor)
        }
    }

    /// Moves the settled mark to `cursor`: every frame before it has its row and slot durable on their own.
    static func setSettled(_ db: Database, _ cursor: Segments.Cursor) throws {
        try Self.setMeta(db, "settled_segment", Int64(cursor.segment))
        try Self.setMeta(db, "settled_end", cursor.end)
    }

    /// The highest slot a record owns (live or `shredding`); nil when the index holds no record.
    static func maxSlot(_ db: Database) throws -> Int64? {
        try Int64.fetchOne(db, sql: "SELECT max(slot) FROM records")
    }

    /// Records the root key's check value, which every later open compares.
    static func setRootKeyCheck(_ db: Database, _ check: Int64) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('root_key_check', ?)", arguments: [check])
    }

    /// The epochs a rotation retired.
    static func retiredEpochs(_ db: Database) throws -> [UInt32] {
        try UInt32.fetchAll(db, sql: "SELECT epoch FROM epochs WHERE retired_at IS NOT NULL")
    }

    /// How many records are live (case headers not counted): a figure for the operator's metrics.
    static func liveRecordCount(_ db: Database) throws -> Int {
        try Int.fetchOne(db, sql: "SELECT count(*) FROM records WHERE state = 'live' AND type != 'case_header'") ?? 0
    }

    /// Whether the index answers a trivial query (the watchdog's question).
    static func answers(_ db: Database) throws -> Bool {
        try Int.fetchOne(db, sql: "SELECT 1") == 1
    }
}

internal import CaseVaultCore
internal import GRDB

extension Index {
    /// Puts `slot` on the free list, unless a record owns it or the list has it already.
    static func freeUnlessOwned(_ db: Database, slot: Int64) throws {
        try db.cachedStatement(
            sql:
                "INSERT OR IGNORE INTO free_slots (slot) SELECT ? WHERE NOT EXISTS (SELECT 1 FROM records WHERE slot = ?)"
        ).execute(arguments: [slot, slot])
    }

    /// Where the record blob that ends furthest into the segments ends: its segment and the offset past its
    /// last byte; nil when there are no records. One scan of the index.
    static func sealedContentEnd(_ db: Database) throws -> (segment: Int64, end: Int64)? {
        guard
            let last = try GRDB.Row.fetchOne(
                db,
                sql:
                    "SELECT segment, offset + sealed_size FROM records ORDER BY segment DESC, offset + sealed_size DESC LIMIT 1"
            )
        else { return nil }
        let (segment, end): (Int64, Int64) = (try last.decode(atIndex: 0), try last.decode(atIndex: 1))
        return (segment, end)
    }
}

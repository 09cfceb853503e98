#if canImport(Glibc)
internal import Glibc
#endif
public import CaseVaultCore
internal import GRDB
internal import Logging
internal import Synchronization

extension RecordStore {
    /// Shreds a record by the protocol of DESIGN §6: once this returns, its key slot and ciphertext are
    /// overwritten, nothing decrypts it, and reads answer `shredded`. Throws `not-found` for an unknown id
    /// and `shredded` for one already shredded.
    public func shred(_ id: RecordID) throws(CaseVaultError) {
        _ = try self.shred([id])
    }

    /// Shreds several records with one flush per step. Unknown or already shredded ids throw before
    /// anything changes. Returns the metadata of the records shredded.
    @discardableResult
    public func shred(_ ids: [RecordID]) throws(CaseVaultError) -> [RecordMetadata] {
        try self.writes.exclusive { () throws(CaseVaultError) in
            var rows: [Index.Row] = []
            for id in Set(ids).sorted() {
                rows.append(try self.liveRow(id))
            }
            try self.runShred(rows, from: .mark)
            self.logger.info("records shredded", metadata: ["records.count": "\(rows.count)"])
            return rows.map(\.metadata)
        }
    }

    /// Runs the shred protocol from `start` on. The caller holds the writer role.
    func runShred(_ rows: [Index.Row], from start: ShredStep) throws(CaseVaultError) {
        guard !rows.isEmpty else { return }
        let ids = rows.map(\.metadata.id.rawValue)
        for step in ShredStep.steps(from: start) {
            switch step {
            case .mark:
                try self.index.write { db in
                    for id in ids {
                        try db.cachedStatement(sql: "UPDATE records SET state = 'shredding' WHERE id = ?").execute(
                    arguments: [id])
                    }
                }
                self.observe(.shredAfterMark)
            case .overwriteKeySlots:
                for row in rows {
                    try self.slots.scrub(row.slot)
                }
                try self.slots.flush()
                self.observe(.shredAfterSlotOverwrite)
            case .destroyCiphertext:
                for row in rows {
                    try self.segments.overwrite(row.location)
                }
                try self.segments.flush(Set(rows.map(\.location.segment)))
                try self.removeAttachments(rows.map(\.metadata.id))
                self.observe(.shredAfterCiphertextOverwrite)
            case .removeFromIndex:
                let shreddedAt = Self.now()
                try self.index.write { db in
                    for row in rows {
                        let record = row.metadata
                        try db.cachedStatement(sql: "DELETE FROM records WHERE id = ?").execute(
                    arguments: [record.id.rawValue])
                        try db.cachedStatement(sql: "INSERT OR IGNORE INTO free_slots (slot) VALUES (?)").execute(
                    arguments: [row.slot])
                        try db.cachedStatement(sql: """
                                INSERT OR IGNORE INTO shred_ledger (record_id, case_id, type, shredded_at)
                                VALUES (?, ?, ?, ?)
                                """).execute(
                    arguments: [record.id.rawValue, record.caseID.rawValue, record.type.rawValue, shreddedAt]
                        )
                    }
                }
                self.writer.withLock { state in
                    state.slots.free.append(contentsOf: rows.map(\.slot))
                }
                self.observe(.shredAfterIndexRemoval)
            }
        }
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
package import CaseVaultSealing
internal import Foundation
internal import Logging
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

// Reading sealed records: one index snapshot, then the slot and the blob, which the sealing layer opens.
extension RecordStore {
    /// A live record's wrapped key and sealed blob. Throws `shredded` for a shredded record, `not-found`
    /// for an unknown id.
    package func storedRecord(_ id: RecordID) throws(CaseVaultError) -> StoredRecord {
        try self.stored(try self.liveRow(id))
    }

    /// `storedRecord(_:)` once `decide` approves it. One trip to the index (point lookups without a
    /// transaction, each atomic, as `storedRecord(_:)` does) gives the record's metadata, its case and
    /// whether `rosterUID` is on the mediator roster; `decide` sees those and throws to refuse.
    package func storedRecord(
        _ id: RecordID,
        rosterUID: UInt32?,
        decide: (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> StoredRecord {
        // A value kept before the index lost commits is not served after it either (`Index.Loss`).
        guard !self.index.loss.happened else { throw Index.Loss.error }
        let cached = self.liveRows.value(id)
        let generation = self.liveRows.generation
        let kept = self.index.caseAnswers.kept(cached?.metadata.caseID, rosterUID: rosterUID)
        let row: Index.Row?
        let (shredded, summary, onRoster): (Bool, CaseSummary?, Bool)
        if let cached, let answer = kept.answer {
            (row, shredded, summary, onRoster) = (cached, false, answer.summary, answer.onRoster)
        } else {
            (row, shredded, summary, onRoster) = try self.index.lookup { db in
                let row = try cached ?? Index.lookupRow(db, id: id)
                let shredded = row == nil ? try Index.isShredded(db, id: id) : false
                let (summary, onRoster) = try kept.read(db, caseID: row?.metadata.caseID)
                return (row, shredded, summary, onRoster)
            }
        }
        guard let row else {
            if shredded { throw CaseVaultError.recordShredded() }
            throw CaseVaultError.recordNotFound()
        }
        guard row.state == .live else { throw CaseVaultError.recordShredded() }
        guard let summary else {
            throw CaseVaultError(.storageFailure, "the index holds a record whose case is missing")
        }
        try decide(row.metadata, summary, onRoster)
        // Kept once the caller may read it: a refused request leaves nothing behind.
        kept.keep(summary, onRoster)
        if cached == nil { self.liveRows.keep(row, readAfter: generation) }
        return try self.stored(row)
    }

    /// Whether `id`'s shred has begun or is done: a slot or blob that fails to authenticate then failed
    /// because of it.
    package func shredHasBegun(_ id: RecordID) throws(CaseVaultError) -> Bool {
        try self.index.read { db in
            try Index.isShredded(db, id: id) || Index.row(db, id: id)?.state == .shredding
        }
    }

    /// A row's slot and blob, read from their files.
    private func stored(_ row: Index.Row) throws(CaseVaultError) -> StoredRecord {
        do throws(CaseVaultError) {
            let key = StoredKey(metadata: row.metadata, slot: row.slot, wrapped: try self.slots.read(row.slot))
            return StoredRecord(key: key, blob: try self.segments.read(row.location))
        } catch {
            // A shred that ran while we read may have moved the files under us; report it as what it is.
            if try self.shredHasBegun(row.metadata.id) {
                throw CaseVaultError.recordShredded()
            }
            throw error
        }
    }

    /// The record's metadata, without opening its content.
    package func metadata(_ id: RecordID) throws(CaseVaultError) -> RecordMetadata {
        try self.liveRow(id).metadata
    }

    /// Metadata of every live record of a case, in the order they were filed.
    package func records(caseID: CaseID) throws(CaseVaultError) -> [RecordMetadata] {
        try self.index.read { db in try Index.rows(db, caseID: caseID) }.filter { $0.state == .live }.map(\.metadata)
    }

    /// Whether `id` names a record that was shredded.
    package func isShredded(_ id: RecordID) throws(CaseVaultError) -> Bool {
        try self.index.read { db in try Index.isShredded(db, id: id) }
    }

    /// The row of live record `id`, from `liveRows` when a get read it already, unless `fromIndex` (what a
    /// shred marks is read from the index itself).
    func liveRow(_ id: RecordID, fromIndex: Bool = false) throws(CaseVaultError) -> Index.Row {
        // A row kept before the index lost commits is not served after it either (`Index.Loss`).
        guard !self.index.loss.happened else { throw Index.Loss.error }
        if !fromIndex, let row = self.liveRows.value(id) { return row }
        let generation = self.liveRows.generation
        // Row first, ledger second: a shred deletes the row and writes the ledger in one transaction, so a
        // reader that misses the row finds the ledger entry.
        let (row, shredded) = try self.index.lookup { db in
            let row = try Index.lookupRow(db, id: id)
            return (row, row == nil ? try Index.isShredded(db, id: id) : false)
        }
        guard let row else {
            if shredded { throw CaseVaultError.recordShredded() }
            throw CaseVaultError.recordNotFound()
        }
        guard row.state == .live else { throw CaseVaultError.recordShredded() }
        self.liveRows.keep(row, readAfter: generation)
        return row
    }
}

public import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Foundation
internal import Logging
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

// Reading records: one index snapshot, the slot and blob authenticated before any content is returned.
extension RecordStore {
    /// The record with its decrypted content. Throws `shredded` for a shredded record, `not-found` for an
    /// unknown id, `integrity-failure` when its slot or blob does not authenticate.
    public func get(_ id: RecordID) throws(CaseVaultError) -> CaseVaultCore.Record {
        try self.open(try self.liveRow(id))
    }

    /// Opens a record only once `decide` approves it. One trip to the index (point lookups without a
    /// transaction, each atomic, as `get` does) gives the record's metadata, its case and whether
    /// `rosterUID` is on the mediator roster; `decide` sees those, never content, and throws to refuse.
    /// Throws `not-found` or `shredded` as `get` does.
    public func read(
        _ id: RecordID,
        rosterUID: UInt32?,
        decide: (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> CaseVaultCore.Record {
        let (row, shredded, summary, onRoster) = try self.index.lookup { db in
            let row = try Index.row(db, id: id)
            let shredded = row == nil ? try Index.isShredded(db, id: id) : false
            let summary = try row.flatMap { row in try Index.caseSummary(db, id: row.metadata.caseID) }
            let onRoster = try rosterUID.map { uid in try Index.isOnRoster(db, uid: uid) } ?? false
            return (row, shredded, summary, onRoster)
        }
        guard let row else {
            if shredded { throw Self.shreddedError() }
            throw CaseVaultError(.notFound, "no record has this id; check the id")
        }
        guard row.state == .live else { throw Self.shreddedError() }
        guard let summary else {
            throw CaseVaultError(.storageFailure, "the index holds a record whose case is missing")
        }
        try decide(row.metadata, summary, onRoster)
        return try self.open(row)
    }

    /// Decrypts a row's content through the barrier.
    func open(_ row: Index.Row) throws(CaseVaultError) -> CaseVaultCore.Record {
        let id = row.metadata.id
        do throws(CaseVaultError) {
            let slotBytes = try self.slots.read(row.slot)
            let dataKey = try self.barrier.unwrap(slotBytes: slotBytes, recordID: id, slot: row.slot)
            let sealed = try self.segments.read(row.location)
            let content = try self.barrier.open(blob: sealed, dataKey: dataKey, record: row.metadata)
            return CaseVaultCore.Record(metadata: row.metadata, content: content)
        } catch {
            // A shred that ran while we read makes the slot or blob fail; report it as what it is.
            if try self.index.read({ db in
                try Index.isShredded(db, id: id) || Index.row(db, id: id)?.state == .shredding
            }) {
                throw Self.shreddedError()
            }
            throw error
        }
    }

    /// The record's metadata, without opening its content.
    public func metadata(_ id: RecordID) throws(CaseVaultError) -> RecordMetadata {
        try self.liveRow(id).metadata
    }

    /// Metadata of every live record of a case, in the order they were filed.
    public func records(caseID: CaseID) throws(CaseVaultError) -> [RecordMetadata] {
        try self.index.read { db in try Index.rows(db, caseID: caseID) }.filter { $0.state == .live }.map(\.metadata)
    }

    /// Whether `id` names a record that was shredded.
    public func isShredded(_ id: RecordID) throws(CaseVaultError) -> Bool {
        try self.index.read { db in try Index.isShredded(db, id: id) }
    }

    func liveRow(_ id: RecordID) throws(CaseVaultError) -> Index.Row {
        // Row first, ledger second: a shred deletes the row and writes the ledger in one transaction, so a
        // reader that misses the row finds the ledger entry.
        let (row, shredded) = try self.index.lookup { db in
            let row = try Index.row(db, id: id)
            return (row, row == nil ? try Index.isShredded(db, id: id) : false)
        }
        guard let row else {
            if shredded { throw Self.shreddedError() }
            throw CaseVaultError(.notFound, "no record has this id; check the id")
        }
        guard row.state == .live else { throw Self.shreddedError() }
        return row
    }

    static func shreddedError() -> CaseVaultError {
        CaseVaultError(.shredded, "the record was shredded and can never be read again")
    }
}

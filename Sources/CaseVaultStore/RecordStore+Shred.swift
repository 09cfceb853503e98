#if canImport(Glibc)
internal import Glibc
#endif
public import CaseVaultCore
internal import CaseVaultCrypto
internal import Foundation
internal import GRDB
internal import Logging
internal import Synchronization

extension RecordStore {
    /// Shreds a record by the protocol of DESIGN §6: once this returns, its key slot and ciphertext are
    /// overwritten, nothing decrypts it, and reads answer `shredded`. Throws `not-found` for an unknown id
    /// and `shredded` for one already shredded.
    public func shred(_ id: RecordID, order: ShredOrder = ShredOrder(method: .request, authority: .daemon)) throws(CaseVaultError) {
        _ = try self.shred([id], order: order)
    }

    /// Shreds several records with one flush per step. Unknown or already shredded ids, and records a
    /// legal hold covers (`held`), throw before anything changes. Returns the metadata of the records shredded.
    @discardableResult
    public func shred(
        _ ids: [RecordID],
        order: ShredOrder = ShredOrder(method: .request, authority: .daemon)
    ) throws(CaseVaultError) -> [RecordMetadata] {
        try self.writes.exclusive { () throws(CaseVaultError) in
            var rows: [Index.Row] = []
            for id in Set(ids).sorted() {
                rows.append(try self.liveRow(id))
            }
            try self.index.read { db in try self.refuseHeld(rows, db) }
            try self.runShred(rows, from: .mark, order: order)
            self.logger.info("records shredded", metadata: ["records.count": "\(rows.count)"])
            return rows.map(\.metadata)
        }
    }

    /// Runs the shred protocol from `start` on. The caller holds the writer role.
    /// `order` is recorded with the mark; a resumed shred finds it there. Returns the certificates issued.
    @discardableResult
    func runShred(_ rows: [Index.Row], from start: ShredStep, order: ShredOrder? = nil) throws(CaseVaultError) -> Int {
        guard !rows.isEmpty else { return 0 }
        var certificates = 0
        let ids = rows.map(\.metadata.id.rawValue)
        for step in ShredStep.steps(from: start) {
            switch step {
            case .mark:
                try self.index.write { db in
                    for id in ids {
                        try db.cachedStatement(sql: "UPDATE records SET state = 'shredding' WHERE id = ?").execute(
                    arguments: [id])
                    }
                    if let order {
                        try Self.recordOrder(order, for: rows.map(\.metadata.id), db)
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
                let shreddedAt = self.now()
                try self.index.write { db in
                    certificates = try self.issueCertificates(for: rows.map(\.metadata), at: shreddedAt, db)
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
        return certificates
    }
}

// MARK: Destruction certificates

extension RecordStore {
    /// Keeps who ordered the shred of `ids`, in the transaction that marks them.
    static func recordOrder(_ order: ShredOrder, for ids: [RecordID], _ db: Database) throws {
        for id in ids {
            try db.cachedStatement(
                sql: "INSERT OR REPLACE INTO shred_orders (record_id, method, uid, role, reason) VALUES (?, ?, ?, ?, ?)"
            ).execute(arguments: [id.rawValue, order.method.rawValue, order.authority.uid.map { Int64($0) }, order.authority.role, order.reason])
        }
    }

    /// Issues one signed certificate per case and order for `records`, in the transaction that removes
    /// them from the index: no record leaves the index without its certificate.
    func issueCertificates(for records: [RecordMetadata], at time: Int64, _ db: Database) throws -> Int {
        var groups: [String: (order: ShredOrder, caseID: CaseID, records: [(RecordID, RecordType)])] = [:]
        for record in records {
            let row = try GRDB.Row.fetchOne(
                db.cachedStatement(sql: "SELECT method, uid, role, reason FROM shred_orders WHERE record_id = ?"),
                arguments: [record.id.rawValue]
            )
            let order = row.map { row in
                ShredOrder(
                    method: ShredMethod(rawValue: row[0]) ?? .recovery,
                    authority: Authority(uid: (row[1] as Int64?).map { UInt32($0) }, role: row[2]),
                    reason: row[3]
                )
            } ?? ShredOrder(method: .recovery, authority: .daemon)
            let key = "\(record.caseID.rawValue)|\(order.method.rawValue)|\(order.authority.uid.map(String.init) ?? "-")|\(order.authority.role)|\(order.reason ?? "")"
            groups[key, default: (order, record.caseID, [])].records.append((record.id, record.type))
        }
        for (_, group) in groups.sorted(by: { $0.key < $1.key }) {
            let id = CaseID(bytes: Random.bytes(count: CaseID.byteCount)).rawValue
            let certificate = DestructionCertificate(
                id: id, caseID: group.caseID, issuedAt: Timestamp.rfc3339(time), order: group.order, records: group.records
            )
            let document = certificate.document(signedWith: self.barrier.signCertificate)
            try db.cachedStatement(
                sql: "INSERT INTO certificates (id, case_id, issued_at, document) VALUES (?, ?, ?, ?)"
            ).execute(arguments: [id, group.caseID.rawValue, time, Data(document)])
        }
        for record in records {
            try db.cachedStatement(sql: "DELETE FROM shred_orders WHERE record_id = ?").execute(arguments: [record.id.rawValue])
        }
        return groups.count
    }

    /// The vault's certificate public key (Ed25519, 32 bytes).
    public var certificatePublicKey: [UInt8] { self.barrier.certificatePublicKey }

    /// Certificate documents, oldest first; of one case when `caseID` is given.
    public func certificates(caseID: CaseID? = nil) throws(CaseVaultError) -> [[UInt8]] {
        try self.index.read { db in
            if let caseID {
                return try Data.fetchAll(
                    db, sql: "SELECT document FROM certificates WHERE case_id = ? ORDER BY seq", arguments: [caseID.rawValue]
                ).map { [UInt8]($0) }
            }
            return try Data.fetchAll(db, sql: "SELECT document FROM certificates ORDER BY seq").map { [UInt8]($0) }
        }
    }

    /// One certificate document; `not-found` for an unknown id.
    public func certificate(_ id: String) throws(CaseVaultError) -> [UInt8] {
        guard let document = try self.index.lookup({ db in
            try Data.fetchOne(db, sql: "SELECT document FROM certificates WHERE id = ?", arguments: [id])
        }) else {
            throw CaseVaultError(.notFound, "no certificate has this id; list them with GET /v1/certificates")
        }
        return [UInt8](document)
    }
}

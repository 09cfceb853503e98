public import CaseVaultCore
internal import CaseVaultCrypto
internal import Foundation
internal import GRDB
internal import Logging
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

extension RecordStore {
    /// Shreds a record by the protocol of DESIGN §6: once this returns, its key slot and ciphertext are
    /// overwritten, nothing decrypts it, and reads answer `shredded`. Throws `not-found` for an unknown id
    /// and `shredded` for one already shredded.
    public func shred(_ id: RecordID, order: ShredOrder = ShredOrder(method: .request, authority: .daemon))
        throws(CaseVaultError)
    {
        _ = try self.shred([id], order: order)
    }

    /// Shreds several records with one flush per step. Unknown or already shredded ids, and records a
    /// legal hold covers (`held`), throw before anything changes. Returns the metadata of the records shredded.
    @discardableResult
    public func shred(
        _ ids: [RecordID],
        order: ShredOrder = ShredOrder(method: .request, authority: .daemon)
    ) throws(CaseVaultError) -> [RecordMetadata] {
        try self.asWriter { () throws(CaseVaultError) in
            // First what a failure left half done: a repeated shred of the same record finishes it.
            self.retryPendingShreds()
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
        for step in ShredStep.steps(from: start) {
            switch step {
            case .mark:
                try self.index.write { db in
                    try Self.markShredding(rows.map(\.metadata.id), order: order, db)
                }
                self.observe(.shredAfterMark)
            case .overwriteKeySlots:
                // In file order, so that the flush writes runs of blocks rather than scattered ones.
                for slot in rows.map(\.slot).sorted() {
                    try self.slots.scrub(slot)
                }
                try self.slots.flush()
                self.observe(.shredAfterSlotOverwrite)
            case .destroyCiphertext:
                let stream = OverwriteStream()
                for location in rows.map(\.location).sorted(by: { ($0.segment, $0.offset) < ($1.segment, $1.offset) }) {
                    try self.segments.overwrite(location, from: stream)
                }
                try self.segments.flush(Set(rows.map(\.location.segment)))
                try self.removeAttachments(rows.map(\.metadata.id))
                self.observe(.shredAfterCiphertextOverwrite)
            case .removeFromIndex:
                let shreddedAt = self.now()
                try self.index.write { db in
                    certificates = try self.issueCertificates(for: rows.map(\.metadata), at: shreddedAt, db)
                    try Index.inChunks(rows.map(\.metadata.id.rawValue)) { placeholders, arguments in
                        try db.execute(
                            sql:
                                "INSERT OR IGNORE INTO free_slots (slot) SELECT slot FROM records WHERE id IN (\(placeholders))",
                            arguments: arguments
                        )
                        try db.execute(
                            sql: """
                                INSERT OR IGNORE INTO shred_ledger (record_id, case_id, type, shredded_at)
                                SELECT id, case_id, type, ? FROM records WHERE id IN (\(placeholders))
                                """,
                            arguments: [shreddedAt] + arguments
                        )
                        try db.execute(sql: "DELETE FROM records WHERE id IN (\(placeholders))", arguments: arguments)
                    }
                    // Orders no record still waits on.
                    try db.execute(
                        sql: """
                            DELETE FROM shred_order_list WHERE NOT EXISTS (
                                SELECT 1 FROM records WHERE state = 'shredding' AND shred_order = shred_order_list.id
                            )
                            """
                    )
                }
                self.writer.withLock { state in
                    state.slots.free.append(contentsOf: rows.map(\.slot))
                }
                // Before the shred returns, so that an acknowledged shred survives the loss of the data directory.
                self.appendToShredLedgerCopy(rows, shreddedAt: shreddedAt)
                // The rows are gone from the database's pages; their images in the WAL go too. The shred is
                // done either way: a WAL left behind is truncated by the next shred, close or open.
                do {
                    try self.index.truncateWAL()
                } catch {
                    self.logger.warning(
                        "the index's WAL could not be truncated after a shred",
                        metadata: ["error.code": "\(error.code.rawValue)"])
                }
                self.observe(.shredAfterIndexRemoval)
            }
        }
        return certificates
    }
}

extension RecordStore {
    /// Finishes every shred a failure left marked (a write or flush that failed after the mark): before
    /// any new shred, so that a failed one is retried while the daemon runs, not only at the next open.
    /// Its overwrites are written again, never trusted to a page cache a failed flush may have dropped.
    /// Returns the certificates it issued. Recovery at open calls it and refuses to open if it fails.
    @discardableResult
    func finishPendingShreds() throws(CaseVaultError) -> Int {
        let pending = try self.index.read { db in
            try GRDB.Row.fetchAll(db, sql: "SELECT \(Index.columns) FROM records WHERE state = 'shredding'").map(
                Index.decode)
        }
        guard !pending.isEmpty else { return 0 }
        self.logger.notice(
            "finishing shreds a failure or a crash interrupted", metadata: ["records.count": "\(pending.count)"])
        return try self.runShred(pending, from: ShredStep.resumePoint)
    }

    /// `finishPendingShreds` before a shred, a sweep batch or a final agreement's destruction, under the
    /// writer role. A failure is logged and left for the next try: one record whose shred keeps failing
    /// must not stop every other erasure. Returns the certificates it issued.
    @discardableResult
    func retryPendingShreds() -> Int {
        do {
            return try self.finishPendingShreds()
        } catch {
            self.logger.error(
                "a shred a failure interrupted could not be finished yet",
                metadata: ["error.code": "\(error.code.rawValue)"])
            return 0
        }
    }
}

// MARK: Destruction certificates

extension RecordStore {
    /// Marks `ids` `shredding`, with who ordered it: one order row, named by each record in the same UPDATE
    /// that marks it, so that recovery certifies the shred as ordered.
    static func markShredding(_ ids: [RecordID], order: ShredOrder?, _ db: Database) throws {
        guard !ids.isEmpty else { return }
        var orderID: Int64?
        if let order {
            try db.cachedStatement(sql: "INSERT INTO shred_order_list (method, uid, role, reason) VALUES (?, ?, ?, ?)")
                .execute(arguments: [
                    order.method.rawValue, order.authority.uid.map { Int64($0) }, order.authority.role, order.reason,
                ])
            orderID = db.lastInsertedRowID
        }
        try Index.inChunks(ids.map(\.rawValue)) { placeholders, arguments in
            try db.execute(
                sql:
                    "UPDATE records SET state = 'shredding', shred_order = coalesce(?, shred_order) WHERE id IN (\(placeholders))",
                arguments: [orderID] + arguments
            )
        }
    }

    /// Issues one signed certificate per case and order for `records`, in the transaction that removes
    /// them from the index: no record leaves the index without its certificate.
    func issueCertificates(for records: [RecordMetadata], at time: Int64, _ db: Database) throws -> Int {
        var orders: [Int64: ShredOrder] = [:]
        var groups: [String: (order: ShredOrder, caseID: CaseID, records: [(RecordID, RecordType)])] = [:]
        var orderOf: [String: Int64] = [:]
        try Index.inChunks(records.map(\.id.rawValue)) { placeholders, arguments in
            for row in try GRDB.Row.fetchAll(
                db,
                sql: "SELECT id, shred_order FROM records WHERE shred_order IS NOT NULL AND id IN (\(placeholders))",
                arguments: arguments
            ) {
                orderOf[row[0]] = row[1]
            }
        }
        for record in records {
            let orderID = orderOf[record.id.rawValue]
            var order = ShredOrder(method: .recovery, authority: .daemon)
            if let orderID {
                if orders[orderID] == nil,
                    let row = try GRDB.Row.fetchOne(
                        db, sql: "SELECT method, uid, role, reason FROM shred_order_list WHERE id = ?",
                        arguments: [orderID]
                    )
                {
                    orders[orderID] = ShredOrder(
                        method: ShredMethod(rawValue: row[0]) ?? .recovery,
                        authority: Authority(uid: (row[1] as Int64?).map { UInt32($0) }, role: row[2]),
                        reason: row[3]
                    )
                }
                order = orders[orderID] ?? order
            }
            let key = "\(record.caseID.rawValue)|\(orderID.map(String.init) ?? "-")"
            groups[key, default: (order, record.caseID, [])].records.append((record.id, record.type))
        }
        for (_, group) in groups.sorted(by: { $0.key < $1.key }) {
            let id = CaseID(bytes: Random.bytes(count: CaseID.byteCount)).rawValue
            let certificate = DestructionCertificate(
                id: id, caseID: group.caseID, issuedAt: Timestamp.rfc3339(time), order: group.order,
                records: group.records
            )
            let document = certificate.document(signedWith: self.barrier.signCertificate)
            try db.cachedStatement(
                sql: "INSERT INTO certificates (id, case_id, issued_at, document) VALUES (?, ?, ?, ?)"
            ).execute(arguments: [id, group.caseID.rawValue, time, Data(document)])
        }
        return groups.count
    }

    /// The vault's certificate public key (Ed25519, 32 bytes).
    public var certificatePublicKey: [UInt8] { self.barrier.certificatePublicKey }

    /// Signs the audit log's checkpoints under the audit subkey (derived from the root key).
    public var auditSigner: AuditSigner { self.barrier.auditSigner }

    /// The data directory's audit folder (`audit/`), created 0700 with the store.
    public var auditDirectory: String { self.directory.auditPath }

    /// Certificate documents, oldest first; of one case when `caseID` is given.
    public func certificates(caseID: CaseID? = nil) throws(CaseVaultError) -> [[UInt8]] {
        try self.index.read { db in
            if let caseID {
                return try Data.fetchAll(
                    db, sql: "SELECT document FROM certificates WHERE case_id = ? ORDER BY seq",
                    arguments: [caseID.rawValue]
                ).map { [UInt8]($0) }
            }
            return try Data.fetchAll(db, sql: "SELECT document FROM certificates ORDER BY seq").map { [UInt8]($0) }
        }
    }

    /// One certificate document; `not-found` for an unknown id.
    public func certificate(_ id: String) throws(CaseVaultError) -> [UInt8] {
        guard
            let document = try self.index.lookup({ db in
                try Data.fetchOne(db, sql: "SELECT document FROM certificates WHERE id = ?", arguments: [id])
            })
        else {
            throw CaseVaultError(.notFound, "no certificate has this id; list them with GET /v1/certificates")
        }
        return [UInt8](document)
    }
}

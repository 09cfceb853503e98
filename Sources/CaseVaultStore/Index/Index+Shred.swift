internal import CaseVaultCore
internal import CaseVaultCrypto
internal import Foundation
internal import GRDB

// The shred protocol's statements (RecordStore+Shred), destruction certificates and the shred ledger
// (RecordStore+Ledger). The callers keep the transactions; each function here runs inside the one it is given.
extension Index {
    // MARK: Shred protocol

    /// Marks `ids` `shredding`, with who ordered it: one order row, named by each record in the same UPDATE
    /// that marks it, so that recovery certifies the shred as ordered. Returns the order row's id, for the
    /// later sections of the same shred (`markShredding(_:_:orderID:)`), so that its records share one.
    @discardableResult
    static func markShredding(_ db: Database, _ ids: [RecordID], order: ShredOrder?) throws -> Int64? {
        guard !ids.isEmpty else { return nil }
        var orderID: Int64?
        if let order {
            try db.cachedStatement(sql: "INSERT INTO shred_order_list (method, uid, role, reason) VALUES (?, ?, ?, ?)")
                .execute(arguments: [
                    order.method.rawValue, order.authority.uid.map { Int64($0) }, order.authority.role, order.reason,
                ])
            orderID = db.lastInsertedRowID
        }
        try Self.markShredding(db, ids, orderID: orderID)
        return orderID
    }

    /// Marks those of `ids` still live `shredding` under the order row `orderID` (already written; `nil`
    /// leaves each record's order as it is). A record already marked keeps the shred that marked it: a
    /// closing that lists a note a sweep has marked meanwhile does not take it over.
    static func markShredding(_ db: Database, _ ids: [RecordID], orderID: Int64?) throws {
        try Self.inChunks(ids.map(\.rawValue)) { placeholders, arguments in
            try db.execute(
                sql: """
                    UPDATE records SET state = 'shredding', shred_order = coalesce(?, shred_order)
                    WHERE state = 'live' AND id IN (\(placeholders))
                    """,
                arguments: [orderID] + arguments
            )
        }
    }

    /// The rows of every record marked `shredding`: the shreds a failure or a crash left unfinished.
    static func shreddingRows(_ db: Database) throws -> [Row] {
        try GRDB.Row.fetchAll(db, sql: "SELECT \(Self.columns) FROM records WHERE state = 'shredding'").map(
            Self.decode)
    }

    /// Removes the records `ids` from the index: their slots go on the free list, and each enters the shred
    /// ledger at `shreddedAt` with its case and type.
    static func removeShredded(_ db: Database, _ ids: [RecordID], shreddedAt: Int64) throws {
        try Self.inChunks(ids.map(\.rawValue)) { placeholders, arguments in
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
    }

    /// Deletes the shred orders no record still waits on (none of the records marked `shredding` names them).
    static func deleteFinishedShredOrders(_ db: Database) throws {
        try db.execute(
            sql: """
                DELETE FROM shred_order_list WHERE NOT EXISTS (
                    SELECT 1 FROM records WHERE state = 'shredding' AND shred_order = shred_order_list.id
                )
                """
        )
    }

    // MARK: Destruction certificates

    /// Issues one certificate per case and order for `records`, signed with `sign`, in the transaction that
    /// removes them from the index: no record leaves the index without its certificate. Returns how many.
    static func issueCertificates(
        _ db: Database,
        for records: [RecordMetadata],
        at time: Int64,
        signedWith sign: ([UInt8]) -> [UInt8]
    ) throws -> Int {
        var orders: [Int64: ShredOrder] = [:]
        var groups: [String: (order: ShredOrder, caseID: CaseID, records: [(RecordID, RecordType)])] = [:]
        var orderOf: [String: Int64] = [:]
        try Self.inChunks(records.map(\.id.rawValue)) { placeholders, arguments in
            for row in try GRDB.Row.fetchAll(
                db,
                sql: "SELECT id, shred_order FROM records WHERE shred_order IS NOT NULL AND id IN (\(placeholders))",
                arguments: arguments
            ) {
                orderOf[try row.decode(atIndex: 0)] = try row.decode(atIndex: 1)
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
                        method: ShredMethod(rawValue: try row.decode(atIndex: 0)) ?? .recovery,
                        authority: Authority(
                            uid: try row.decode(atIndex: 1) as UInt32?,
                            role: try row.decode(atIndex: 2)),
                        reason: try row.decode(atIndex: 3)
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
            let document = certificate.document(signedWith: sign)
            try db.cachedStatement(
                sql: "INSERT INTO certificates (id, case_id, issued_at, document) VALUES (?, ?, ?, ?)"
            ).execute(arguments: [id, group.caseID.rawValue, time, Data(document)])
        }
        return groups.count
    }

    /// Certificate documents, oldest first; of one case when `caseID` is given.
    static func certificateDocuments(_ db: Database, caseID: CaseID?) throws -> [[UInt8]] {
        if let caseID {
            return try Data.fetchAll(
                db, sql: "SELECT document FROM certificates WHERE case_id = ? ORDER BY seq",
                arguments: [caseID.rawValue]
            ).map { [UInt8]($0) }
        }
        return try Data.fetchAll(db, sql: "SELECT document FROM certificates ORDER BY seq").map { [UInt8]($0) }
    }

    /// The document of the certificate `id`, or `nil` for an unknown id.
    static func certificateDocument(_ db: Database, id: String) throws -> [UInt8]? {
        try Data.fetchOne(db, sql: "SELECT document FROM certificates WHERE id = ?", arguments: [id]).map {
            [UInt8]($0)
        }
    }

    // MARK: Shred ledger

    /// Every row of `shred_ledger`, oldest first.
    static func ledgerEntries(_ db: Database) throws -> [ShredLedgerEntry] {
        let sql = "SELECT record_id, case_id, type, shredded_at FROM shred_ledger ORDER BY shredded_at, record_id"
        return try GRDB.Row.fetchAll(db, sql: sql)
            .map { row in
                try ShredLedgerEntry(
                    recordID: try row.decode(atIndex: 0) as String, caseID: try row.decode(atIndex: 1) as String,
                    type: try row.decode(atIndex: 2) as String,
                    shreddedAt: try row.decode(atIndex: 3) as Int64
                )
            }
    }

    /// Every row of `shred_ledger` of the index file at `path`, opened read-only for this one read.
    static func ledgerEntries(readOnlyAt path: String) throws -> [ShredLedgerEntry] {
        var configuration = GRDB.Configuration()
        configuration.readonly = true
        let index = try DatabaseQueue(path: path, configuration: configuration)
        return try index.read { db in try Self.ledgerEntries(db) }
    }

    /// How many entries the shred ledger holds.
    static func ledgerCount(_ db: Database) throws -> Int {
        try Int.fetchOne(db, sql: "SELECT count(*) FROM shred_ledger") ?? 0
    }

    /// Enters `entries` in the shred ledger, each at its own time or at `time` when it gives none (`-` for a
    /// case or type it does not give); an id the ledger already holds keeps its entry.
    static func enterInLedger(_ db: Database, _ entries: [ShredLedgerEntry], defaultTime time: Int64) throws {
        let insert = try db.cachedStatement(
            sql:
                "INSERT OR IGNORE INTO shred_ledger (record_id, case_id, type, shredded_at) VALUES (?, ?, ?, ?)"
        )
        for entry in entries {
            try insert.execute(
                arguments: [entry.recordID.rawValue, entry.caseText, entry.typeText, entry.shreddedAt ?? time]
            )
        }
    }
}

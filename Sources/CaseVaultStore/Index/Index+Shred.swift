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
        let orderID = try order.map { order in try Self.insertShredOrder(db, order, open: false) }
        try Self.markShredding(db, ids, orderID: orderID)
        return orderID
    }

    /// Writes the order row of a shred and returns its id. An `open` order (a sweep's, across its batches)
    /// is not certified until `closeShredOrder` closes it, however many of its records are already removed.
    static func insertShredOrder(_ db: Database, _ order: ShredOrder, open: Bool) throws -> Int64 {
        try db.cachedStatement(
            sql: "INSERT INTO shred_order_list (method, uid, role, reason, open) VALUES (?, ?, ?, ?, ?)"
        ).execute(arguments: [
            order.method.rawValue, order.authority.uid.map { Int64($0) }, order.authority.role, order.reason,
            open ? 1 : 0,
        ])
        return db.lastInsertedRowID
    }

    /// Closes the order `id`: once none of its records waits in `shredding`,
    /// `RecordStore.certifyFinishedOrders` certifies it. Records still marked under it (a sweep's batch that
    /// failed) go to a new closed order of the same method, authority and reason, so that what the order
    /// shredded is certified now, not once they are.
    static func closeShredOrder(_ db: Database, _ id: Int64) throws {
        try db.execute(sql: "UPDATE shred_order_list SET open = 0 WHERE id = ?", arguments: [id])
        guard
            try Bool.fetchOne(
                db, sql: "SELECT 1 FROM records WHERE state = 'shredding' AND shred_order = ? LIMIT 1", arguments: [id]
            ) ?? false
        else { return }
        try db.execute(
            sql: """
                INSERT INTO shred_order_list (method, uid, role, reason, open)
                SELECT method, uid, role, reason, 0 FROM shred_order_list WHERE id = ?
                """,
            arguments: [id])
        try db.execute(
            sql: "UPDATE records SET shred_order = ? WHERE state = 'shredding' AND shred_order = ?",
            arguments: [db.lastInsertedRowID, id])
    }

    /// Closes every open order: at open, where no sweep runs, an open order is one a crash or a failure
    /// interrupted. Removed records whose order row is gone (a damaged index) lose the order, to be
    /// certified as shredded by recovery rather than never. Returns whether it deleted rows of records
    /// already certified (their images are then in the WAL).
    static func closeOpenShredOrders(_ db: Database) throws -> Bool {
        try db.execute(sql: "UPDATE shred_order_list SET open = 0 WHERE open = 1")
        // First, the rows of cases already certified as orphans, or under an order whose row is gone, go with
        // those lists (a certification a crash cut short before its rows went): so the orphans made below,
        // and the ones left, are certified afresh, and none twice.
        try db.execute(
            sql: """
                DELETE FROM shred_certifying
                WHERE (order_id IS NULL OR order_id NOT IN (SELECT id FROM shred_order_list)) AND EXISTS (
                    SELECT 1 FROM shred_certified c
                    WHERE c.order_id = coalesce(shred_certifying.order_id, 0) AND c.case_id = shred_certifying.case_id
                )
                """)
        let removed = db.changesCount > 0
        try db.execute(
            sql: """
                DELETE FROM shred_certified WHERE order_id = 0 OR order_id NOT IN (SELECT id FROM shred_order_list);
                UPDATE shred_certifying SET order_id = NULL
                WHERE order_id IS NOT NULL AND order_id NOT IN (SELECT id FROM shred_order_list);
                """)
        return removed
    }

    /// Marks those of `ids` still live `shredding` under the order row `orderID` (already written; `nil`
    /// leaves each record's order as it is). A record already marked keeps the shred that marked it: a
    /// closing that lists a note a sweep has marked meanwhile does not take it over.
    static func markShredding(_ db: Database, _ ids: [RecordID], orderID: Int64?) throws {
        try Self.markShredding(db, column: "id", ids.map(\.rawValue), orderID: orderID)
    }

    /// `markShredding(_:_:orderID:)` for rows already read, named by rowid.
    static func markShredding(_ db: Database, _ rows: [Row], orderID: Int64?) throws {
        try Self.markShredding(db, column: "seq", rows.map(\.seq), orderID: orderID)
    }

    private static func markShredding(
        _ db: Database, column: String, _ keys: [some DatabaseValueConvertible], orderID: Int64?
    ) throws {
        try Self.inChunks(keys) { placeholders, arguments in
            try Self.statement(
                db, inChunk: placeholders,
                """
                UPDATE records SET state = 'shredding', shred_order = coalesce(?, shred_order)
                WHERE state = 'live' AND \(column) IN (\(placeholders))
                """
            ).execute(arguments: [orderID] + arguments)
        }
    }

    /// The rows of every record marked `shredding`: the shreds a failure or a crash left unfinished.
    static func shreddingRows(_ db: Database) throws -> [Row] {
        try GRDB.Row.fetchAll(db, sql: "SELECT \(Self.columns) FROM records WHERE state = 'shredding' ORDER BY seq")
            .map(Self.decode)
    }

    /// Removes the records of `rows` from the index: their slots go on the free list, each enters the shred
    /// ledger at `shreddedAt` with its case and type, and waits in `shred_certifying` for its order to finish
    /// (of no order when its order row is gone, from a damaged index: certified as shredded by recovery)
    /// (`RecordStore.certifyFinishedOrders`, as the next step of the same shred, or at recovery). By rowid:
    /// four statements that each looked every record up by its id cost most of a sweep's removal.
    static func removeShredded(_ db: Database, _ rows: [Row], shreddedAt: Int64) throws {
        try Self.inChunks(rows.map(\.seq)) { placeholders, arguments in
            try Self.statement(
                db, inChunk: placeholders,
                "INSERT OR IGNORE INTO free_slots (slot) SELECT slot FROM records WHERE seq IN (\(placeholders))"
            ).execute(arguments: arguments)
            try Self.statement(
                db, inChunk: placeholders,
                """
                INSERT OR IGNORE INTO shred_ledger (record_id, case_id, type, shredded_at)
                SELECT id, case_id, type, ? FROM records WHERE seq IN (\(placeholders))
                """
            ).execute(arguments: [shreddedAt] + arguments)
            try Self.statement(
                db, inChunk: placeholders,
                """
                INSERT INTO shred_certifying (record_id, order_id, case_id, type)
                SELECT id, (SELECT id FROM shred_order_list WHERE id = shred_order), case_id, type
                FROM records WHERE seq IN (\(placeholders))
                """
            ).execute(arguments: arguments)
            try Self.statement(db, inChunk: placeholders, "DELETE FROM records WHERE seq IN (\(placeholders))").execute(
                arguments: arguments)
        }
    }

    // MARK: Destruction certificates

    /// The removed records of the finished shred orders, which wait in `shred_certifying` for their
    /// certificates: one per case and order. An order is finished once it is closed and none of its records
    /// waits in `shredding`. Removed records of no order (their order row gone, from a damaged index: made
    /// orphans at open) are certified as shredded by recovery.
    struct CertificationPlan {
        struct Order {
            /// `nil` for the orphans' order, which has no row.
            let id: Int64?
            let order: ShredOrder
            /// The cases not yet certified under the order (`shred_certified` lists the others) and their
            /// records, last case id first: each is taken from the end.
            var cases: [(caseID: CaseID, records: [(id: RecordID, type: RecordType)])]
            /// Every row the order has in `shred_certifying`, its certified cases' too, in the table's order:
            /// they go once every case is certified, `removed` of them so far.
            let rows: [(seq: Int64, id: RecordID)]
            var removed = 0

            /// The order's key in `shred_certified`: its id, 0 for the orphans'.
            var key: Int64 { self.id ?? 0 }
        }

        /// The orders, last first: each is taken from the end.
        var orders: [Order]
        /// Certificates were issued since the commit began (`beginCommit`); and an order whose cases are all
        /// certified, with more rows waiting than the section can still remove, leaves their removal to the
        /// next commit (`commitDue`): a sweep's certificates do not wait for the removal of its hundred
        /// thousand rows, and a crash between the two leaves the list of its certified cases to recovery.
        var issuedInCommit = false
        var commitDue = false

        var isEmpty: Bool { self.orders.isEmpty }

        mutating func beginCommit() {
            (self.issuedInCommit, self.commitDue) = (false, false)
        }
    }

    /// The finished orders and their removed records, by case (`CertificationPlan`). A case's records lie
    /// among every other case's in a sweep's order, so they are grouped here, from one query per order over
    /// its rows in `shred_certifying_by_order`, which a removal appends to: an index keyed by the order's
    /// cases made each removal write a page of it per case it touched (a tenth or so of all a sweep wrote to
    /// the disk). Read as the only shredder (`RecordStore.asShredder`), outside the write transaction.
    static func certificationPlan(_ db: Database) throws -> CertificationPlan {
        var orders: [(id: Int64?, order: ShredOrder)] = [
            (nil, ShredOrder(method: .recovery, authority: .daemon))
        ]
        for row in try GRDB.Row.fetchAll(
            db,
            sql: """
                SELECT id, method, uid, role, reason FROM shred_order_list o WHERE open = 0 AND NOT EXISTS (
                    SELECT 1 FROM records WHERE state = 'shredding' AND shred_order = o.id
                ) ORDER BY id
                """
        ) {
            let order = ShredOrder(
                method: ShredMethod(rawValue: try row.decode(atIndex: 1)) ?? .recovery,
                authority: Authority(uid: try row.decode(atIndex: 2) as UInt32?, role: try row.decode(atIndex: 3)),
                reason: try row.decode(atIndex: 4)
            )
            orders.append((try row.decode(atIndex: 0), order))
        }
        var plan = CertificationPlan(orders: [])
        for (orderID, order) in orders {
            let certified = Set(
                try String.fetchAll(
                    db, sql: "SELECT case_id FROM shred_certified WHERE order_id = ?", arguments: [orderID ?? 0]))
            var cases: [String: [(id: RecordID, type: RecordType)]] = [:]
            var rows: [(seq: Int64, id: RecordID)] = []
            let cursor = try GRDB.Row.fetchCursor(
                db,
                sql: orderID == nil
                    ? "SELECT seq, case_id, record_id, type FROM shred_certifying WHERE order_id IS NULL ORDER BY seq"
                    : "SELECT seq, case_id, record_id, type FROM shred_certifying WHERE order_id = ? ORDER BY seq",
                arguments: orderID.map { [$0] } ?? [])
            while let row = try cursor.next() {
                guard let type = RecordType(rawValue: try row.decode(atIndex: 3)) else { throw Self.malformedRow() }
                let (caseID, id) = (
                    try row.decode(atIndex: 1) as String, try RecordID(try row.decode(atIndex: 2) as String)
                )
                rows.append((try row.decode(atIndex: 0), id))
                if !certified.contains(caseID) {
                    cases[caseID, default: []].append((id, type))
                }
            }
            // The orphans' order has no row to remove once it is done.
            guard orderID != nil || !rows.isEmpty || !certified.isEmpty else { continue }
            plan.orders.append(
                .init(
                    id: orderID, order: order,
                    cases: try cases.sorted { $0.key > $1.key }.map { (caseID: try CaseID($0.key), records: $0.value) },
                    rows: rows
                ))
        }
        plan.orders.reverse()
        return plan
    }

    /// Takes work off `plan` until about `limit` records' worth is done, none is left, or the commit is due
    /// (`CertificationPlan.commitDue`): one certificate per case and order, signed with `sign`, issued at
    /// `time`, for the case's records in `shred_certifying`, the case listed in `shred_certified` with it;
    /// once every case of an order is certified, its rows in `shred_certifying`, in the table's order
    /// (`removalsPerRecord` of them count as one record; in a later commit unless the section can remove
    /// them all), and last its list and its row. A removed record waits in `shred_certifying` until then,
    /// so a crash before leaves it for recovery, which certifies only the cases not listed. Returns the
    /// certificates issued.
    static func certify(
        _ db: Database, _ plan: inout CertificationPlan, at time: Int64, signedWith sign: ([UInt8]) -> [UInt8],
        limit: Int
    ) throws -> Int {
        let budget = limit * Self.removalsPerRecord
        var (issued, spent) = (0, 0)
        while spent < budget, var order = plan.orders.popLast() {
            while spent < budget, let next = order.cases.popLast() {
                try Self.issueCertificate(
                    db, caseID: next.caseID, records: next.records.map { ($0.id, $0.type) }, order: order.order,
                    at: time, sign)
                try db.cachedStatement(
                    sql: "INSERT OR IGNORE INTO shred_certified (order_id, case_id) VALUES (?, ?)"
                ).execute(arguments: [order.key, next.caseID.rawValue])
                guard db.changesCount == 1 else { throw Self.certificationPlanStale() }
                issued += 1
                spent += next.records.count * Self.removalsPerRecord
                plan.issuedInCommit = true
            }
            guard order.cases.isEmpty,
                !(plan.issuedInCommit && order.rows.count - order.removed > budget - spent)
            else {
                plan.commitDue = order.cases.isEmpty
                plan.orders.append(order)
                break
            }
            if spent < budget, order.removed < order.rows.count {
                let rows = order.rows[order.removed..<min(order.rows.count, order.removed + budget - spent)]
                try Self.removeCertified(db, rows)
                order.removed += rows.count
                spent += rows.count
            }
            guard order.removed == order.rows.count else {
                plan.orders.append(order)
                break
            }
            try db.execute(sql: "DELETE FROM shred_certified WHERE order_id = ?", arguments: [order.key])
            if let orderID = order.id {
                try db.execute(sql: "DELETE FROM shred_order_list WHERE id = ?", arguments: [orderID])
            }
        }
        return issued
    }

    /// How many rows of `shred_certifying` `certify` removes for the work of certifying one record: they go
    /// in the table's order, a page at a time, where a certificate is written and signed.
    static let removalsPerRecord = 10

    /// Deletes `rows` (neighbours in the table's order) from `shred_certifying`, checking that each was
    /// there as the plan read it.
    private static func removeCertified(_ db: Database, _ rows: ArraySlice<(seq: Int64, id: RecordID)>) throws {
        var expected = Dictionary(uniqueKeysWithValues: rows.map { ($0.seq, $0.id.rawValue) })
        try Self.inChunks(rows.map(\.seq)) { placeholders, arguments in
            let removed = try GRDB.Row.fetchCursor(
                Self.statement(
                    db, inChunk: placeholders,
                    "DELETE FROM shred_certifying WHERE seq IN (\(placeholders)) RETURNING seq, record_id"),
                arguments: arguments)
            while let row = try removed.next() {
                let (seq, id): (Int64, String) = (try row.decode(atIndex: 0), try row.decode(atIndex: 1))
                guard expected.removeValue(forKey: seq) == id else { throw Self.certificationPlanStale() }
            }
        }
        guard expected.isEmpty else { throw Self.certificationPlanStale() }
    }

    /// The plan is read as the only shredder (`RecordStore.asShredder`), outside the write transaction that
    /// certifies it, so that nothing takes its rows or puts others in their place meanwhile. Were it
    /// otherwise, the whole commit is rolled back: its records wait for the next shred, sweep batch or open
    /// to certify them.
    private static func certificationPlanStale() -> CaseVaultError {
        CaseVaultError(
            .storageFailure,
            "records waiting for their destruction certificates changed while they were certified; they are certified by the next shred or open"
        )
    }

    /// Whether removed records of a closed order wait for their certificates (open orders are a sweep's,
    /// certified when it ends).
    static func awaitsCertificates(_ db: Database) throws -> Bool {
        // Probes of `shred_certifying_by_order`, not a scan of a running sweep's removed records.
        try Bool.fetchOne(
            db,
            sql: """
                SELECT EXISTS (SELECT 1 FROM shred_certifying WHERE order_id IS NULL) OR EXISTS (
                    SELECT 1 FROM shred_order_list o
                    WHERE open = 0 AND EXISTS (SELECT 1 FROM shred_certifying WHERE order_id = o.id)
                )
                """) ?? false
    }

    /// Writes one signed certificate for `records` of `caseID`, shredded under `order`, issued at `time`.
    private static func issueCertificate(
        _ db: Database, caseID: CaseID, records: [(RecordID, RecordType)], order: ShredOrder, at time: Int64,
        _ sign: ([UInt8]) -> [UInt8]
    ) throws {
        let id = CaseID(bytes: Random.bytes(count: CaseID.byteCount)).rawValue
        let certificate = DestructionCertificate(
            id: id, caseID: caseID, issuedAt: Timestamp.rfc3339(time), order: order, records: records)
        try db.cachedStatement(
            sql: "INSERT INTO certificates (id, case_id, issued_at, document) VALUES (?, ?, ?, ?)"
        ).execute(arguments: [id, caseID.rawValue, time, Data(certificate.document(signedWith: sign))])
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

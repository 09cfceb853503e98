public import CaseVaultCore
internal import CaseVaultCrypto
internal import Foundation
internal import GRDB
internal import Logging

/// A legal hold on a case: while it stands, the case's records are not disposed of (DESIGN §7).
public struct LegalHold: Sendable, Equatable {
    public var id: HoldID
    public var caseID: CaseID
    /// Milliseconds since the Unix epoch.
    public var placedAt: Int64
    public var placedBy: Authority
    /// The reason, opened from its sealed form: it may name people or matters, so it is never logged.
    public var reason: String
}

// MARK: Legal holds

extension RecordStore {
    /// Places a hold on a case. `not-found` for an unknown case. The reason is sealed in the index.
    public func placeHold(on caseID: CaseID, reason: String, authority: Authority) throws(CaseVaultError) -> LegalHold {
        try self.caseLocks.withLock(caseID) { () throws(CaseVaultError) in
            _ = try self.caseSummary(caseID)
            let hold = LegalHold(
                id: HoldID(bytes: Random.bytes(count: HoldID.byteCount)), caseID: caseID, placedAt: self.now(),
                placedBy: authority, reason: reason
            )
            let sealed = self.barrier.sealHoldReason(Array(reason.utf8), holdID: hold.id.rawValue, caseID: caseID)
            // Under the writer role, so a sweep batch or a shred sees the hold either entirely before or
            // entirely after its own check.
            try self.asWriter { () throws(CaseVaultError) in
                try self.index.write { db in
                    try db.execute(
                        sql: "INSERT INTO holds (id, case_id, placed_at, uid, role, reason) VALUES (?, ?, ?, ?, ?, ?)",
                        arguments: [
                            hold.id.rawValue, caseID.rawValue, hold.placedAt, authority.uid.map { Int64($0) },
                            authority.role,
                            Data(sealed),
                        ]
                    )
                }
            }
            self.logger.info("legal hold placed", metadata: ["hold.id": "\(hold.id)", "case.id": "\(caseID)"])
            return hold
        }
    }

    /// The holds standing, oldest first, with their reasons opened.
    public func holds() throws(CaseVaultError) -> [LegalHold] {
        let rows = try self.index.read { db in
            try GRDB.Row.fetchAll(
                db, sql: "SELECT id, case_id, placed_at, uid, role, reason FROM holds ORDER BY placed_at, id")
        }
        var holds: [LegalHold] = []
        for row in rows {
            let id = try HoldID(row[0] as String)
            let caseID = try CaseID(row[1] as String)
            let sealed: Data = row[5]
            var reason = try self.barrier.openHoldReason([UInt8](sealed), holdID: id.rawValue, caseID: caseID)
            defer { Memory.zero(&reason) }
            holds.append(
                LegalHold(
                    id: id, caseID: caseID, placedAt: row[2],
                    placedBy: Authority(uid: (row[3] as Int64?).map { UInt32($0) }, role: row[4]),
                    reason: String(decoding: reason, as: UTF8.self)
                )
            )
        }
        return holds
    }

    /// Releases a hold; `not-found` for an unknown (or already released) hold. The case's records become
    /// disposable by the next sweep once no other hold covers them.
    public func releaseHold(_ id: HoldID) throws(CaseVaultError) -> CaseID {
        try self.asWriter { () throws(CaseVaultError) in
            let caseID = try self.index.write { db -> String? in
                let caseID = try String.fetchOne(
                    db, sql: "SELECT case_id FROM holds WHERE id = ?", arguments: [id.rawValue])
                // secure_delete zeroes the row, sealed reason included.
                try db.execute(sql: "DELETE FROM holds WHERE id = ?", arguments: [id.rawValue])
                return caseID
            }
            guard let caseID else {
                throw CaseVaultError(.notFound, "no standing hold has this id; list them with GET /v1/holds")
            }
            self.logger.info("legal hold released", metadata: ["hold.id": "\(id)", "case.id": "\(caseID)"])
            return try CaseID(caseID)
        }
    }

    /// Whether a hold stands on the case.
    public func isHeld(_ caseID: CaseID) throws(CaseVaultError) -> Bool {
        try self.index.lookup { db in try Self.isHeld(db, caseID.rawValue) }
    }

    /// The cases at least one hold stands on.
    static func heldCases(_ db: Database) throws -> Set<String> {
        Set(try String.fetchAll(db, sql: "SELECT DISTINCT case_id FROM holds"))
    }

    static func isHeld(_ db: Database, _ caseID: String) throws -> Bool {
        try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM holds WHERE case_id = ? LIMIT 1"), arguments: [caseID])
            ?? false
    }

    /// Refuses, with `held`, to destroy records a standing hold covers.
    func refuseHeld(_ rows: [Index.Row], _ db: Database) throws {
        for row in rows where self.configuration.retention.holdCovers(row.metadata.type) {
            if try Self.isHeld(db, row.metadata.caseID.rawValue) {
                throw CaseVaultError(
                    .held, "the record's case is under a legal hold; it can be destroyed once the hold is released"
                )
            }
        }
    }
}

// MARK: The retention sweep

extension RecordStore {
    /// A record whose retention has run out.
    struct Due {
        var id: String
        var caseID: String
        var type: RecordType
        var live: Bool
    }

    /// Disposes, by the shred protocol and in batches of `configuration.sweepBatch`, every record whose
    /// retention (`configuration.retention`) has run out at the store's clock and that no hold covers.
    /// Idempotent: a second sweep at the same time finds nothing. After a crash, the store's recovery
    /// finishes the batch that was marked, with its certificate, and the next sweep does the rest.
    ///
    /// `limit` stops after about that many disposals (whole batches), for a caller that shows progress;
    /// the report then says it is not complete. `progress` is called after each batch.
    public func sweep(
        dryRun: Bool = false,
        limit: Int? = nil,
        authority: Authority = .daemon,
        progress: (SweepReport) -> Void = { _ in }
    ) throws(CaseVaultError) -> SweepReport {
        let now = self.now()
        var report = SweepReport(dryRun: dryRun, asOf: now)
        let (due, held) = try self.index.read { db in (try self.dueRecords(at: now, db), try Self.heldCases(db)) }
        var disposable: [Due] = []
        for record in due {
            if !record.live {
                report.byType[record.type, default: .init()].alreadyGone += 1
            } else if held.contains(record.caseID) && self.configuration.retention.holdCovers(record.type) {
                report.byType[record.type, default: .init()].heldBack += 1
            } else {
                disposable.append(record)
            }
        }
        if dryRun {
            for record in disposable {
                report.byType[record.type, default: .init()].disposed += 1
            }
            return report
        }
        // A case's records together, so that each case gets one certificate per sweep rather than one per batch
        // it is spread over.
        disposable.sort { ($0.caseID, $0.type.rawValue, $0.id) < ($1.caseID, $1.type.rawValue, $1.id) }
        let batchSize = max(1, self.configuration.sweepBatch)
        let order = ShredOrder(method: .retentionSweep, authority: authority, reason: "retention_expired")
        var start = 0
        while start < disposable.count {
            if let limit, report.disposed >= limit {
                report.complete = false
                break
            }
            let batch = Array(disposable[start..<min(start + batchSize, disposable.count)])
            start += batch.count
            try self.asWriter { () throws(CaseVaultError) in
                report.certificates += self.retryPendingShreds()
                // Looked at again under the writer role: a shred or a hold may have come since the listing.
                let (rows, heldNow) = try self.index.read { db in
                    let found = try Index.rows(db, ids: batch.map(\.id))
                    return (batch.map { found[$0.id] }, try Self.heldCases(db))
                }
                var shred: [Index.Row] = []
                for (record, row) in zip(batch, rows) {
                    guard let row, row.state == .live else {
                        report.byType[record.type, default: .init()].alreadyGone += 1
                        continue
                    }
                    if heldNow.contains(record.caseID) && self.configuration.retention.holdCovers(record.type) {
                        report.byType[record.type, default: .init()].heldBack += 1
                        continue
                    }
                    shred.append(row)
                }
                report.certificates += try self.runShred(shred, from: .mark, order: order)
                for row in shred {
                    report.byType[row.metadata.type, default: .init()].disposed += 1
                }
            }
            self.observe(.sweepAfterBatch)
            progress(report)
        }
        let totals = report.totals
        self.logger.info(
            "retention sweep",
            metadata: [
                "records.disposed": "\(totals.disposed)", "records.held_back": "\(totals.heldBack)",
                "records.already_gone": "\(totals.alreadyGone)", "sweep.complete": "\(report.complete)",
            ]
        )
        return report
    }

    /// Every record due at `now`: per type, the candidates by one index range (records filed, or cases
    /// closed, before the latest time any could be due), each then judged exactly by its rule. Records
    /// already `shredding` come back with `live == false`.
    func dueRecords(at now: Int64, _ db: Database) throws -> [Due] {
        var due: [Due] = []
        for type in RecordType.allCases {
            guard let rule = self.configuration.retention.rules[type] else { continue }
            let cutoff = rule.latestPossibleEvent(at: now)
            let rows: RowCursor
            switch rule.event {
            case .filed:
                rows = try GRDB.Row.fetchCursor(
                    db,
                    sql:
                        "SELECT id, case_id, state, created_at FROM records WHERE type = ? AND created_at <= ? ORDER BY created_at, seq",
                    arguments: [type.rawValue, cutoff]
                )
            case .caseClosed:
                rows = try GRDB.Row.fetchCursor(
                    db,
                    sql: """
                        SELECT r.id, r.case_id, r.state, c.closed_at FROM cases c JOIN records r ON r.case_id = c.id
                        WHERE c.closed_at IS NOT NULL AND c.closed_at <= ? AND r.type = ?
                        ORDER BY c.closed_at, r.seq
                        """,
                    arguments: [cutoff, type.rawValue]
                )
            }
            while let row = try rows.next() {
                guard rule.isDue(eventTime: row[3], at: now) else { continue }
                due.append(
                    Due(id: row[0], caseID: row[1], type: type, live: (row[2] as String) == Index.State.live.rawValue))
            }
        }
        return due
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto
package import CaseVaultSealing
internal import Foundation
internal import Logging

// MARK: Legal holds

extension RecordStore {
    /// Keeps a hold whose reason the sealing layer sealed. As the only shredder and the only writer, so a
    /// sweep batch or a shred sees the hold either entirely before or entirely after itself: a hold asked
    /// for while one runs waits for it (a shred's steps let puts in between, not holds).
    package func insertHold(_ hold: SealedHold) throws(CaseVaultError) {
        try self.asShredder { () throws(CaseVaultError) in
            try self.asWriter { () throws(CaseVaultError) in
                try self.index.write { db in
                    try Index.insertHold(
                        db, id: hold.id, caseID: hold.caseID, placedAt: hold.placedAt, placedBy: hold.placedBy,
                        sealedReason: hold.sealedReason
                    )
                }
            }
        }
    }

    /// The holds standing, oldest first, their reasons sealed.
    package func sealedHolds() throws(CaseVaultError) -> [SealedHold] {
        try self.index.read { db in try Index.holds(db) }.map { row throws(CaseVaultError) in
            SealedHold(
                id: try HoldID(row.id), caseID: try CaseID(row.caseID), placedAt: row.placedAt,
                placedBy: Authority(uid: row.uid, role: row.role),
                sealedReason: [UInt8](row.sealedReason)
            )
        }
    }

    /// Releases a hold; `not-found` for an unknown (or already released) hold. The case's records become
    /// disposable by the next sweep once no other hold covers them.
    package func releaseHold(_ id: HoldID) throws(CaseVaultError) -> CaseID {
        try self.asWriter { () throws(CaseVaultError) in
            let caseID = try self.index.write { db -> String? in
                try Index.releaseHold(db, id: id)
            }
            guard let caseID else {
                throw CaseVaultError(.notFound, "no standing hold has this id; list them with GET /v1/holds")
            }
            self.logger.info("legal hold released", metadata: ["hold.id": "\(id)", "case.id": "\(caseID)"])
            return try CaseID(caseID)
        }
    }

    /// Whether a hold stands on the case.
    package func isHeld(_ caseID: CaseID) throws(CaseVaultError) -> Bool {
        try self.index.lookup { db in try Index.isHeld(db, caseID: caseID) }
    }

    /// Refuses, with `held`, to destroy records a standing hold covers.
    func refuseHeld(_ rows: [Index.Row]) throws(CaseVaultError) {
        let covered = rows.filter { self.configuration.retention.holdCovers($0.metadata.type) }.map(\.metadata.caseID)
        guard !covered.isEmpty else { return }
        let held = try self.index.read { db in try covered.contains { caseID in try Index.isHeld(db, caseID: caseID) } }
        if held {
            throw CaseVaultError(
                .held, "the record's case is under a legal hold; it can be destroyed once the hold is released"
            )
        }
    }
}

// MARK: The retention sweep

extension RecordStore {
    /// A record whose retention has run out.
    struct Due {
        var seq: Int64
        var id: String
        var caseID: String
        var type: RecordType
        var live: Bool
    }

    /// Disposes, by the shred protocol and in batches of `configuration.sweepBatch`, every record whose
    /// retention (`configuration.retention`) has run out at the store's clock and that no hold covers.
    /// Idempotent: a second sweep at the same time finds nothing. After a crash, the store's recovery
    /// finishes the batch that was marked and certifies what the sweep shredded, and the next sweep does
    /// the rest.
    ///
    /// The batches go in the index's order, not case by case: a case's records lie among every other
    /// case's, and a batch of neighbours rewrites a few index pages and runs of segment blocks where a
    /// batch of whole cases rewrites a page and a block per record. The sweep's batches share one order,
    /// open until the sweep ends, so that a case still gets one certificate per sweep.
    ///
    /// `limit` stops after about that many disposals (whole batches), for a caller that shows progress;
    /// the report then says it is not complete.
    package func sweep(
        dryRun: Bool = false,
        limit: Int? = nil,
        authority: Authority = .daemon
    ) throws(CaseVaultError) -> SweepReport {
        self.sweeping.lock()
        defer { self.sweeping.unlock() }
        let now = self.now()
        var report = SweepReport(dryRun: dryRun, asOf: now)
        let (due, held) = try self.index.read { db in
            (try Index.dueRecords(db, schedule: self.configuration.retention, at: now), try Index.heldCases(db))
        }
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
        guard !disposable.isEmpty else { return report }
        disposable.sort { $0.seq < $1.seq }
        let batchSize = max(1, self.configuration.sweepBatch)
        let order = ShredOrder(method: .retentionSweep, authority: authority, reason: "retention_expired")
        let orderID = try self.asWriter { () throws(CaseVaultError) in
            try self.index.write { db in try Index.insertShredOrder(db, order, open: true) }
        }
        do {
            try self.sweepBatches(disposable, batchSize: batchSize, orderID: orderID, limit: limit, into: &report)
        } catch {
            // What the batches shredded is certified now; records a failed batch left marked are, under an
            // order of their own, once a later shred or the next open finishes them.
            do {
                try self.closeSweepOrder(orderID)
            } catch let closing {
                self.logger.error(
                    "a failed sweep's order could not be closed; what it shredded is certified when the store next opens",
                    metadata: ["error.code": "\(closing.code.rawValue)"])
            }
            throw error
        }
        report.certificates += try self.closeSweepOrder(orderID)
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

    /// Shreds `disposable` in batches of `batchSize` under the open order `orderID`, each batch as the only
    /// shredder, so that a shred or a hold asked for meanwhile waits for one batch at most.
    private func sweepBatches(
        _ disposable: [Due], batchSize: Int, orderID: Int64, limit: Int?, into report: inout SweepReport
    ) throws(CaseVaultError) {
        var start = 0
        while start < disposable.count {
            if let limit, report.disposed >= limit {
                report.complete = false
                break
            }
            let batch = Array(disposable[start..<min(start + batchSize, disposable.count)])
            start += batch.count
            try self.asShredder { () throws(CaseVaultError) in
                report.certificates += self.retryPendingShreds()
                var counts = report.byType
                var next = 0
                // A section's worth of the batch at a time, each looked at again as the only writer as it is
                // marked: a shred or a hold may have come since the listing.
                let (shredded, certificates) = try self.runShred(
                    from: .ordered, order: .existing(orderID), truncatingWAL: false,
                    sections: { () throws(CaseVaultError) -> (rows: [Index.Row], last: Bool) in
                        let section = batch[next..<min(next + Self.shredSection, batch.count)]
                        next += section.count
                        let (rows, heldNow) = try self.index.read { db in
                            let found = try Index.rows(db, seqs: section.map(\.seq))
                            return (section.map { found[$0.seq] }, try Index.heldCases(db))
                        }
                        var shred: [Index.Row] = []
                        for (record, row) in zip(section, rows) {
                            // By rowid, which a record filed since the listing may have taken over.
                            guard let row, row.metadata.id.rawValue == record.id, row.state == .live else {
                                counts[record.type, default: .init()].alreadyGone += 1
                                continue
                            }
                            if heldNow.contains(record.caseID) && self.configuration.retention.holdCovers(record.type) {
                                counts[record.type, default: .init()].heldBack += 1
                                continue
                            }
                            shred.append(row)
                        }
                        return (shred, next >= batch.count)
                    })
                report.byType = counts
                report.certificates += certificates
                for row in shredded {
                    report.byType[row.metadata.type, default: .init()].disposed += 1
                }
            }
            self.observe(.sweepAfterBatch)
        }
    }

    /// Closes the sweep's order and certifies what it shredded: one certificate per case; then truncates
    /// the index's WAL, once for the whole sweep, and also when the closing or the certifying failed.
    /// Returns how many certificates were issued.
    ///
    /// Once, not after each batch: a batch rewrites most pages of the index's B-trees keyed by id or case
    /// (their keys are random), and a truncation after each wrote each of those pages to the database file
    /// again, batch after batch. Until the sweep ends, the WAL holds images of its removed rows (the
    /// records' rows: ids, cases, types, times, authors' uids, sizes and locations; never content, names or
    /// keys); a crash before then leaves them to the truncation at open.
    @discardableResult
    private func closeSweepOrder(_ orderID: Int64) throws(CaseVaultError) -> Int {
        try self.asShredder { () throws(CaseVaultError) in
            defer { self.truncateWALAfterShred() }
            try self.asWriter { () throws(CaseVaultError) in
                try self.index.write { db in try Index.closeShredOrder(db, orderID) }
            }
            return try self.certifyFinishedOrders()
        }
    }

}

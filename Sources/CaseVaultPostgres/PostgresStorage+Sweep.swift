package import CaseVaultCore
internal import CaseVaultSealing
internal import Logging
internal import NIOCore
internal import PostgresNIO

/// The retention sweep on PostgreSQL: every record whose retention has run out and that no hold covers,
/// shredded as a shred on request is (its row deleted, its shred's row written, a certificate for its case
/// stating erasure by key destruction), a batch of whole cases at a time.
extension PostgresStorage {
    /// The session advisory lock a sweep holds from its listing to its end, so that one daemon sweeps at a
    /// time: a second sweep, here or at another daemon, waits and then lists what the first left
    /// (`CVSWEEPS` in ASCII).
    static let sweepLock: Int64 = 0x4356_5357_4545_5053

    /// A record whose retention has run out, as the listing found it.
    struct Due: Sendable {
        var id: RecordID
        var caseID: CaseID
        var type: RecordType
    }

    /// Disposes of every record whose retention (`[retention]`) has run out at the storage's clock and that
    /// no hold covers, and reports counts by type (never ids). One daemon at a time (`sweepLock`); the
    /// listing is one snapshot, and each batch's transaction takes its cases' locks (as filings, holds and
    /// shreds on request do, in the order of their keys) and looks at its records again under them: a record
    /// shredded since the listing counts as already gone, one whose case a hold now covers as held back.
    /// A case's due records go in one batch, so that a case gets one certificate per sweep. `limit` stops
    /// after about that many disposals (whole batches); the report then says it is not complete. A dry run
    /// changes nothing.
    package func sweep(dryRun: Bool = false, limit: Int? = nil, authority: Authority = .daemon)
        throws(CaseVaultError) -> SweepReport
    {
        let (logger, clock, retention, batchSize) = (self.logger, self.clock, self.retention, self.sweepBatch)
        let certifying = (self.sealing, self.eraseWindow)
        let report = try self.run { connection -> SweepReport in
            try await connection.perform("SELECT pg_advisory_lock(\(Self.sweepLock))", logger: logger)
            do {
                // Read once the lock is held: a sweep that waited for another judges what is due by the time
                // it runs, as the local store's does.
                let now = clock()
                let report = try await Self.sweepListed(
                    dryRun: dryRun, limit: limit, authority: authority, at: now, retention: retention,
                    batchSize: batchSize, certifying: certifying, on: connection, logger: logger)
                try await connection.perform("SELECT pg_advisory_unlock(\(Self.sweepLock))", logger: logger)
                return report
            } catch {
                // A connection still holding the lock is never kept: closing it ends the session and the lock.
                do {
                    try await connection.perform("SELECT pg_advisory_unlock(\(Self.sweepLock))", logger: logger)
                } catch {
                    try? await connection.close()
                }
                throw error
            }
        }
        let totals = report.totals
        logger.info(
            "retention sweep",
            metadata: [
                "records.disposed": "\(totals.disposed)", "records.held_back": "\(totals.heldBack)",
                "records.already_gone": "\(totals.alreadyGone)", "sweep.complete": "\(report.complete)",
            ])
        return report
    }

    /// The sweep's listing and batches on `connection`, which holds the sweep's lock.
    private static func sweepListed(
        dryRun: Bool, limit: Int?, authority: Authority, at now: Int64, retention: RetentionSchedule,
        batchSize: Int, certifying: (sealing: SealingServices, window: Int64), on connection: PostgresConnection,
        logger: Logger
    ) async throws -> SweepReport {
        var report = SweepReport(dryRun: dryRun, asOf: now)
        let (due, held) = try await connection.snapshot(logger: logger) { connection in
            (
                try await Self.dueRecords(retention, at: now, on: connection, logger: logger),
                try await Self.heldCases(among: nil, on: connection, logger: logger)
            )
        }
        var byCase: [CaseID: [Due]] = [:]
        var cases: [CaseID] = []
        for record in due {
            if held.contains(record.caseID) && retention.holdCovers(record.type) {
                report.byType[record.type, default: .init()].heldBack += 1
            } else if dryRun {
                report.byType[record.type, default: .init()].disposed += 1
            } else {
                if byCase[record.caseID] == nil { cases.append(record.caseID) }
                byCase[record.caseID, default: []].append(record)
            }
        }
        guard !dryRun else { return report }
        let order = ShredOrder(method: .retentionSweep, authority: authority, reason: "retention_expired")
        var next = 0
        while next < cases.count {
            if let limit, report.disposed >= limit {
                report.complete = false
                break
            }
            var batch: [Due] = []
            while next < cases.count, batch.count < batchSize {
                batch += byCase[cases[next]] ?? []
                next += 1
            }
            let (counts, certificates) = try await connection.transaction(logger: logger) { connection in
                try await Self.sweepBatch(
                    batch, order: order, at: now, retention: retention, certifying: certifying, on: connection,
                    logger: logger)
            }
            for (type, counted) in counts {
                report.byType[type, default: .init()].disposed += counted.disposed
                report.byType[type, default: .init()].heldBack += counted.heldBack
                report.byType[type, default: .init()].alreadyGone += counted.alreadyGone
            }
            report.certificates += certificates
        }
        return report
    }

    /// Shreds what of `batch` is still there and not held, under its cases' locks, in the caller's
    /// transaction: the counts by type, and how many certificates were issued.
    private static func sweepBatch(
        _ batch: [Due], order: ShredOrder, at time: Int64, retention: RetentionSchedule,
        certifying: (sealing: SealingServices, window: Int64), on connection: PostgresConnection, logger: Logger
    ) async throws -> ([RecordType: SweepReport.Counts], Int) {
        let caseIDs = Array(Set(batch.map(\.caseID)))
        try await Self.lockCases(caseIDs.map(\.bytes), on: connection, logger: logger)
        try await PostgresRecords.shareFilingLockUnlessMoved(on: connection, logger: logger)
        var live = Set<RecordID>()
        for try await id in try await connection.query(
            """
            SELECT id FROM casevault_records WHERE id = ANY(\(batch.map { ByteBuffer(bytes: $0.id.bytes) }))
            FOR UPDATE
            """, logger: logger
        ).decode(ByteBuffer.self) {
            live.insert(RecordID(bytes: Array(id.readableBytesView)))
        }
        let heldNow = try await Self.heldCases(among: caseIDs, on: connection, logger: logger)
        var counts: [RecordType: SweepReport.Counts] = [:]
        var shred: [RecordID] = []
        for record in batch {
            if !live.contains(record.id) {
                counts[record.type, default: .init()].alreadyGone += 1
            } else if heldNow.contains(record.caseID) && retention.holdCovers(record.type) {
                counts[record.type, default: .init()].heldBack += 1
            } else {
                counts[record.type, default: .init()].disposed += 1
                shred.append(record.id)
            }
        }
        guard !shred.isEmpty else { return (counts, 0) }
        let certificates = try await Self.shred(
            shred, order: order, at: time, certifying: certifying, on: connection, logger: logger)
        return (counts, certificates)
    }

    /// Every live record due at `now`: per type, the candidates filed (or whose case closed) before the
    /// latest time any could be due, each then judged exactly by its rule.
    private static func dueRecords(
        _ retention: RetentionSchedule, at now: Int64, on connection: PostgresConnection, logger: Logger
    ) async throws -> [Due] {
        var due: [Due] = []
        for type in RecordType.allCases {
            guard let rule = retention.rules[type] else { continue }
            let cutoff = rule.latestPossibleEvent(at: now)
            let rows =
                switch rule.event {
                case .filed:
                    try await connection.query(
                        """
                        SELECT id, case_id, created_at FROM casevault_records
                        WHERE type = \(type.rawValue) AND created_at <= \(cutoff) ORDER BY created_at, filed
                        """, logger: logger)
                case .caseClosed:
                    try await connection.query(
                        """
                        SELECT r.id, r.case_id, c.closed_at FROM casevault_records r
                        JOIN casevault_cases c ON c.id = r.case_id
                        WHERE r.type = \(type.rawValue) AND c.closed_at IS NOT NULL AND c.closed_at <= \(cutoff)
                        ORDER BY c.closed_at, r.filed
                        """, logger: logger)
                }
            for try await (id, caseID, eventTime) in rows.decode((ByteBuffer, ByteBuffer, Int64).self) {
                guard rule.isDue(eventTime: eventTime, at: now) else { continue }
                guard id.readableBytes == RecordID.byteCount, caseID.readableBytes == CaseID.byteCount else {
                    throw CaseVaultError(.integrityFailure, "a record's row in the database is malformed")
                }
                due.append(
                    Due(
                        id: RecordID(bytes: Array(id.readableBytesView)),
                        caseID: CaseID(bytes: Array(caseID.readableBytesView)), type: type))
            }
        }
        return due
    }

    /// The cases under a standing hold: of `among`, or all of them when it is `nil`.
    private static func heldCases(among caseIDs: [CaseID]?, on connection: PostgresConnection, logger: Logger)
        async throws -> Set<CaseID>
    {
        let rows =
            if let caseIDs {
                try await connection.query(
                    """
                    SELECT DISTINCT case_id FROM casevault_holds
                    WHERE case_id = ANY(\(caseIDs.map { ByteBuffer(bytes: $0.bytes) }))
                    """, logger: logger)
            } else {
                try await connection.query("SELECT DISTINCT case_id FROM casevault_holds", logger: logger)
            }
        var held = Set<CaseID>()
        for try await caseID in rows.decode(ByteBuffer.self) {
            held.insert(CaseID(bytes: Array(caseID.readableBytesView)))
        }
        return held
    }
}

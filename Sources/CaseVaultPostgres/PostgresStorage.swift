package import CaseVaultCore
internal import CaseVaultCrypto
package import CaseVaultSealing
internal import Dispatch
internal import Foundation
package import Logging
internal import NIOPosix
internal import PostgresNIO
internal import Synchronization

/// The storage protocol (`RecordStorage`) on PostgreSQL, for records and cases: what the sealing layer's
/// `Vault` needs to open cases, file records under the lifecycle rules, read them back and shred a case's
/// session notes when its final agreement is filed. Several daemons may use one database at once; what
/// must happen one at a time is serialised by PostgreSQL's own locks (docs/ARCHITECTURE.md, "The vault on
/// PostgreSQL"):
///
/// - a case's filings, by a transaction-scoped advisory lock on the case (`withCaseLock`), in one
///   transaction that every call of the lock's body joins and that commits when the body returns, so that
///   a daemon's threads and other daemons wait alike and a filing costs few round trips;
/// - a filing against an epoch turn, by the records' shared filing lock and the check that the record is
///   wrapped under the epoch new wraps use (`PostgresRecords`), in the filing's transaction (the case
///   lock's): a filing that loses to a turn wraps again under the new epoch.
///
/// Each record's data key is wrapped under the erase epoch's key this daemon holds in its epoch key file
/// (`SealedRecord.wrappedKey(under:)`), and read back with that key (`StoredKey.Wrap.eraseEpoch`); the
/// database never sees a key in the clear. A shred deletes the records' rows in the transaction that
/// orders it and leaves a row in `casevault_shreds` (id, case, time, epoch, how and on whose authority):
/// from that commit on the record is `shredded` for every reader, and what PostgreSQL keeps of it opens for
/// no one once its epoch is destroyed.
///
/// A shred's certificate is issued in the same transaction and states its erasure: by key destruction,
/// under which epoch, complete by the shred's time plus the erase window; `certifyErasures` issues the
/// second certificate once every daemon has destroyed that epoch.
///
/// Legal holds' reasons are sealed under keys of their own, wrapped under the erase epochs as records' data
/// keys are and rewrapped with them at a turn (`sealsUnderEraseEpochs`).
///
/// Attachments are kept as their sealed bytes, a row for each 64 KiB chunk, under the record's own key.
///
/// Statistics are taken afresh for every report: no case's facts are kept here (sealed under a subkey of
/// the root key, they would outlive the erase window). `casevaultd` serves it with `[storage] backend =
/// "postgresql"` (`DatabaseVault` in the daemon).
///
/// Every call of `RecordStorage` and `ServedStorage` blocks its thread until the database answers: call it
/// from a thread that may block (the server's blocking pool), never from an event loop or Swift's
/// cooperative pool, whose threads run the queries. The awaited calls (`SuspendingStorage` and the reads
/// `awaitStoredRecord`, in `PostgresStorage+Awaited.swift`) suspend their task instead, for the server's
/// GETs and filings on its event loops.
/// Connections come from `PrimaryLocator` (the writable primary among the listed servers, sockets' owners
/// checked, TCP only inside verified TLS) and are kept between calls; PostgresNIO's own pool,
/// `PostgresClient`, connects to one host it is given and could do neither.
package final class PostgresStorage: ServedStorage {
    package let sealing: SealingServices
    package let logger: Logger
    package let maxContentBytes: Int
    private let locator: PrimaryLocator
    let epochKeys: EpochKeyFile
    let records: PostgresRecords
    let clock: @Sendable () -> Int64
    /// `[storage] erase_window`, in seconds: a shred's certificate promises its erasure within it.
    let eraseWindow: Int64
    /// `[retention]`: what the sweep disposes of, and whether a hold keeps a case's notes from its final
    /// agreement (`holds_keep_session_notes`).
    let retention: RetentionSchedule
    private var holdsKeepSessionNotes: Bool { self.retention.holdsKeepSessionNotes }
    /// How many records, at least, a transaction of the sweep shreds (whole cases at a time).
    let sweepBatch: Int
    /// Connections not in use, newest last.
    private let idle = Mutex<[PostgresConnection]>([])
    /// Set by `close`: every call from then on is refused.
    let closed = Mutex(false)
    /// The connections the awaited case locks (`awaitWithCaseLock`) and one-trip filings
    /// (`awaitFileIfUnchanged`) may hold at once, and those the other awaited calls (reads of records) may:
    /// apart, so that filings waiting for a busy case's lock, or held back by a restore, never keep the reads
    /// waiting.
    let awaitedLocks = AwaitedConnections(limit: PostgresStorage.awaitedLockConnections)
    let awaitedCalls = AwaitedConnections(limit: PostgresStorage.awaitedCallConnections)
    package static let awaitedLockConnections = 8
    package static let awaitedCallConnections = 8
    /// One-trip filings (`awaitFileIfUnchanged`): their reads, those filed, those given back to the case's
    /// lock; whether the warning that the database's isolation keeps them from filing was logged.
    let oneTripReads = Atomic<Int>(0)
    let oneTripFiled = Atomic<Int>(0)
    let oneTripGivenBack = Atomic<Int>(0)
    let oneTripIsolationLogged = Atomic<Bool>(false)
    /// A test's hook, run between a one-trip filing's read and its commit (`awaitFileIfUnchanged`).
    let beforeOneTripCommit = Mutex<(@Sendable () async -> Void)?>(nil)

    /// How many times a filing is wrapped again when epochs turn under it before it gives up.
    static let filingAttempts = 3
    /// The first key of case locks' advisory locks (two 32-bit keys: a space of their own, apart from the
    /// single 64-bit keys of `PostgresRecords.filingLock` and the migrations). `CVCA` in ASCII.
    static let caseLockSpace: Int32 = 0x4356_4341

    /// The connection a case lock holds on this thread, which every call in the lock's body uses, and the
    /// epoch new wraps use as read when the lock's transaction took the filing lock with it (`nil` when it
    /// did not): a filing in the body wraps under it without asking again (`underWrapEpoch`).
    struct Pinned: Sendable {
        let storage: ObjectIdentifier
        let connection: PostgresConnection
        var wrapEpoch: UInt64? = nil
    }
    @TaskLocal static var pinned: Pinned?

    package init(
        sealing: SealingServices, locator: PrimaryLocator, epochKeys: EpochKeyFile, eraseWindow: Int64,
        maxContentBytes: Int, retention: RetentionSchedule = .standard, sweepBatch: Int = 500, logger: Logger,
        clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    ) {
        self.sealing = sealing
        self.eraseWindow = eraseWindow
        self.retention = retention
        self.sweepBatch = max(1, sweepBatch)
        self.locator = locator
        self.epochKeys = epochKeys
        self.maxContentBytes = maxContentBytes
        self.logger = logger
        self.records = PostgresRecords(logger: logger)
        self.clock = clock
    }

    deinit {
        for connection in self.idle.withLock({ $0 }) { Self.discard(connection) }
    }

    /// Closes the kept connections and refuses every later call (`storage-failure`), so that nothing is
    /// written under keys `wipeKeys` zeroes next. Never fails.
    @discardableResult
    package func close() -> CaseVaultError? {
        self.closed.withLock { $0 = true }
        for connection in self.idle.withLock({ connections in
            defer { connections.removeAll() }
            return connections
        }) {
            Self.discard(connection)
        }
        return nil
    }

    /// Zeroes the root key's subkeys this storage holds, and the epoch key file's.
    package func wipeKeys() {
        self.sealing.wipe()
        self.epochKeys.wipe()
    }

    /// Never: what the database acknowledged it keeps, on its standbys too.
    package var indexLost: Bool { false }

    /// Always: the watchdog asks whether the daemon's own threads answer, and a database away for a while is
    /// answered with 503s, not by restarting the daemon.
    package func isResponsive() -> Bool { true }

    /// Closes `connection` without waiting; it lives until it has closed.
    static func discard(_ connection: PostgresConnection) {
        connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
    }

    package func now() -> Int64 { self.clock() }

    /// The erase epochs' schedule of a daemon that keeps its records here, exchanging keys by `exchange`.
    package func schedule(_ exchange: EpochExchange) -> EpochSchedule {
        EpochSchedule(exchange: exchange, eraseWindow: self.eraseWindow, records: self.records)
    }

    // MARK: Records

    package func commit(_ record: SealedRecord, effects: FilingEffects) throws(CaseVaultError) -> RecordMetadata {
        try self.underWrapEpoch(self.filing(record, effects: effects))
    }

    /// A filing's writes under the wrap epoch's `key`, for `underWrapEpoch`: its row, then its effects.
    func filing(_ record: SealedRecord, effects: FilingEffects)
        -> @Sendable (EpochKey, PostgresConnection) async throws -> RecordMetadata?
    {
        let createdAt = self.now()
        let (records, logger) = (self.records, self.logger)
        let (sealing, window) = (self.sealing, self.eraseWindow)
        return { key, connection in
            let row = PostgresRecords.Row(
                id: record.id, caseID: record.caseID, type: record.type, createdAt: createdAt, epoch: key.number,
                wrappedKey: record.wrappedKey(under: key), blob: record.blob, author: record.author,
                supersedes: record.supersedes)
            // The record first: when an epoch turned after the wrap epoch was read, nothing is written and the
            // filing wraps again.
            guard try await records.insertUnderWrapEpoch(row, on: connection) else { return nil }
            try await Self.apply(effects, at: createdAt, certifying: (sealing, window), on: connection, logger: logger)
            return row.metadata
        }
    }

    /// Runs `body` in a transaction (the case lock's, when this thread holds one: `inTransaction`) holding the
    /// shared filing lock, with the key of the epoch new wraps use (at the first attempt in a case's lock
    /// taken with the filing lock, as that lock's statement read it: `Pinned.wrapEpoch`);
    /// `body` writes under that epoch only if it is still the one new wraps use (the insert checks it), and
    /// returns `nil`, having written nothing, when a turn came in between: then it runs again, up to
    /// `filingAttempts` times.
    private func underWrapEpoch<T: Sendable>(
        _ body: @escaping @Sendable (EpochKey, PostgresConnection) async throws -> T?
    ) throws(CaseVaultError) -> T {
        for attempt in 0..<Self.filingAttempts {
            if let done = try self.inTransaction(self.wrapAttempt(attempt, body)) { return done }
        }
        throw Self.epochsKeptTurning
    }

    static var epochsKeptTurning: CaseVaultError {
        CaseVaultError(
            .keyUnavailable, "erase epochs turned \(Self.filingAttempts) times while wrapping a key: try again")
    }

    /// Attempt `attempt` of `underWrapEpoch`, as a transaction's body: the wrap epoch found (the one the case
    /// lock read, at the first attempt; read with the filing lock shared otherwise), `body` run with its key;
    /// `nil`, having written nothing, when this daemon does not hold that key or none is ready, but for the
    /// last attempt, which fails.
    func wrapAttempt<T: Sendable>(
        _ attempt: Int, _ body: @escaping @Sendable (EpochKey, PostgresConnection) async throws -> T?
    ) -> @Sendable (PostgresConnection) async throws -> T? {
        let read = attempt == 0 ? self.pinnedWrapEpoch : nil
        let (records, file) = (self.records, self.epochKeys)
        return { connection -> T? in
            let found: UInt64? =
                if let read { read } else { try await records.shareFilingLockReadingWrapEpoch(on: connection) }
            guard let epoch = found else {
                // Read before the lock's grant, the first epoch may have turned ready since.
                guard attempt == Self.filingAttempts - 1 else { return nil }
                throw CaseVaultError(
                    .keyUnavailable, "no erase epoch is ready for new wraps yet: no daemon has turned to one")
            }
            // Looked up once the epoch is known, the one key alone kept by the body: the epoch a turn moved to
            // may have been received since the last attempt.
            guard let key = try file.epochKeys().first(where: { $0.number == epoch }) else {
                // Received since the keys were read, it is there when they are read again.
                guard attempt == Self.filingAttempts - 1 else { return nil }
                throw CaseVaultError(
                    .keyUnavailable,
                    "this daemon does not hold erase epoch \(epoch)'s key, which new wraps use: it has not received it"
                )
            }
            return try await body(key, connection)
        }
    }

    /// What a filing changes besides its record, in its transaction: the new case, the case's state, and the
    /// shreds it orders (rows deleted, each leaving its shred's row, and their certificate).
    private static func apply(
        _ effects: FilingEffects, at time: Int64, certifying: (sealing: SealingServices, window: Int64),
        on connection: PostgresConnection, logger: Logger
    ) async throws {
        if let (summary, header) = effects.newCase {
            try await connection.perform(
                """
                INSERT INTO casevault_cases (id, state, participant_count, mediators, supervisors, created_at, closed_at,
                    header_id)
                VALUES (\(ByteBuffer(bytes: summary.id.bytes)), \(summary.state.rawValue), \(summary.participantCount),
                    \(summary.mediators.map { Int64($0) }), \(summary.supervisors.map { Int64($0) }), \(summary.createdAt),
                    \(summary.closedAt), \(ByteBuffer(bytes: header.bytes)))
                """, logger: logger)
        }
        if let change = effects.caseState {
            try await connection.perform(
                """
                UPDATE casevault_cases SET state = \(change.state.rawValue), closed_at = \(change.closedAt),
                    outcome = \(change.outcome) WHERE id = \(ByteBuffer(bytes: change.id.bytes))
                """, logger: logger)
        }
        guard !effects.markShredding.isEmpty else { return }
        guard let order = effects.shredOrder else {
            throw CaseVaultError(.storageFailure, "a filing marked records to shred without saying who ordered it")
        }
        try await Self.shred(
            effects.markShredding, order: order, at: time, certifying: certifying, on: connection, logger: logger)
    }

    /// Deletes the rows of `ids` (those there are), each leaving its shred's row, and issues one certificate
    /// a case for them, in the caller's transaction.
    @discardableResult
    static func shred(
        _ ids: [RecordID], order: ShredOrder, at time: Int64, certifying: (sealing: SealingServices, window: Int64),
        on connection: PostgresConnection, logger: Logger
    ) async throws -> Int {
        let shredded = try await connection.query(
            """
            WITH gone AS (
                DELETE FROM casevault_records WHERE id = ANY(\(ids.map { ByteBuffer(bytes: $0.bytes) }))
                RETURNING id, case_id, type, epoch
            )
            INSERT INTO casevault_shreds (id, case_id, type, shredded_at, epoch, method, authority_uid, authority_role)
            SELECT id, case_id, type, \(time), epoch, \(order.method.rawValue), \(order.authority.uid.map { Int64($0) }),
                \(order.authority.role) FROM gone
            RETURNING id, case_id, type, epoch
            """, logger: logger)
        // Read to the end before the next statement, which the connection runs after this one's rows.
        var byCase: [CaseID: (records: [(RecordID, RecordType)], epoch: UInt64)] = [:]
        for try await (id, caseID, type, epoch) in shredded.decode((ByteBuffer, ByteBuffer, String, Int64).self) {
            guard caseID.readableBytes == CaseID.byteCount, let type = RecordType(rawValue: type), epoch > 0 else {
                throw CaseVaultError(.integrityFailure, "a shredded record's row in the database is malformed")
            }
            let caseID = CaseID(bytes: Array(caseID.readableBytesView))
            var shreds = byCase[caseID] ?? ([], 0)
            shreds.records.append((try Self.recordID(id), type))
            shreds.epoch = max(shreds.epoch, UInt64(epoch))
            byCase[caseID] = shreds
        }
        // Their attachments, and any upload under way: an append holds its upload's row until its chunk is
        // committed, so the uploads' delete waits for it and the chunks' delete, a statement later, sees it.
        let records = ids.map { ByteBuffer(bytes: $0.bytes) }
        try await connection.perform(
            "DELETE FROM casevault_attachments WHERE record_id = ANY(\(records))", logger: logger)
        try await connection.perform(
            "DELETE FROM casevault_uploads WHERE record_id = ANY(\(records))", logger: logger)
        try await connection.perform(
            "DELETE FROM casevault_attachment_chunks WHERE record_id = ANY(\(records))", logger: logger)
        try await Self.certify(byCase, order: order, at: time, certifying: certifying, on: connection, logger: logger)
        return byCase.count
    }

    /// Issues one certificate a case for the records of `byCase` shredded at `time` on `order`, in the
    /// caller's transaction: erasure by key destruction, complete once every daemon has destroyed the newest
    /// epoch a record's key was wrapped under (older ones go first), which the schedule does within the
    /// erase window.
    static func certify(
        _ byCase: [CaseID: (records: [(RecordID, RecordType)], epoch: UInt64)], order: ShredOrder, at time: Int64,
        certifying: (sealing: SealingServices, window: Int64), on connection: PostgresConnection, logger: Logger
    ) async throws {
        for (caseID, shreds) in byCase {
            let erasure = DestructionCertificate.Erasure(
                epoch: shreds.epoch, completeBy: Timestamp.rfc3339(time + certifying.window * 1000))
            try await Self.issue(
                DestructionCertificate(
                    id: Self.newCertificateID(), caseID: caseID, issuedAt: Timestamp.rfc3339(time), order: order,
                    records: shreds.records, erasure: erasure),
                at: time, signedBy: certifying.sealing, on: connection, logger: logger)
        }
    }

    /// Writes `certificate`, signed, in the caller's transaction.
    private static func issue(
        _ certificate: DestructionCertificate, at time: Int64, signedBy sealing: SealingServices,
        on connection: PostgresConnection, logger: Logger
    ) async throws {
        guard let erasure = certificate.erasure, let caseID = try? CaseID(certificate.caseID) else {
            throw CaseVaultError(.storageFailure, "a certificate on PostgreSQL must name its case and its erasure")
        }
        let document = certificate.document(signedWith: sealing.signCertificate)
        try await connection.perform(
            """
            INSERT INTO casevault_certificates (id, case_id, issued_at, epoch, completes, document)
            VALUES (\(certificate.certificateID), \(ByteBuffer(bytes: caseID.bytes)), \(time), \(Int64(erasure.epoch)),
                \(erasure.completes), \(ByteBuffer(bytes: document)))
            """, logger: logger)
    }

    private static func newCertificateID() -> String {
        CaseID(bytes: Random.bytes(count: CaseID.byteCount)).rawValue
    }

    // MARK: Shreds on request

    /// Shreds `ids` in one transaction: each record's row deleted, its shred's row written, one certificate
    /// a case. Unknown ids (`not-found`), ids already shredded (`shredded`) and records a standing hold
    /// covers (`held`: any type but a session note, which a hold covers only with
    /// `holds_keep_session_notes`) refuse the whole call, changing nothing. The cases' locks are taken in
    /// the transaction (the same advisory locks `withCaseLock` holds, in order), so that a hold placed or a
    /// filing made meanwhile on one of those cases is either before the shred or after it. Returns the
    /// metadata of the records shredded.
    @discardableResult
    package func shred(_ ids: [RecordID], order: ShredOrder) throws(CaseVaultError) -> [RecordMetadata] {
        let wanted = Array(Set(ids)).sorted { $0.rawValue < $1.rawValue }
        guard !wanted.isEmpty else { return [] }
        let (logger, time, keepNotes) = (self.logger, self.now(), self.holdsKeepSessionNotes)
        let certifying = (self.sealing, self.eraseWindow)
        let shredded = try self.inTransaction { connection in
            let bytes = wanted.map { ByteBuffer(bytes: $0.bytes) }
            var cases: [ByteBuffer] = []
            for try await caseID in try await connection.query(
                "SELECT DISTINCT case_id FROM casevault_records WHERE id = ANY(\(bytes))", logger: logger
            ).decode(ByteBuffer.self) {
                cases.append(caseID)
            }
            try await Self.lockCases(cases.map { Array($0.readableBytesView) }, on: connection, logger: logger)
            try await PostgresRecords.shareFilingLockUnlessMoved(on: connection, logger: logger)
            var found: [RecordMetadata] = []
            for try await row in try await connection.query(
                """
                SELECT \(unescaped: Self.metadataColumns) FROM casevault_records
                WHERE id = ANY(\(bytes)) ORDER BY id FOR UPDATE
                """, logger: logger
            ).decode(MetadataRow.self) {
                found.append(try Self.metadata(row).metadata)
            }
            if found.count < wanted.count {
                let missing = wanted.filter { id in !found.contains { $0.id == id } }
                let ids = missing.map { ByteBuffer(bytes: $0.bytes) }
                let shredded = try await Self.exists(
                    """
                    SELECT EXISTS (SELECT 1 FROM casevault_shreds WHERE id = ANY(\(ids)))
                        OR EXISTS (SELECT 1 FROM casevault_ledger WHERE id = ANY(\(ids)))
                    """, on: connection, logger: logger)
                throw shredded ? CaseVaultError.recordShredded() : CaseVaultError.recordNotFound()
            }
            let covered = found.filter { $0.type != .sessionNote || keepNotes }.map {
                ByteBuffer(bytes: $0.caseID.bytes)
            }
            if !covered.isEmpty,
                try await Self.exists(
                    "SELECT EXISTS (SELECT 1 FROM casevault_holds WHERE case_id = ANY(\(covered)))", on: connection,
                    logger: logger)
            {
                throw CaseVaultError(
                    .held, "the record's case is under a legal hold; it can be destroyed once the hold is released")
            }
            try await Self.shred(
                wanted, order: order, at: time, certifying: certifying, on: connection, logger: logger)
            return found
        }
        logger.info("records shredded", metadata: ["records.count": "\(shredded.count)"])
        return shredded
    }

    // MARK: Listing

    /// A page of the case list, newest first, with each case's live records counted by type (its header
    /// not counted): whether `rosterUID` is on the mediator roster, the cases and their counts are read in
    /// one snapshot (a read-only REPEATABLE READ transaction), and `query` builds the query from the first.
    package func listCases(
        rosterUID: UInt32?, _ query: (_ onRoster: Bool) -> CaseQuery
    ) throws(CaseVaultError) -> (rows: [CaseListRow], onRoster: Bool) {
        let logger = self.logger
        let queries = (off: query(false), on: query(true))
        let (onRoster, rows) = try self.run { connection in
            try await connection.snapshot(logger: logger) { connection -> (Bool, ListedCases) in
                let onRoster = try await Self.isOnRoster(rosterUID, on: connection, logger: logger)
                let query = onRoster ? queries.on : queries.off
                guard !query.visibility.isEmpty else { return (onRoster, ([], [])) }
                return (onRoster, try await Self.listCases(query, on: connection, logger: logger))
            }
        }
        var counts: [CaseID: [RecordType: Int]] = [:]
        for (caseID, type, count) in rows.1 {
            guard caseID.readableBytes == CaseID.byteCount, let type = RecordType(rawValue: type) else {
                throw CaseVaultError(.integrityFailure, "a record's row in the database is malformed")
            }
            counts[CaseID(bytes: Array(caseID.readableBytesView)), default: [:]][type] = count
        }
        let listed = try rows.0.map {
            (id, state, participants, mediators, supervisors, createdAt, closedAt) throws(CaseVaultError) in
            guard id.readableBytes == CaseID.byteCount, let state = CaseState(rawValue: state),
                let mediators = Self.uids(mediators), let supervisors = Self.uids(supervisors)
            else { throw CaseVaultError(.integrityFailure, "a case's row in the database is malformed") }
            let summary = CaseSummary(
                id: CaseID(bytes: Array(id.readableBytesView)), state: state, participantCount: participants,
                mediators: mediators, supervisors: supervisors, createdAt: createdAt, closedAt: closedAt)
            return CaseListRow(summary: summary, liveRecords: counts[summary.id] ?? [:])
        }
        return (listed, onRoster)
    }

    /// Cases' rows as `listCases` reads them, and their live records' counts by type.
    typealias ListedCases = (
        cases: [(ByteBuffer, String, Int, [Int64], [Int64], Int64, Int64?)], counts: [(ByteBuffer, String, Int)]
    )

    /// The cases `query` lists and their live records' counts by type, on `connection`.
    private static func listCases(_ query: CaseQuery, on connection: PostgresConnection, logger: Logger) async throws
        -> ListedCases
    {
        let visibility = query.visibility
        // Containment (`@>`) rather than `= ANY`, so that the arrays' GIN indexes serve it.
        let (mediator, supervisor, assigned) = (
            visibility.mediator.map { [Int64($0)] }, visibility.supervisor.map { [Int64($0)] },
            query.assignedTo.map { [Int64($0)] }
        )
        var cases: [(ByteBuffer, String, Int, [Int64], [Int64], Int64, Int64?)] = []
        for try await row in try await connection.query(
            """
            SELECT id, state, participant_count, mediators, supervisors, created_at, closed_at FROM casevault_cases
            WHERE (\(visibility.everyCase) OR (\(visibility.inIntake) AND state = 'intake')
                    OR mediators @> \(mediator)::bigint[] OR supervisors @> \(supervisor)::bigint[])
                AND (\(query.state?.rawValue)::text IS NULL OR state = \(query.state?.rawValue))
                AND (\(query.openedFrom)::bigint IS NULL OR created_at >= \(query.openedFrom))
                AND (\(query.openedBefore)::bigint IS NULL OR created_at < \(query.openedBefore))
                AND (\(assigned)::bigint[] IS NULL OR mediators @> \(assigned)::bigint[]
                    OR supervisors @> \(assigned)::bigint[])
                AND (\(query.after?.openedAt)::bigint IS NULL
                    OR (created_at, id) < (\(query.after?.openedAt), \(query.after.map { ByteBuffer(bytes: $0.id.bytes) })))
            ORDER BY created_at DESC, id DESC LIMIT \(query.limit)
            """, logger: logger
        ).decode((ByteBuffer, String, Int, [Int64], [Int64], Int64, Int64?).self) {
            cases.append(row)
        }
        var counts: [(ByteBuffer, String, Int)] = []
        for try await row in try await connection.query(
            """
            SELECT case_id, type, count(*)::bigint FROM casevault_records
            WHERE case_id = ANY(\(cases.map(\.0))) AND type <> \(RecordType.caseHeader.rawValue)
            GROUP BY case_id, type
            """, logger: logger
        ).decode((ByteBuffer, String, Int).self) {
            counts.append(row)
        }
        return (cases, counts)
    }

    /// A page of a case's live records of `types` (metadata only), in filing order after `after`; with the
    /// cursor of the next page when there may be one. Pages go by the database's filing order alone (the
    /// cursor's time is the record's, for its shape): daemons' clocks differ, and a record filed later with
    /// an earlier time would otherwise fall behind a cursor already past it.
    package func liveRecords(
        caseID: CaseID, types: Set<RecordType>, after: RecordListCursor?, limit: Int
    ) throws(CaseVaultError) -> (records: [RecordMetadata], next: RecordListCursor?) {
        guard !types.isEmpty else { return ([], nil) }
        let logger = self.logger
        let names = types.map(\.rawValue).sorted()
        let rows = try self.run { connection in
            var rows: [MetadataRow] = []
            for try await row in try await connection.query(
                """
                SELECT \(unescaped: Self.metadataColumns) FROM casevault_records
                WHERE case_id = \(ByteBuffer(bytes: caseID.bytes)) AND type = ANY(\(names))
                    AND filed > \(after?.sequence ?? Int64.min)
                ORDER BY filed LIMIT \(limit)
                """, logger: logger
            ).decode(MetadataRow.self) {
                rows.append(row)
            }
            return rows
        }
        let found = try rows.map { row throws(CaseVaultError) in try Self.metadata(row) }
        let next =
            found.count == limit
            ? found.last.map { RecordListCursor(filedAt: $0.metadata.createdAt, sequence: $0.filed) } : nil
        return (found.map(\.metadata), next)
    }

    /// Metadata of every live record of a case, in the order they were filed.
    package func records(caseID: CaseID) throws(CaseVaultError) -> [RecordMetadata] {
        let logger = self.logger
        let rows = try self.run { connection in
            var rows: [MetadataRow] = []
            for try await row in try await connection.query(
                """
                SELECT \(unescaped: Self.metadataColumns) FROM casevault_records
                WHERE case_id = \(ByteBuffer(bytes: caseID.bytes)) ORDER BY filed
                """, logger: logger
            ).decode(MetadataRow.self) {
                rows.append(row)
            }
            return rows
        }
        return try rows.map { row throws(CaseVaultError) in try Self.metadata(row).metadata }
    }

    /// A record's metadata as the queries select it (`metadataColumns`), with its filing order.
    typealias MetadataRow = (ByteBuffer, ByteBuffer, String, Int64, String?, ByteBuffer?, Int, Int64)
    static let metadataColumns = "id, case_id, type, created_at, author, supersedes, octet_length(blob), filed"

    static func metadata(_ row: MetadataRow) throws(CaseVaultError) -> (metadata: RecordMetadata, filed: Int64) {
        let (id, caseID, type, createdAt, author, supersedes, size, filed) = row
        guard caseID.readableBytes == CaseID.byteCount, let type = RecordType(rawValue: type) else {
            throw CaseVaultError(.integrityFailure, "a record's row in the database is malformed")
        }
        let metadata = RecordMetadata(
            id: try Self.recordID(id), caseID: CaseID(bytes: Array(caseID.readableBytesView)), type: type,
            createdAt: createdAt, author: author,
            supersedes: try supersedes.map { bytes throws(CaseVaultError) in try Self.recordID(bytes) },
            sealedSize: size)
        return (metadata, filed)
    }

    // MARK: Certificates

    /// The advisory lock under which erasures are certified, one daemon at a time (`CVCERTIF` in ASCII).
    static let certifyingLock: Int64 = 0x4356_4345_5254_4946

    /// Certificate documents, in the order they were issued; of one case when `caseID` is given.
    package func certificates(caseID: CaseID? = nil) throws(CaseVaultError) -> [[UInt8]] {
        let logger = self.logger
        return try self.run { connection in
            let query: PostgresQuery =
                if let caseID {
                    "SELECT document FROM casevault_certificates WHERE case_id = \(ByteBuffer(bytes: caseID.bytes)) ORDER BY filed"
                } else {
                    "SELECT document FROM casevault_certificates ORDER BY filed"
                }
            var documents: [[UInt8]] = []
            for try await document in try await connection.query(query, logger: logger).decode(ByteBuffer.self) {
                documents.append(Array(document.readableBytesView))
            }
            return documents
        }
    }

    /// Every shred's record id and time, oldest first: the shred ledger's export. Those of this vault
    /// (`casevault_shreds`), and those it knows of only from a restore's ledger or backup
    /// (`casevault_ledger`), so that restoring an older backup with this export does not bring them back.
    package func shreddedRecords() throws(CaseVaultError) -> [(id: RecordID, shreddedAt: Int64)] {
        let logger = self.logger
        return try self.run { connection -> [(id: RecordID, shreddedAt: Int64)] in
            var shredded: [(id: RecordID, shreddedAt: Int64)] = []
            for try await (id, at) in try await connection.query(
                """
                SELECT id, shredded_at FROM casevault_shreds
                UNION ALL SELECT id, shredded_at FROM casevault_ledger l
                    WHERE NOT EXISTS (SELECT 1 FROM casevault_shreds s WHERE s.id = l.id)
                ORDER BY shredded_at, id
                """, logger: logger
            ).decode((ByteBuffer, Int64).self) {
                guard id.readableBytes == RecordID.byteCount else {
                    throw CaseVaultError(.integrityFailure, "a shred's row in the database has a malformed id")
                }
                shredded.append((RecordID(bytes: Array(id.readableBytesView)), at))
            }
            return shredded
        }
    }

    /// One certificate document; `not-found` for an unknown id.
    package func certificate(_ id: String) throws(CaseVaultError) -> [UInt8] {
        let logger = self.logger
        let document = try self.run { connection -> [UInt8]? in
            for try await document in try await connection.query(
                "SELECT document FROM casevault_certificates WHERE id = \(id)", logger: logger
            ).decode(ByteBuffer.self) {
                return Array(document.readableBytesView)
            }
            return nil
        }
        guard let document else {
            throw CaseVaultError(.notFound, "no certificate has this id; list them with GET /v1/certificates")
        }
        return document
    }

    /// Records an operator's word that daemon `name`'s epoch key file is destroyed (`EpochExchange.forget`).
    package func forgetDaemon(_ name: DaemonName) throws(CaseVaultError) -> [UInt64] {
        let (logger, file) = (self.logger, self.epochKeys)
        let awayAfter = EpochSchedule.awayAfter(eraseWindow: self.eraseWindow)
        let epochs = try self.run { connection in
            try await EpochExchange.forget(name, awayAfter: awayAfter, file: file, on: connection, logger: logger)
        }
        logger.warning(
            "a daemon was forgotten on an operator's word that its epoch key file is destroyed",
            metadata: ["daemon.name": "\(name.rawValue)", "epoch.marked_destroyed": "\(epochs)"])
        return epochs
    }

    /// The erase epoch new data keys are wrapped under (0 before the first) and the erase epochs this
    /// daemon's key file holds, for the status.
    package func keyEpochs() throws(CaseVaultError) -> (current: UInt64, active: [UInt64]) {
        let logger = self.logger
        let wrap = try self.run { connection in try await EpochExchange.wrapEpoch(connection, logger: logger) }
        return (wrap ?? 0, self.epochKeys.keyEpochs())
    }

    /// The live records (case headers not counted) and the bytes of the vault's tables, their indexes and
    /// out-of-line values included (`pg_total_relation_size`), for the operator's metrics.
    package func footprint() throws(CaseVaultError) -> (liveRecords: Int, bytes: Int64) {
        let logger = self.logger
        return try self.run { connection -> (liveRecords: Int, bytes: Int64) in
            for try await (records, bytes) in try await connection.query(
                """
                SELECT (SELECT count(*) FROM casevault_records WHERE type <> 'case_header'),
                    (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.relkind = 'r' AND c.relname LIKE 'casevault\\_%' AND n.nspname = current_schema())
                """, logger: logger
            ).decode((Int64, Int64).self) {
                return (Int(records), bytes)
            }
            return (0, 0)
        }
    }

    /// An operator's rotation of the erase epochs (`ServedStorage.rotateErasureEpochs`), under the turn lock:
    /// without one under way, marks the current epoch for a turn now (`turn_requested_at`, which every
    /// daemon's step reads: pairs at once, the turn once every holder has one) and records the epoch after it
    /// as the rotation's target; then reports what is left before the target is current, nothing live is
    /// wrapped under an older epoch and no daemon holds one (retired daemons included: forget one whose host
    /// is gone). The call that finds it so ends the rotation. `key-unavailable` before the first epoch.
    package func rotateErasureEpochs() throws(CaseVaultError) -> ErasureRotation {
        let (logger, check) = (self.logger, self.sealing.rootKeyCheck)
        let rotation = try self.inTransaction { connection -> ErasureRotation in
            try await connection.perform("SELECT pg_advisory_xact_lock(\(EpochExchange.turnLock))", logger: logger)
            // The vault's row, which holds the rotation's target (every daemon makes it at start).
            try await PostgresSchema.checkRootKey(check, on: connection, logger: logger)
            guard let current = try await EpochExchange.currentEpoch(connection, logger: logger) else {
                throw CaseVaultError(
                    .keyUnavailable, "no erase epoch has been turned to yet: the first daemon turns to one as it starts"
                )
            }
            var target: UInt64?
            for try await found in try await connection.query(
                "SELECT rotation_target FROM casevault_vault", logger: logger
            ).decode(Int64?.self) {
                target = found.map { UInt64($0) }
            }
            let opened = target == nil
            if target == nil {
                try await connection.perform(
                    "UPDATE casevault_epochs SET turn_requested_at = now() WHERE number = \(Int64(current))",
                    logger: logger)
                try await connection.perform(
                    "UPDATE casevault_vault SET rotation_target = \(Int64(current + 1))", logger: logger)
                target = current + 1
            }
            let goal = Int64(target ?? current + 1)
            var remaining = 0
            for try await count in try await connection.query(
                """
                SELECT (SELECT count(*) FROM casevault_records WHERE epoch < \(goal))
                    + (SELECT count(*) FROM casevault_holds WHERE epoch < \(goal))
                """, logger: logger
            ).decode(Int64.self) {
                remaining = Int(count)
            }
            var holding: [String] = []
            for try await daemon in try await connection.query(
                """
                SELECT daemon FROM casevault_epoch_holders WHERE epoch < \(goal) AND destroyed_at IS NULL
                UNION SELECT daemon FROM casevault_epoch_copies WHERE epoch < \(goal)
                ORDER BY 1
                """, logger: logger
            ).decode(String.self) {
                holding.append(daemon)
            }
            let wrap = try await EpochExchange.wrapEpoch(connection, logger: logger) ?? 0
            let complete = current >= UInt64(goal) && wrap >= UInt64(goal) && remaining == 0 && holding.isEmpty
            if complete {
                try await connection.perform("UPDATE casevault_vault SET rotation_target = NULL", logger: logger)
            }
            return ErasureRotation(
                epoch: UInt64(goal), opened: opened, remaining: remaining, holding: holding, complete: complete)
        }
        if rotation.opened || rotation.complete {
            logger.notice(
                rotation.opened
                    ? "a rotation of the erase epochs was asked for: the daemons turn now"
                    : "a rotation of the erase epochs is complete: every daemon destroyed the older epochs",
                metadata: ["epoch": "\(rotation.epoch)"])
        }
        return rotation
    }

    /// Step 5 of a turn: for every shred's certificate whose epoch (and every older one) each daemon that held
    /// it has destroyed, the second certificate, stating when the last of them did, and naming the daemons
    /// whose destruction rests on an operator's word (`forgetDaemon`). Each first certificate
    /// is verified with the vault's key before its erasure is certified (`integrity-failure` naming it
    /// otherwise). One daemon at a time, under an advisory lock; returns how many it issued. Like every
    /// write, it shares the filing lock and is refused in a moved vault (`vault-moved`), but it does not
    /// wait for that lock: while a restore, a move or a count holds it alone (or waits to), this round
    /// certifies nothing (0), and the daemon's steps, which run it every 2 s, go on.
    @discardableResult
    package func certifyErasures() throws(CaseVaultError) -> Int {
        let (sealing, logger, time) = (self.sealing, self.logger, self.now())
        return try self.run { connection in
            try await connection.transaction(logger: logger) { connection -> Int in
                try await connection.perform("SELECT pg_advisory_xact_lock(\(Self.certifyingLock))", logger: logger)
                guard try await PostgresRecords.tryShareFilingLockUnlessMoved(on: connection, logger: logger) else {
                    return 0
                }
                let rows = try await connection.query(
                    """
                    SELECT c.id, c.epoch, c.case_id, c.document,
                        (SELECT (extract(epoch FROM max(h.destroyed_at)) * 1000)::bigint FROM casevault_epoch_holders h
                            WHERE h.epoch <= c.epoch),
                        ARRAY(SELECT DISTINCT h.daemon FROM casevault_epoch_holders h
                            WHERE h.epoch <= c.epoch AND h.attested ORDER BY h.daemon)
                    FROM casevault_certificates c
                    WHERE c.completes IS NULL AND NOT c.restored
                        AND NOT EXISTS (SELECT 1 FROM casevault_certificates d WHERE d.completes = c.id)
                        AND EXISTS (SELECT 1 FROM casevault_epoch_holders h WHERE h.epoch = c.epoch)
                        AND NOT EXISTS (
                            SELECT 1 FROM casevault_epoch_holders h WHERE h.epoch <= c.epoch AND h.destroyed_at IS NULL)
                        -- A copy of such an epoch still waiting for a daemon would give it the key again.
                        AND NOT EXISTS (SELECT 1 FROM casevault_epoch_copies p WHERE p.epoch <= c.epoch)
                    ORDER BY c.filed
                    """, logger: logger)
                var done:
                    [(
                        id: String, epoch: Int64, caseID: ByteBuffer, document: [UInt8], completedAt: Int64,
                        attested: [String]
                    )] = []
                for try await (id, epoch, caseID, document, completedAt, attested) in rows.decode(
                    (String, Int64, ByteBuffer, ByteBuffer, Int64, [String]).self)
                {
                    done.append((id, epoch, caseID, Array(document.readableBytesView), completedAt, attested))
                }
                for (id, column, caseID, document, completedAt, attested) in done {
                    // What was judged complete is what the signed document says, not the row's columns alone.
                    guard
                        let first = DestructionCertificate.verify(
                            document: document, publicKey: sealing.certificatePublicKey),
                        first.certificateID == id, let epoch = first.erasure?.epoch, Int64(epoch) == column,
                        first.erasure?.completes == nil,
                        first.caseID == Hex.encode(caseID.readableBytesView)
                    else {
                        throw CaseVaultError(
                            .integrityFailure,
                            "certificate \(id) in the database does not verify with the vault's key, or its row does not match it: it was altered"
                        )
                    }
                    var second = first
                    second.certificateID = Self.newCertificateID()
                    second.issuedAt = Timestamp.rfc3339(time)
                    second.erasure = DestructionCertificate.Erasure(
                        epoch: epoch, completes: id, completedAt: Timestamp.rfc3339(completedAt), attested: attested)
                    second.version = DestructionCertificate.version(of: second.erasure)
                    try await Self.issue(second, at: time, signedBy: sealing, on: connection, logger: logger)
                }
                return done.count
            }
        }
    }

    package func metadata(_ id: RecordID) throws(CaseVaultError) -> RecordMetadata {
        try self.liveRow(id).metadata
    }

    package func storedRecord(_ id: RecordID) throws(CaseVaultError) -> StoredRecord {
        try self.stored(try self.liveRow(id))
    }

    /// The record's row, its case's and whether `rosterUID` is on the roster, in one statement (one
    /// snapshot, one round trip); `decide` sees them before the key is looked up.
    package func storedRecord(
        _ id: RecordID, rosterUID: UInt32?, decide: (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> StoredRecord {
        let logger = self.logger
        let found = try self.run { connection in
            try await Self.recordCaseAndRoster(id, rosterUID: rosterUID, on: connection, logger: logger)
        }
        guard let (row, summary, onRoster) = found else { throw try self.missing(id) }
        try decide(row.metadata, try Self.present(summary), onRoster)
        return try self.stored(row)
    }

    /// The record's row, its case's (`nil` when the case's row is missing) and whether `rosterUID` is on the
    /// roster, in one prepared statement; `nil` when the record has no row.
    static func recordCaseAndRoster(
        _ id: RecordID, rosterUID: UInt32?, on connection: PostgresConnection, logger: Logger
    ) async throws -> (PostgresRecords.Row, CaseSummary?, Bool)? {
        let rows = try await connection.rows(
            Prepared.RecordCaseAndRoster(rosterUID: rosterUID.map { Int64($0) }, recordID: ByteBuffer(bytes: id.bytes)),
            logger: logger)
        for (
            caseID, type, createdAt, epoch, wrapped, blob, author, supersedes, state, count, mediators,
            supervisors, caseCreatedAt, closedAt, onRoster
        ) in rows {
            let row = try PostgresRecords.row(id, (caseID, type, createdAt, epoch, wrapped, blob, author, supersedes))
            guard let state, let count, let mediators, let supervisors, let caseCreatedAt else {
                return (row, nil, onRoster)
            }
            let summary = try Self.summary(row.caseID, (state, count, mediators, supervisors, caseCreatedAt, closedAt))
            return (row, summary, onRoster)
        }
        return nil
    }

    /// A record's case as `recordCaseAndRoster` read it: a live record whose case's row is missing is damage.
    static func present(_ summary: CaseSummary?) throws(CaseVaultError) -> CaseSummary {
        guard let summary else {
            throw CaseVaultError(.integrityFailure, "a record's case is missing from the database")
        }
        return summary
    }

    /// Whether `id` was shredded: a shred's row, or an entry of the ledger a restore kept
    /// (`casevault_ledger`: a record this vault never held, shredded in the vault it was restored from).
    package func shredHasBegun(_ id: RecordID) throws(CaseVaultError) -> Bool {
        try self.exists(Self.shredHasBegunQuery(id))
    }

    static func shredHasBegunQuery(_ id: RecordID) -> PostgresQuery {
        let id = ByteBuffer(bytes: id.bytes)
        return """
            SELECT EXISTS (SELECT 1 FROM casevault_shreds WHERE id = \(id))
                OR EXISTS (SELECT 1 FROM casevault_ledger WHERE id = \(id))
            """
    }

    /// A live record's row; `shredded` or `not-found` when there is none.
    private func liveRow(_ id: RecordID) throws(CaseVaultError) -> PostgresRecords.Row {
        let records = self.records
        guard let row = try self.run({ connection in try await records.row(id, on: connection) }) else {
            throw try self.missing(id)
        }
        return row
    }

    /// What a reader is told of a record with no row: `shredded` when its shred's row says so.
    private func missing(_ id: RecordID) throws(CaseVaultError) -> CaseVaultError {
        try self.shredHasBegun(id) ? CaseVaultError.recordShredded() : CaseVaultError.recordNotFound()
    }

    /// A row with its key as the sealing layer opens it: under the key of the epoch the row names.
    private func stored(_ row: PostgresRecords.Row, again: Bool = true) throws(CaseVaultError) -> StoredRecord {
        if let stored = try self.storedIfHeld(row) { return stored }
        // A turn may have rewrapped the row and destroyed its epoch since it was read: read it once more.
        if again {
            let reread = try self.liveRow(row.id)
            if reread.epoch != row.epoch { return try self.stored(reread, again: false) }
        }
        throw Self.epochNotHeld(row)
    }

    /// The row with its key as the sealing layer opens it, when this daemon holds the key of its epoch.
    func storedIfHeld(_ row: PostgresRecords.Row) throws(CaseVaultError) -> StoredRecord? {
        guard let key = try self.epochKeys.epochKeys().first(where: { $0.number == row.epoch }) else { return nil }
        return StoredRecord(
            key: StoredKey(metadata: row.metadata, wrap: .eraseEpoch(key), wrapped: row.wrappedKey), blob: row.blob)
    }

    static func epochNotHeld(_ row: PostgresRecords.Row) -> CaseVaultError {
        CaseVaultError(
            .keyUnavailable,
            "record \(row.id)'s key is wrapped under erase epoch \(row.epoch), whose key this daemon does not hold")
    }

    // MARK: Cases

    /// Takes the locks of the cases `caseIDs` (their bytes) for the caller's transaction, each once, in the
    /// order of their keys, in one statement (an ordered subquery feeds the locks): so do a shred on request
    /// and each batch of the sweep, which take several, and never deadlock with each other.
    static func lockCases(_ caseIDs: [[UInt8]], on connection: PostgresConnection, logger: Logger) async throws {
        let keys = Set(caseIDs.map { Self.caseLockKey($0) }).sorted().map { Int64($0) }
        try await connection.perform(
            """
            SELECT count(pg_advisory_xact_lock(\(Self.caseLockSpace), k::int4))
            FROM (SELECT k FROM unnest(\(keys)::int8[]) AS k ORDER BY k) AS keys
            """, logger: logger)
    }

    /// The second key of a case's advisory lock: the case id's first four bytes.
    static func caseLockKey(_ caseID: [UInt8]) -> Int32 {
        Int32(bitPattern: caseID.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
    }

    /// Runs `body` holding the case's lock: a transaction-scoped advisory lock, in a transaction that every
    /// call of `body` on this thread joins (`Pinned`) and that commits when `body` returns, so that what the
    /// body wrote becomes visible at once, under the lock, and a body that throws writes nothing. A daemon's
    /// threads and other daemons wait alike. Inside another case's lock on this thread, the lock joins that
    /// transaction and is released with it, taken in the caller's order: nest case locks only in the order
    /// of their keys, as shreds and the sweep take several (no caller nests today), or PostgreSQL ends one
    /// of two deadlocked transactions with an error. What the body's calls write is kept only at the
    /// commit here: a call's own success inside the body acknowledges nothing yet.
    package func withCaseLock<T>(_ id: CaseID, _ body: () throws(CaseVaultError) -> T) throws(CaseVaultError) -> T {
        try self.withCaseLock(id, reading: { _ in ((), nil) }, { () throws(CaseVaultError) in try body() })
    }

    /// `withCaseLock`, the case's row and whether `rosterUID` is on the roster read in the same wait on the
    /// database as the lock is taken (after it: in its own statement, so in a snapshot the lock's grant
    /// precedes). That statement also takes the lock filings share and reads the epoch new wraps use
    /// (`Prepared.CaseRosterAndWrapEpoch`), so that a filing in `body` asks the database nothing more before
    /// its insert: this is the filings' lock.
    package func withCaseLock<T>(
        _ id: CaseID, readingRoster rosterUID: UInt32?,
        _ body: (CaseSummary?, Bool) throws(CaseVaultError) -> T
    ) throws(CaseVaultError) -> T {
        let logger = self.logger
        return try self.withCaseLock(
            id,
            reading: { connection -> ((CaseSummary?, Bool), UInt64?) in
                let found = try await Self.caseSharingFilingLock(
                    id, rosterUID: rosterUID, on: connection, logger: logger)
                return ((found.summary, found.onRoster), found.wrapEpoch)
            },
            { (read: (CaseSummary?, Bool)) throws(CaseVaultError) in try body(read.0, read.1) })
    }

    /// `withCaseLock`, with what `read` reads on the lock's connection right after the lock is taken, in the
    /// same wait, handed to `body`, and the epoch new wraps use when `read` took the filing lock (kept for
    /// the body's filings: `Pinned.wrapEpoch`).
    private func withCaseLock<Read: Sendable, T>(
        _ id: CaseID, reading read: @escaping @Sendable (PostgresConnection) async throws -> (Read, UInt64?),
        _ body: (Read) throws(CaseVaultError) -> T
    ) throws(CaseVaultError) -> T {
        let lock = Prepared.CaseLock(space: Self.caseLockSpace, key: Self.caseLockKey(id.bytes))
        let logger = self.logger
        if let pinned = self.pinnedConnection {
            // Inside another case's lock: its transaction, with the epoch this read took the filing lock for
            // when it did.
            let (value, wrapEpoch) = try self.run { connection in
                _ = try await connection.rows(lock, logger: logger)
                return try await read(connection)
            }
            return try self.pinning(
                pinned, wrapEpoch: wrapEpoch ?? self.pinnedWrapEpoch, failing: "a case's filing failed"
            ) { () throws(CaseVaultError) in try body(value) }.get()
        }
        let (connection, (value, wrapEpoch)) = try self.beginPinnable([PostgresConnection.begin]) { connection in
            _ = try await connection.rows(lock, logger: logger)
            return try await read(connection)
        }
        let outcome = self.pinning(connection, wrapEpoch: wrapEpoch, failing: "a case's filing failed") {
            () throws(CaseVaultError) in
            try body(value)
        }
        do throws(CaseVaultError) {
            switch outcome {
            case .success:
                do throws(CaseVaultError) {
                    try Self.wait(closing: connection) { try await connection.commit(logger: logger) }
                } catch {
                    throw Self.committing(error)
                }
                self.checkIn(connection)
            case .failure(let error) where error.code == .storageUnavailable:
                // A server that stopped taking writes, or a session that went, is not asked again, as in
                // `run`: closing the session ends its transaction.
                Self.discard(connection)
            case .failure:
                try Self.wait(closing: connection) { try await connection.perform("ROLLBACK", logger: logger) }
                self.checkIn(connection)
            }
        } catch {
            Self.discard(connection)
            // A commit that failed wrote nothing that was acknowledged: the call fails. A rollback that failed
            // leaves the body's own error to tell.
            if case .success = outcome { throw error }
        }
        return try outcome.get()
    }

    /// A connection of its own (checked out, or a new one to the primary) on which `statements` have begun a
    /// transaction, for `pinning`; the connection is closed when they fail, which ends whatever began.
    func beginPinnable(_ statements: [PostgresQuery]) throws(CaseVaultError) -> PostgresConnection {
        try self.beginPinnable(statements) { _ in () }.connection
    }

    /// `beginPinnable`, then `then` on the connection in the same wait, with what it answered.
    func beginPinnable<Value: Sendable>(
        _ statements: [PostgresQuery], then: @escaping @Sendable (PostgresConnection) async throws -> Value
    ) throws(CaseVaultError) -> (connection: PostgresConnection, value: Value) {
        guard !self.closed.withLock({ $0 }) else { throw Self.closedError }
        let (logger, connection) = (self.logger, try self.checkOut())
        do throws(CaseVaultError) {
            let value = try Self.wait(closing: connection) {
                for statement in statements { try await connection.perform(statement, logger: logger) }
                return try await then(connection)
            }
            return (connection, value)
        } catch {
            Self.discard(connection)
            throw error
        }
    }

    /// What `body` answers with every call of this storage on this thread joining `connection`'s
    /// transaction (`pinned`); anything but a `CaseVaultError` thrown comes out as `storage-failure`
    /// saying `failing`.
    func pinning<T>(
        _ connection: PostgresConnection, wrapEpoch: UInt64? = nil, failing: String,
        _ body: () throws(CaseVaultError) -> T
    ) -> Result<T, CaseVaultError> {
        do {
            let pinned = Pinned(storage: ObjectIdentifier(self), connection: connection, wrapEpoch: wrapEpoch)
            return .success(try Self.$pinned.withValue(pinned) { try body() })
        } catch let error as CaseVaultError {
            return .failure(error)
        } catch {
            return .failure(CaseVaultError(.storageFailure, failing, cause: error))
        }
    }

    /// The connection of the case's lock this thread holds in this storage, whose transaction calls join.
    var pinnedConnection: PostgresConnection? {
        Self.pinned.flatMap { $0.storage == ObjectIdentifier(self) ? $0.connection : nil }
    }

    /// The epoch new wraps use, as the case's lock this thread holds in this storage read it with the filing
    /// lock; `nil` when it holds none, or one taken without the filing lock.
    var pinnedWrapEpoch: UInt64? {
        Self.pinned.flatMap { $0.storage == ObjectIdentifier(self) ? $0.wrapEpoch : nil }
    }

    /// Runs `body` in a transaction: the transaction of the case's lock this thread holds, which it joins
    /// (committed with it), or a new one on a connection `run` picks.
    private func inTransaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T)
        throws(CaseVaultError) -> T
    {
        if self.pinnedConnection != nil { return try self.run(body) }
        let logger = self.logger
        return try self.run { connection in
            try await connection.transaction(logger: logger) { connection -> T in try await body(connection) }
        }
    }

    package func caseSummary(_ id: CaseID) throws(CaseVaultError) -> CaseSummary {
        let logger = self.logger
        guard
            let summary = try self.run({ connection in try await Self.caseSummary(id, on: connection, logger: logger) })
        else { throw CaseVaultError.caseNotFound() }
        return summary
    }

    package func caseHeaderID(_ id: CaseID) throws(CaseVaultError) -> RecordID {
        let logger = self.logger
        let ids = try self.run { connection in
            try await Self.ids(
                "SELECT header_id FROM casevault_cases WHERE id = \(ByteBuffer(bytes: id.bytes))", on: connection,
                logger: logger)
        }
        guard let header = ids.first else { throw CaseVaultError.caseNotFound() }
        return header
    }

    /// A case's live session notes, in filing order; none while a hold keeps them
    /// (`holdsKeepSessionNotes`). Called under the case's lock, which a placing of a hold also takes.
    package func notesToDestroy(_ caseID: CaseID) throws(CaseVaultError) -> [RecordID] {
        let (logger, holdsKeep) = (self.logger, self.holdsKeepSessionNotes)
        return try self.run { connection in
            try await Self.notesToDestroy(caseID, holdsKeep: holdsKeep, on: connection, logger: logger)
        }
    }

    static func notesToDestroy(_ caseID: CaseID, holdsKeep: Bool, on connection: PostgresConnection, logger: Logger)
        async throws -> [RecordID]
    {
        if holdsKeep, try await Self.exists(Self.isHeldQuery(caseID), on: connection, logger: logger) {
            return []
        }
        return try await Self.ids(
            """
            SELECT id FROM casevault_records WHERE case_id = \(ByteBuffer(bytes: caseID.bytes))
                AND type = \(RecordType.sessionNote.rawValue) ORDER BY filed
            """, on: connection, logger: logger)
    }

    /// A case's live agreements to mediate, in filing order, with no sealed participant
    /// (`sealsUnderEraseEpochs`): the filing of a note opens them to read who agreed.
    package func agreements(_ caseID: CaseID) throws(CaseVaultError) -> [(id: RecordID, sealedParticipant: [UInt8]?)] {
        let logger = self.logger
        return try self.run { connection in try await Self.agreements(caseID, on: connection, logger: logger) }
    }

    static func agreements(_ caseID: CaseID, on connection: PostgresConnection, logger: Logger) async throws
        -> [(id: RecordID, sealedParticipant: [UInt8]?)]
    {
        try await Self.ids(
            """
            SELECT id FROM casevault_records WHERE case_id = \(ByteBuffer(bytes: caseID.bytes))
                AND type = \(RecordType.agreementToMediate.rawValue) ORDER BY filed
            """, on: connection, logger: logger
        ).map { ($0, nil) }
    }

    /// Nothing: the filing that marked them deleted their rows and wrote their shreds' rows and certificate
    /// in its own transaction.
    package func finishMarkedShreds(_ ids: [RecordID]) throws(CaseVaultError) {}

    /// Closes a case without a final agreement, shredding its session notes (none while a hold keeps them)
    /// in the transaction that closes it, with their certificate: `case-closed` for a closed case,
    /// `not-found` for an unknown one. Returns the notes shredded.
    package func closeCase(_ id: CaseID, outcome: ClosingOutcome, authority: Authority = .daemon)
        throws(CaseVaultError) -> [RecordID]
    {
        let shredded = try self.withCaseLock(id) { () throws(CaseVaultError) in
            let summary = try self.caseSummary(id)
            let effect = try CasePolicy.closing(summary, notes: try self.notesToDestroy(id))
            let (logger, time, certifying) = (self.logger, self.now(), (self.sealing, self.eraseWindow))
            var effects = FilingEffects()
            effects.caseState = (id, effect.state, time, outcome.rawValue)
            effects.markShredding = effect.shredNotes
            effects.shredOrder = ShredOrder(method: .caseClosed, authority: authority, reason: outcome.rawValue)
            try self.inTransaction { [effects] connection in
                try await PostgresRecords.shareFilingLockUnlessMoved(on: connection, logger: logger)
                try await Self.apply(effects, at: time, certifying: certifying, on: connection, logger: logger)
            }
            return effect.shredNotes
        }
        self.logger.info("case closed", metadata: ["case.id": "\(id)", "records.shredded": "\(shredded.count)"])
        return shredded
    }

    /// Replaces the case's mediators or supervisors; `not-found` for an unknown case.
    package func assign(_ assignment: CaseAssignment, _ id: CaseID, _ uids: [UInt32]) throws(CaseVaultError) {
        let logger = self.logger
        let values = Set(uids).sorted().map { Int64($0) }
        let updated = try self.withCaseLock(id) { () throws(CaseVaultError) in
            try self.inTransaction { connection in
                try await PostgresRecords.shareFilingLockUnlessMoved(on: connection, logger: logger)
                let query: PostgresQuery =
                    switch assignment {
                    case .mediators:
                        "UPDATE casevault_cases SET mediators = \(values) WHERE id = \(ByteBuffer(bytes: id.bytes)) RETURNING true"
                    case .supervisors:
                        "UPDATE casevault_cases SET supervisors = \(values) WHERE id = \(ByteBuffer(bytes: id.bytes)) RETURNING true"
                    }
                return try await Self.exists(query, on: connection, logger: logger)
            }
        }
        guard updated else { throw CaseVaultError.caseNotFound() }
    }

    // MARK: Roster

    /// The uids on the mediator roster, in order.
    package func roster() throws(CaseVaultError) -> [UInt32] {
        let logger = self.logger
        let uids = try self.run { connection in
            var uids: [Int64] = []
            for try await uid in try await connection.query(
                "SELECT uid FROM casevault_roster ORDER BY uid", logger: logger
            ).decode(Int64.self) {
                uids.append(uid)
            }
            return uids
        }
        guard let roster = Self.uids(uids) else {
            throw CaseVaultError(.integrityFailure, "the roster in the database is malformed")
        }
        return roster
    }

    package func isOnRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool {
        let logger = self.logger
        return try self.run { connection in try await Self.isOnRoster(uid, on: connection, logger: logger) }
    }

    /// Puts `uid` on the mediator roster; returns whether it was new.
    @discardableResult
    package func addToRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool {
        try self.writes(
            "INSERT INTO casevault_roster (uid) VALUES (\(Int64(uid))) ON CONFLICT DO NOTHING RETURNING true")
    }

    /// Takes `uid` off the mediator roster, which ends their access at their next request; returns whether
    /// it was on it.
    @discardableResult
    package func removeFromRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool {
        try self.writes("DELETE FROM casevault_roster WHERE uid = \(Int64(uid)) RETURNING true")
    }

    // MARK: Legal holds

    /// Each reason under a key of its own, wrapped under an erase epoch: a released hold's row lives on in
    /// PostgreSQL's residue, which then opens for no one once the epoch is destroyed.
    package var sealsUnderEraseEpochs: Bool { true }

    /// Keeps `hold`, its reason's key wrapped under the epoch new wraps use (checked as a filing's is).
    package func insertHold(_ hold: SealedHold) throws(CaseVaultError) {
        let logger = self.logger
        let _: Bool = try self.underWrapEpoch { key, connection in
            let inserted = try await connection.query(
                """
                INSERT INTO casevault_holds (id, case_id, placed_at, placed_by_uid, placed_by_role, epoch, wrapped_key,
                    sealed_reason)
                SELECT \(ByteBuffer(bytes: hold.id.bytes)), \(ByteBuffer(bytes: hold.caseID.bytes)), \(hold.placedAt),
                    \(hold.placedBy.uid.map { Int64($0) }), \(hold.placedBy.role), \(Int64(key.number)),
                    \(ByteBuffer(bytes: try hold.wrappedReasonKey(under: key))), \(ByteBuffer(bytes: hold.sealedReason))
                WHERE \(Int64(key.number)) = (SELECT max(number) FROM casevault_epochs WHERE ready_at IS NOT NULL)
                    AND NOT EXISTS (SELECT 1 FROM casevault_vault WHERE moved_by IS NOT NULL)
                RETURNING true
                """, logger: logger)
            var placed: Bool?
            for try await value in inserted.decode(Bool.self) { placed = value }
            // A hold that waited behind a move for the filing lock is refused, as a filing is.
            if placed == nil { try await PostgresSchema.refuseMoved(on: connection, logger: logger) }
            return placed
        }
    }

    /// The standing holds, oldest first, each reason's wrapped key with the key of the epoch it is under.
    /// A hold under an epoch this daemon no longer holds is read once more (a turn may have rewrapped it and
    /// destroyed that epoch since), then `key-unavailable`.
    package func sealedHolds() throws(CaseVaultError) -> [SealedHold] {
        do {
            return try self.sealedHoldsOnce()
        } catch  where error.code == .keyUnavailable {
            return try self.sealedHoldsOnce()
        }
    }

    private func sealedHoldsOnce() throws(CaseVaultError) -> [SealedHold] {
        let logger = self.logger
        let rows = try self.run { connection in
            var rows: [(ByteBuffer, ByteBuffer, Int64, Int64?, String, Int64, ByteBuffer, ByteBuffer)] = []
            for try await row in try await connection.query(
                """
                SELECT id, case_id, placed_at, placed_by_uid, placed_by_role, epoch, wrapped_key, sealed_reason
                FROM casevault_holds ORDER BY filed
                """, logger: logger
            ).decode((ByteBuffer, ByteBuffer, Int64, Int64?, String, Int64, ByteBuffer, ByteBuffer).self) {
                rows.append(row)
            }
            return rows
        }
        let keys = try self.epochKeys.epochKeys()
        return try rows.map { (id, caseID, placedAt, uid, role, epoch, wrapped, reason) throws(CaseVaultError) in
            guard id.readableBytes == HoldID.byteCount, caseID.readableBytes == CaseID.byteCount,
                uid.map({ UInt32(exactly: $0) != nil }) ?? true
            else { throw CaseVaultError(.integrityFailure, "a legal hold's row in the database is malformed") }
            let holdID = HoldID(bytes: Array(id.readableBytesView))
            guard let key = keys.first(where: { $0.number == UInt64(epoch) }) else {
                throw CaseVaultError(
                    .keyUnavailable,
                    "legal hold \(holdID)'s reason key is wrapped under erase epoch \(epoch), whose key this daemon does not hold"
                )
            }
            return SealedHold(
                id: holdID, caseID: CaseID(bytes: Array(caseID.readableBytesView)), placedAt: placedAt,
                placedBy: Authority(uid: uid.flatMap { UInt32(exactly: $0) }, role: role),
                sealedReason: Array(reason.readableBytesView), eraseEpoch: (key, Array(wrapped.readableBytesView)))
        }
    }

    /// Releases a hold (its row deleted: its residue opens for no one once its epoch is destroyed); returns
    /// its case. `not-found` for an unknown or already released hold.
    package func releaseHold(_ id: HoldID) throws(CaseVaultError) -> CaseID {
        let logger = self.logger
        let cases = try self.inTransaction { connection in
            try await PostgresRecords.shareFilingLockUnlessMoved(on: connection, logger: logger)
            return try await Self.ids(
                "DELETE FROM casevault_holds WHERE id = \(ByteBuffer(bytes: id.bytes)) RETURNING case_id",
                on: connection, logger: logger)
        }
        guard let caseID = cases.first else {
            throw CaseVaultError(.notFound, "no standing hold has this id; list them with GET /v1/holds")
        }
        return CaseID(bytes: caseID.bytes)
    }

    /// Whether a hold stands on the case.
    package func isHeld(_ caseID: CaseID) throws(CaseVaultError) -> Bool {
        try self.exists(Self.isHeldQuery(caseID))
    }

    static func isHeldQuery(_ caseID: CaseID) -> PostgresQuery {
        "SELECT EXISTS (SELECT 1 FROM casevault_holds WHERE case_id = \(ByteBuffer(bytes: caseID.bytes)))"
    }

    // MARK: Attachments

    /// How long an upload may go without an append before another upload takes its place, in milliseconds:
    /// 15 minutes, far past the server's read timeout, so that only an upload whose daemon died (or whose
    /// caller stopped calling) is taken over.
    package static let staleUpload: Int64 = 15 * 60 * 1000
    /// The database's clock in milliseconds since the Unix epoch, which uploads are timed by: one clock for
    /// every daemon, whatever theirs say.
    static let databaseNow = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

    /// Starts an upload of `id`'s attachment: `attachment-exists` when the record has one already or another
    /// upload of it is under way (`casevault_uploads` keeps one a record). Each append is a row of its own
    /// (`PostgresUpload`), so memory stays flat whatever the size; the upload is invisible until
    /// `finishAttachment`, and an upload dropped unfinished is deleted with its rows. Uploads idle past
    /// `staleUpload`, of any record, are deleted first.
    package func beginAttachment(_ id: RecordID) throws(CaseVaultError) -> (key: StoredKey, file: any AttachmentSink) {
        let stored = try self.storedRecord(id)
        let upload = PostgresUpload(recordID: id, storage: self)
        let (logger, uploadID) = (self.logger, upload.id)
        let begun = try self.run { connection in
            try await connection.transaction(logger: logger) { connection -> Bool? in
                try await PostgresRecords.shareFilingLockUnlessMoved(on: connection, logger: logger)
                guard try await Self.shareLiveRecord(id, on: connection, logger: logger) else { return nil }
                try await connection.perform(
                    """
                    WITH gone AS (
                        DELETE FROM casevault_uploads
                        WHERE touched_at < \(unescaped: Self.databaseNow) - \(Self.staleUpload) RETURNING upload
                    )
                    DELETE FROM casevault_attachment_chunks WHERE upload IN (SELECT upload FROM gone)
                    """, logger: logger)
                let record = ByteBuffer(bytes: id.bytes)
                guard
                    try await !Self.exists(
                        "SELECT EXISTS (SELECT 1 FROM casevault_attachments WHERE record_id = \(record))",
                        on: connection, logger: logger)
                else { return false }
                return try await Self.exists(
                    """
                    INSERT INTO casevault_uploads (upload, record_id, touched_at)
                    VALUES (\(ByteBuffer(bytes: uploadID)), \(record), \(unescaped: Self.databaseNow))
                    ON CONFLICT (record_id) DO NOTHING RETURNING true
                    """, on: connection, logger: logger)
            }
        }
        guard begun == true else {
            upload.settled = true
            throw begun == nil ? try self.missing(id) : Self.attachmentExists()
        }
        return (stored.key, upload)
    }

    /// Makes the upload the record's attachment, in one transaction, while the record is live (`shredded`
    /// or `not-found` otherwise) and has none (`attachment-exists`, the upload's rows deleted).
    package func finishAttachment(_ file: any AttachmentSink) throws(CaseVaultError) {
        guard let upload = file as? PostgresUpload, upload.storage === self else {
            throw CaseVaultError(.storageFailure, "the attachment's upload was not made by this storage")
        }
        let logger = self.logger
        let (id, uploadID, size) = (upload.recordID, ByteBuffer(bytes: upload.id), upload.size)
        let finished = try self.run { connection in
            try await connection.transaction(logger: logger) { connection -> Finish in
                try await PostgresRecords.shareFilingLockUnlessMoved(on: connection, logger: logger)
                guard try await Self.shareLiveRecord(id, on: connection, logger: logger) else { return .notLive }
                guard
                    try await Self.exists(
                        "DELETE FROM casevault_uploads WHERE upload = \(uploadID) RETURNING true", on: connection,
                        logger: logger)
                else { return .takenOver }
                let inserted = try await Self.exists(
                    """
                    INSERT INTO casevault_attachments (record_id, upload, size)
                    VALUES (\(ByteBuffer(bytes: id.bytes)), \(uploadID), \(size))
                    ON CONFLICT DO NOTHING RETURNING true
                    """, on: connection, logger: logger)
                if !inserted {
                    try await connection.perform(
                        "DELETE FROM casevault_attachment_chunks WHERE upload = \(uploadID)", logger: logger)
                }
                return inserted ? .finished : .exists
            }
        }
        upload.settled = true
        switch finished {
        case .finished: return
        case .exists: throw Self.attachmentExists()
        case .notLive: throw try self.missing(id)
        case .takenOver: throw try self.uploadGone(id)
        }
    }

    /// How a finish ended.
    private enum Finish: Sendable {
        case finished, exists, notLive, takenOver
    }

    /// Why an upload's row is gone while it was under way: its record's shred deleted it (`shredded`), or
    /// it sat idle past `staleUpload` and another upload took its place.
    private func uploadGone(_ id: RecordID) throws(CaseVaultError) -> CaseVaultError {
        if try self.shredHasBegun(id) { return CaseVaultError.recordShredded() }
        return CaseVaultError(
            .requestTimeout,
            "the upload sat idle for more than \(Self.staleUpload / 60_000) minutes and another upload of the record took its place; upload it again"
        )
    }

    /// Deletes an upload dropped unfinished, with its rows, without making the caller wait: it runs as a task
    /// of its own. Should it fail, the next upload of any record deletes them once idle past `staleUpload`.
    func discardUpload(_ upload: [UInt8]) {
        let logger = self.logger
        // Detached: on a connection of the awaited calls' own (bounded, and counted among them), never on a
        // case lock's that the caller's task-local values would name.
        Task.detached {
            do {
                _ = try await self.runAwaiting { connection in
                    try await connection.perform(
                        """
                        WITH gone AS (DELETE FROM casevault_uploads WHERE upload = \(ByteBuffer(bytes: upload)) RETURNING upload)
                        DELETE FROM casevault_attachment_chunks WHERE upload IN (SELECT upload FROM gone)
                        """, logger: logger)
                }
            } catch {
                logger.warning(
                    "an abandoned upload's rows stay until another upload finds them idle",
                    metadata: ["error.kind": "\(type(of: error))"])
            }
        }
    }

    /// `id`'s attachment: the record's key and its sealed bytes, read a range at a time. `not-found` when the
    /// record has none.
    package func openAttachment(_ id: RecordID) throws(CaseVaultError) -> (key: StoredKey, file: any AttachmentSource) {
        let stored = try self.storedRecord(id)
        let logger = self.logger
        let found = try self.run { connection in
            var found: (ByteBuffer, Int64)?
            for try await row in try await connection.query(
                "SELECT upload, size FROM casevault_attachments WHERE record_id = \(ByteBuffer(bytes: id.bytes))",
                logger: logger
            ).decode((ByteBuffer, Int64).self) {
                found = row
            }
            return found
        }
        guard let (upload, size) = found else {
            throw CaseVaultError(.notFound, "the record has no attachment")
        }
        return (
            stored.key,
            PostgresAttachment(recordID: id, upload: Array(upload.readableBytesView), size: size, storage: self)
        )
    }

    /// Locks `id`'s row (key share: a rewrap's update passes, a shred's delete waits) until the caller's
    /// transaction ends; `false` when no live record has it (then nothing is locked).
    private static func shareLiveRecord(_ id: RecordID, on connection: PostgresConnection, logger: Logger)
        async throws -> Bool
    {
        try await Self.exists(
            "SELECT EXISTS (SELECT 1 FROM casevault_records WHERE id = \(ByteBuffer(bytes: id.bytes)) FOR KEY SHARE)",
            on: connection, logger: logger)
    }

    private static func attachmentExists() -> CaseVaultError {
        CaseVaultError(
            .attachmentExists, "this record already has an attachment (or one is being uploaded); records are immutable"
        )
    }

    /// Keeps one append of an upload while the upload is still its record's (`casevault_uploads`): its row
    /// is touched and so locked until the chunk is committed, so that a shred (which deletes that row, then
    /// the record's chunks) or a takeover either comes before, and the append is refused, or after, and
    /// deletes the chunk too: `shredded` or `request-timeout` (`uploadGone`) when it is no longer.
    func appendChunk(_ sealed: [UInt8], upload: [UInt8], recordID: RecordID, at offset: Int64) throws(CaseVaultError) {
        let logger = self.logger
        let kept = try self.run { connection in
            try await connection.transaction(logger: logger) { connection -> Bool in
                // The move's mark is read in the touch itself, not under the filing lock: an append makes
                // nothing the move copies (its finish, which does, shares the lock), and every chunk of a
                // large upload would pay the lock's statements.
                guard
                    try await Self.exists(
                        """
                        UPDATE casevault_uploads SET touched_at = \(unescaped: Self.databaseNow)
                        WHERE upload = \(ByteBuffer(bytes: upload))
                            AND NOT EXISTS (SELECT 1 FROM casevault_vault WHERE moved_by IS NOT NULL)
                        RETURNING true
                        """, on: connection, logger: logger)
                else {
                    try await PostgresSchema.refuseMoved(on: connection, logger: logger)
                    return false
                }
                try await connection.perform(
                    """
                    INSERT INTO casevault_attachment_chunks (record_id, upload, at, bytes)
                    VALUES (\(ByteBuffer(bytes: recordID.bytes)), \(ByteBuffer(bytes: upload)), \(offset),
                        \(ByteBuffer(bytes: sealed)))
                    """, logger: logger)
                return true
            }
        }
        guard kept else { throw try self.uploadGone(recordID) }
    }

    /// `count` bytes of an upload from `offset` on, from the rows that hold them: the last row starting at or
    /// before `offset` and those after it up to the end, found by the primary key (upload, at) rather than
    /// by scanning every earlier row. `shredded` when the record's shred deleted them since the download
    /// began.
    func readChunks(recordID: RecordID, upload: [UInt8], count: Int, at offset: Int64) throws(CaseVaultError)
        -> [UInt8]
    {
        let logger = self.logger
        let rows = try self.run { connection in
            var rows: [(Int64, ByteBuffer)] = []
            for try await row in try await connection.query(
                """
                SELECT at, bytes FROM casevault_attachment_chunks WHERE upload = \(ByteBuffer(bytes: upload))
                    AND at >= (SELECT max(at) FROM casevault_attachment_chunks
                        WHERE upload = \(ByteBuffer(bytes: upload)) AND at <= \(offset))
                    AND at < \(offset + Int64(count)) ORDER BY at
                """, logger: logger
            ).decode((Int64, ByteBuffer).self) {
                rows.append(row)
            }
            return rows
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        for (at, chunk) in rows {
            let view = chunk.readableBytesView
            let start = Int(max(0, offset + Int64(bytes.count) - at))
            guard at <= offset + Int64(bytes.count), start <= view.count else { break }
            bytes += view.dropFirst(start).prefix(count - bytes.count)
            if bytes.count == count { break }
        }
        guard bytes.count == count else {
            if try self.shredHasBegun(recordID) { throw CaseVaultError.recordShredded() }
            throw CaseVaultError(.integrityFailure, "an attachment's sealed bytes in the database are incomplete")
        }
        return bytes
    }

    // MARK: Statistics

    /// Every case's row and what its records of `types` are now; no facts kept (`keepStatisticsFacts`), so
    /// the sealing layer takes every case's facts afresh for each report.
    package func statisticsSnapshot(types: [RecordType]) throws(CaseVaultError) -> StatisticsSnapshot {
        let logger = self.logger
        let names = types.map(\.rawValue)
        let (cases, sources) = try self.run { connection in
            var cases: [(ByteBuffer, Int64, Int64?, String?)] = []
            for try await row in try await connection.query(
                "SELECT id, created_at, closed_at, outcome FROM casevault_cases ORDER BY created_at, id", logger: logger
            ).decode((ByteBuffer, Int64, Int64?, String?).self) {
                cases.append(row)
            }
            var sources: [(ByteBuffer, Int64, Int64)] = []
            for try await row in try await connection.query(
                """
                SELECT case_id, max(filed), count(*) FROM casevault_records WHERE type = ANY(\(names))
                GROUP BY case_id
                """, logger: logger
            ).decode((ByteBuffer, Int64, Int64).self) {
                sources.append(row)
            }
            return (cases, sources)
        }
        var current: [String: (newest: Int64, count: Int64)] = [:]
        for (caseID, newest, count) in sources {
            current[Hex.encode(caseID.readableBytesView)] = (newest, count)
        }
        return StatisticsSnapshot(
            cases: cases.map { (id, createdAt, closedAt, outcome) in
                StatisticsSnapshot.Case(
                    id: Hex.encode(id.readableBytesView), createdAt: createdAt, closedAt: closedAt,
                    closingOutcome: outcome)
            },
            current: current, kept: [:])
    }

    /// The live records of `types` in a case, in filing order.
    package func statisticsRecordIDs(_ caseID: CaseID, types: [RecordType]) throws(CaseVaultError) -> [RecordID] {
        let logger = self.logger
        let names = types.map(\.rawValue)
        return try self.run { connection in
            try await Self.ids(
                """
                SELECT id FROM casevault_records WHERE case_id = \(ByteBuffer(bytes: caseID.bytes))
                    AND type = ANY(\(names)) ORDER BY filed
                """, on: connection, logger: logger)
        }
    }

    /// Nothing: sealed under a subkey of the root key, kept facts would outlive the erase window, and
    /// facts under keys of their own wrapped under the epochs are not built; the sealing layer, which
    /// seals none for this storage (`sealsUnderEraseEpochs`), does not ask.
    package func keepStatisticsFacts(_ facts: [KeptFacts]) throws(CaseVaultError) {}

    // MARK: Queries

    /// The case's row, `nil` for an unknown case.
    static func caseSummary(_ id: CaseID, on connection: PostgresConnection, logger: Logger) async throws
        -> CaseSummary?
    {
        let rows = try await connection.rows(Prepared.CaseRow(caseID: ByteBuffer(bytes: id.bytes)), logger: logger)
        guard let columns = rows.first else { return nil }
        return try Self.summary(id, columns)
    }

    /// The shared filing lock taken, the case's row (`nil` for an unknown case), whether `rosterUID` is on the
    /// roster (`false` for an unknown case, as the local store answers) and the epoch new wraps use (`nil`
    /// while none is ready), in one statement
    /// (`Prepared.CaseRosterAndWrapEpoch`).
    static func caseSharingFilingLock(
        _ id: CaseID, rosterUID: UInt32?, on connection: PostgresConnection, logger: Logger
    ) async throws -> (summary: CaseSummary?, onRoster: Bool, wrapEpoch: UInt64?) {
        let rows = try await connection.rows(
            Prepared.CaseRosterAndWrapEpoch(
                rosterUID: rosterUID.map { Int64($0) }, caseID: ByteBuffer(bytes: id.bytes),
                filingLock: PostgresRecords.filingLock),
            logger: logger)
        return try Self.caseRosterAndWrapEpoch(id, rows.first)
    }

    /// A case's row, whether a uid is on the roster and the epoch new wraps use, from the columns of
    /// `Prepared.CaseRosterAndWrapEpoch` (or of its read without the locks).
    static func caseRosterAndWrapEpoch(_ id: CaseID, _ row: Prepared.CaseRosterAndWrapEpoch.Row?)
        throws(CaseVaultError) -> (summary: CaseSummary?, onRoster: Bool, wrapEpoch: UInt64?)
    {
        guard let (state, count, mediators, supervisors, createdAt, closedAt, onRoster, epoch) = row else {
            throw CaseVaultError(.storageFailure, "the database answered a case's read with no row")
        }
        let wrapEpoch = epoch.flatMap { UInt64(exactly: $0) }
        guard let state else { return (nil, false, wrapEpoch) }
        guard let count, let mediators, let supervisors, let createdAt else {
            throw CaseVaultError(.integrityFailure, "a case's row in the database is malformed")
        }
        let summary = try Self.summary(id, (state, count, mediators, supervisors, createdAt, closedAt))
        return (summary, onRoster, wrapEpoch)
    }

    /// A case's row from its columns (`state, participant_count, mediators, supervisors, created_at,
    /// closed_at`); `integrity-failure` when they are malformed.
    private static func summary(_ id: CaseID, _ columns: (String, Int, [Int64], [Int64], Int64, Int64?))
        throws(CaseVaultError) -> CaseSummary
    {
        let (state, count, mediators, supervisors, createdAt, closedAt) = columns
        guard let state = CaseState(rawValue: state), let mediators = Self.uids(mediators),
            let supervisors = Self.uids(supervisors)
        else { throw CaseVaultError(.integrityFailure, "a case's row in the database is malformed") }
        return CaseSummary(
            id: id, state: state, participantCount: count, mediators: mediators, supervisors: supervisors,
            createdAt: createdAt, closedAt: closedAt)
    }

    private static func uids(_ values: [Int64]) -> [UInt32]? {
        let uids = values.compactMap { UInt32(exactly: $0) }
        return uids.count == values.count ? uids : nil
    }

    static func isOnRoster(_ uid: UInt32?, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        guard let uid else { return false }
        return try await Self.exists(
            "SELECT EXISTS (SELECT 1 FROM casevault_roster WHERE uid = \(Int64(uid)))", on: connection, logger: logger)
    }

    static func exists(_ query: PostgresQuery, on connection: PostgresConnection, logger: Logger) async throws
        -> Bool
    {
        var found = false
        for try await exists in try await connection.query(query, logger: logger).decode(Bool.self) { found = exists }
        return found
    }

    static func ids(_ query: PostgresQuery, on connection: PostgresConnection, logger: Logger) async throws
        -> [RecordID]
    {
        var ids: [RecordID] = []
        for try await id in try await connection.query(query, logger: logger).decode(ByteBuffer.self) {
            ids.append(try Self.recordID(id))
        }
        return ids
    }

    private static func recordID(_ bytes: ByteBuffer) throws(CaseVaultError) -> RecordID {
        guard bytes.readableBytes == RecordID.byteCount else {
            throw CaseVaultError(.integrityFailure, "a record id in the database is malformed")
        }
        return RecordID(bytes: Array(bytes.readableBytesView))
    }

    // MARK: Connections and waiting

    /// Whether `query` (a single boolean) answers true, asked on a connection as `run` picks.
    private func exists(_ query: PostgresQuery) throws(CaseVaultError) -> Bool {
        let logger = self.logger
        return try self.run { connection in try await Self.exists(query, on: connection, logger: logger) }
    }

    /// Whether `query` (a write answering a single boolean) answers true, run in a transaction
    /// (`inTransaction`) after `PostgresRecords.shareFilingLockUnlessMoved`.
    private func writes(_ query: PostgresQuery) throws(CaseVaultError) -> Bool {
        let logger = self.logger
        return try self.inTransaction { connection in
            try await PostgresRecords.shareFilingLockUnlessMoved(on: connection, logger: logger)
            return try await Self.exists(query, on: connection, logger: logger)
        }
    }

    /// Runs `body` on this thread's case-lock connection, or on a kept one (connecting when none is idle),
    /// and waits for it. A connection is kept again unless the call left it closed.
    @discardableResult
    func run<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T)
        throws(CaseVaultError) -> T
    {
        guard !self.closed.withLock({ $0 }) else { throw Self.closedError }
        if let pinned = self.pinnedConnection {
            return try Self.wait(closing: pinned) {
                try await PostgresConnection.$joined.withValue(ObjectIdentifier(pinned)) { try await body(pinned) }
            }
        }
        let connection = try self.checkOut()
        do {
            let value = try Self.wait { try await body(connection) }
            self.checkIn(connection)
            return value
        } catch {
            // A server that went away, or stopped being the primary, is not asked again: the next call
            // finds the primary afresh.
            if error.code == .storageUnavailable { Self.discard(connection) } else { self.checkIn(connection) }
            throw error
        }
    }

    /// What every call answers once `close` has run.
    static var closedError: CaseVaultError {
        CaseVaultError(.storageFailure, "the vault's storage is closed: the daemon is stopping")
    }

    func checkOut() throws(CaseVaultError) -> PostgresConnection {
        if let connection = self.kept() { return connection }
        let locator = self.locator
        do {
            return try Self.wait { try await locator.connect().connection }
        } catch {
            throw Self.unavailable(error.message)
        }
    }

    /// What a call answers while no primary can be reached: the request changed nothing and may be sent
    /// again in a second.
    /// A write that waited longer than `PostgresRecords.writeLockLimit` for a lock (SQLSTATE 55P03,
    /// `lock_not_available`): held back by a restore, a move, or a write of the same rows that takes long.
    static let lockTimedOut = CaseVaultError(
        .storageUnavailable,
        "the vault's writes were held back for more than \(PostgresRecords.writeLockLimit) (a restore or a move of the vault under way, or a long write of the same rows); try again",
        retryAfter: 5)

    /// What a write answers when its `COMMIT` was sent and no answer came: the connection closed or the server
    /// went meanwhile, or the commit waited past `caseStatementLimit` (for a synchronous standby that is gone,
    /// say). PostgreSQL may have kept the transaction, so never `storage-unavailable`, which tells the client
    /// that nothing changed and that the request may be sent again.
    static let commitUnanswered = CaseVaultError(
        .storageFailure,
        "the database did not answer the commit: what the request asked may have been done; look (read the case or the record) before sending it again"
    )

    /// Whether `error` is `commitUnanswered`.
    static func isCommitUnanswered(_ error: CaseVaultError) -> Bool {
        error.code == .storageFailure && error.message == Self.commitUnanswered.message
    }

    /// `commitUnanswered` for a commit's call that answered `storage-unavailable` (its limit passed, its
    /// connection closed); any other answer as it is.
    static func committing(_ error: CaseVaultError) -> CaseVaultError {
        error.code == .storageUnavailable ? Self.commitUnanswered : error
    }

    static func unavailable(_ why: String) -> CaseVaultError {
        CaseVaultError(
            .storageUnavailable, "the database cannot be reached right now (\(why)); try again", retryAfter: 1)
    }

    /// Whether `error` says the server went away or can no longer take writes: the connection failed or was
    /// closed, the server is shutting down or starting (SQLSTATE class 08, 57P01 to 57P03), or it is a
    /// standby now (25006, a read-only transaction).
    static func isUnavailability(_ error: PSQLError) -> Bool {
        switch error.code {
        case .connectionError, .serverClosedConnection, .uncleanShutdown, .clientClosedConnection:
            return true
        default:
            guard let state = error.serverInfo?[.sqlState] else { return false }
            return state.hasPrefix("08") || ["57P01", "57P02", "57P03", "25006"].contains(state)
        }
    }

    /// A kept connection that is still open, or a new one to the primary.
    func connection() async throws -> PostgresConnection {
        if let connection = self.kept() { return connection }
        return try await self.locator.connect().connection
    }

    private func kept() -> PostgresConnection? {
        while let connection = self.idle.withLock({ $0.popLast() }) {
            if !connection.isClosed { return connection }
        }
        return nil
    }

    /// Keeps `connection` for the next call; closes it once the storage is closed.
    func checkIn(_ connection: PostgresConnection) {
        guard !connection.isClosed else { return }
        let kept = self.closed.withLock { closed in
            guard !closed else { return false }
            self.idle.withLock { $0.append(connection) }
            return true
        }
        if !kept { Self.discard(connection) }
    }

    /// Where a waiting thread finds what its task answered.
    private final class Answer<T: Sendable>: Sendable {
        let result = Mutex<Result<T, any Error>?>(nil)
    }

    /// Runs `body` as a task on this thread (`WaitingThreadExecutor`: no thread of Swift's cooperative pool
    /// is needed, however busy the pool) and blocks until it ends. A `CaseVaultError` comes out as itself;
    /// anything else as `storage-failure` naming the kind of failure and its SQLSTATE, never a query's
    /// text or values.
    ///
    /// With `closing`, the body runs at most `caseStatementLimit` (looked at between its jobs) before that
    /// connection is closed, which fails what waits on it: a case lock's statements are short, and one left
    /// without an answer (PostgresNIO sends a statement on a session the server ended while it was idle, and
    /// never answers it) must not hold the thread, nor the case's lock, for ever.
    @discardableResult
    static func wait<T: Sendable>(
        closing connection: PostgresConnection? = nil, _ body: @escaping @Sendable () async throws -> T
    ) throws(CaseVaultError) -> T {
        // On an event loop this would stall every connection the loop serves, and never end when the
        // statement's own connection is one of them: the loops make the awaited calls.
        assert(
            MultiThreadedEventLoopGroup.currentEventLoop == nil,
            "a blocking call of the database's storage was made on an event loop")
        Self.blockingWaits.add(1, ordering: .relaxed)
        let answer = Answer<T>()
        let executor = WaitingThreadExecutor()
        Task(executorPreference: executor) {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            answer.result.withLock { $0 = result }
            executor.wake()
        }
        let ended = { answer.result.withLock { $0 != nil } }
        guard let connection else {
            _ = executor.run(until: .distantFuture, isDone: ended)
            return try Self.answered(answer.result.withLock { $0 })
        }
        if !executor.run(until: .now() + Self.caseStatementLimit, isDone: ended) {
            Self.discard(connection)
            // Answered as the connection closed: kept. Failed by the close, or still unanswered: not; the task
            // ends on the global executor, or with the connection's last reference.
            guard executor.run(until: .now() + .seconds(5), isDone: ended),
                case .success = answer.result.withLock({ $0 })
            else {
                executor.handOff()
                throw Self.unavailable("a statement of a case's lock had no answer; its connection was closed")
            }
        }
        return try Self.answered(answer.result.withLock { $0 })
    }

    /// How many times this process blocked a thread on the database (`wait`): a test asks it that the awaited
    /// calls block none.
    package static var blockingWaitCount: Int { Self.blockingWaits.load(ordering: .relaxed) }
    private static let blockingWaits = Atomic<Int>(0)

    /// How long a statement of a case's lock (its lock, a call in its body, its commit) may go unanswered.
    static let caseStatementLimit = DispatchTimeInterval.seconds(Int(PostgresStorage.caseStatementSeconds))
    static let caseStatementSeconds: Int64 = 30

    /// What the task `wait` ran answered.
    private static func answered<T: Sendable>(_ result: Result<T, any Error>?) throws(CaseVaultError) -> T {
        switch result {
        case .success(let value):
            return value
        case .failure(let error):
            throw Self.failure(error)
        case nil:
            throw CaseVaultError(.storageFailure, "a database call ended without an answer")
        }
    }

    /// A call's failure as it is answered: a `CaseVaultError` as itself; anything else as `storage-failure`
    /// naming the kind of failure and its SQLSTATE, never a query's text or values (`storage-unavailable`
    /// when the server went away, or a lock was waited for too long).
    static func failure(_ error: any Error) -> CaseVaultError {
        switch error {
        case let error as CaseVaultError:
            return error
        case let error as PSQLError:
            if error.serverInfo?[.sqlState] == "55P03" { return Self.lockTimedOut }
            let state = error.serverInfo?[.sqlState].map { ", SQLSTATE \($0)" } ?? ""
            if Self.isUnavailability(error) { return Self.unavailable("\(error.code)\(state)") }
            return CaseVaultError(.storageFailure, "the database failed (\(error.code)\(state))")
        default:
            return CaseVaultError(.storageFailure, "the database failed (\(type(of: error)))")
        }
    }
}

/// An upload under way on PostgreSQL: each append kept as a row at its offset, while the record is live.
final class PostgresUpload: AttachmentSink, @unchecked Sendable {
    let recordID: RecordID
    let storage: PostgresStorage
    /// The upload's own id, which its rows carry until it is made the record's attachment.
    let id = Random.bytes(count: 16)
    private(set) var size: Int64 = 0
    /// Whether nothing of the upload is left to delete when it is dropped: it was finished, refused, or its
    /// rows were deleted by whatever ended it.
    var settled = false

    init(recordID: RecordID, storage: PostgresStorage) {
        self.recordID = recordID
        self.storage = storage
    }

    deinit {
        if !self.settled { self.storage.discardUpload(self.id) }
    }

    func append(_ sealed: [UInt8]) throws(CaseVaultError) {
        try self.storage.appendChunk(sealed, upload: self.id, recordID: self.recordID, at: self.size)
        self.size += Int64(sealed.count)
    }

    /// Nothing: each append is committed, durable on the server's synchronous commit, when it returns.
    func flush() throws(CaseVaultError) {}
}

/// A finished attachment on PostgreSQL, read a range at a time.
final class PostgresAttachment: AttachmentSource, @unchecked Sendable {
    let size: Int64
    private let recordID: RecordID
    private let upload: [UInt8]
    private let storage: PostgresStorage

    init(recordID: RecordID, upload: [UInt8], size: Int64, storage: PostgresStorage) {
        self.recordID = recordID
        self.upload = upload
        self.size = size
        self.storage = storage
    }

    func read(count: Int, at offset: Int64) throws(CaseVaultError) -> [UInt8] {
        try self.storage.readChunks(recordID: self.recordID, upload: self.upload, count: count, at: offset)
    }
}

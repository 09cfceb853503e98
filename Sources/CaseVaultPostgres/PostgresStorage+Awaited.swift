package import CaseVaultCore
package import CaseVaultSealing
internal import NIOCore
internal import PostgresNIO
internal import Synchronization

/// The filings the server awaits on its event loops (`SuspendingStorage`): the same statements as the
/// blocking calls of the same names, run by `runAwaiting` and `awaitInTransaction` instead of `run` and
/// `inTransaction`, so that no thread waits for the database and no request hops to the blocking pool.
extension PostgresStorage {
    package func awaitCommit(_ record: SealedRecord, effects: FilingEffects) async throws(CaseVaultError)
        -> RecordMetadata
    {
        try await self.awaitUnderWrapEpoch(self.filing(record, effects: effects))
    }

    package func awaitNotesToDestroy(_ caseID: CaseID) async throws(CaseVaultError) -> [RecordID] {
        let (logger, holdsKeep) = (self.logger, self.retention.holdsKeepSessionNotes)
        return try await self.runAwaiting { connection in
            try await Self.notesToDestroy(caseID, holdsKeep: holdsKeep, on: connection, logger: logger)
        }
    }

    package func awaitAgreements(_ caseID: CaseID) async throws(CaseVaultError)
        -> [(id: RecordID, sealedParticipant: [UInt8]?)]
    {
        let logger = self.logger
        return try await self.runAwaiting { connection in
            try await Self.agreements(caseID, on: connection, logger: logger)
        }
    }

    /// Nothing, as `finishMarkedShreds`.
    package func awaitFinishMarkedShreds(_ ids: [RecordID]) async throws(CaseVaultError) {}

    /// A filing in one trip (`FilingSnapshot`), on one connection, which the awaited case locks may hold
    /// (`awaitedLocks`): the case's row, the roster and the epoch new wraps use read without a lock
    /// (`Prepared.CaseRosterAndWrapEpochUnlocked`); `seal` decides and seals on them; then one `CALL` of a
    /// procedure (`Prepared.FileIfUnchanged`) that takes the case's lock and the lock filings share without
    /// waiting for either, files the row under the epoch read only if the case's row and the roster are
    /// still what was read and that epoch is still the one new wraps use, and commits before it answers.
    /// `nil`, having filed nothing, inside a case's lock (whose transaction the filing joins), when `seal`
    /// declined, when this daemon does not hold that epoch's key, when a lock was held, or when something
    /// changed: the filing is then decided again under the case's lock (`awaitWithCaseLock`), which waits.
    ///
    /// The read and the call share the connection, so that the call goes out on a session that has just
    /// answered (PostgresNIO never answers a statement sent on a session the server ended while it sat
    /// idle). When the call was sent and no clean answer came (its connection went, its limit passed, a
    /// FATAL such as a shutdown's, which may follow a commit kept locally while it waited for the
    /// synchronous standby), the filing answers `commitUnanswered`, as a commit does; when the server
    /// answered with an error (`refusedByServer`), the call's transaction rolled back and that error is the
    /// answer (`storage-unavailable` from a server that stopped taking writes).
    package func awaitFileIfUnchanged(
        _ id: CaseID, readingRoster rosterUID: UInt32?, sealing seal: (FilingSnapshot) -> SealedRecord?
    ) async throws(CaseVaultError) -> RecordMetadata? {
        // Inside a case's lock, or where the database's isolation keeps the call from ever filing.
        guard self.pinnedConnection == nil, !self.oneTripIsolationLogged.load(ordering: .relaxed) else { return nil }
        let logger = self.logger
        let read = Prepared.CaseRosterAndWrapEpochUnlocked(
            rosterUID: rosterUID.map { Int64($0) }, caseID: ByteBuffer(bytes: id.bytes))
        return try await self.awaitedLocks.withPermit { () async throws(CaseVaultError) -> RecordMetadata? in
            let connection = try await self.awaitCheckOut()
            let statement: Prepared.FileIfUnchanged
            do throws(CaseVaultError) {
                let row = try await Self.bounded(closing: connection) {
                    try await connection.rows(read, logger: logger).first
                }
                let found = try Self.caseRosterAndWrapEpoch(id, row)
                let snapshot = FilingSnapshot(
                    summary: found.summary, onRoster: found.onRoster, wrapEpoch: found.wrapEpoch)
                self.oneTripReads.add(1, ordering: .relaxed)
                guard let summary = snapshot.summary, let epoch = snapshot.wrapEpoch,
                    let key = try self.epochKeys.epochKeys().first(where: { $0.number == epoch }),
                    let record = seal(snapshot)
                else {
                    self.checkIn(connection)
                    return nil
                }
                let filed = PostgresRecords.Row(
                    id: record.id, caseID: record.caseID, type: record.type, createdAt: self.now(),
                    epoch: key.number, wrappedKey: record.wrappedKey(under: key), blob: record.blob,
                    author: record.author, supersedes: record.supersedes)
                statement = Prepared.FileIfUnchanged(
                    lock: Prepared.CaseLock(space: Self.caseLockSpace, key: Self.caseLockKey(id.bytes)),
                    filingLock: PostgresRecords.filingLock, rosterUID: rosterUID.map { Int64($0) },
                    onRoster: snapshot.onRoster, expected: summary, row: filed)
            } catch {
                if error.code == .storageUnavailable { Self.discard(connection) } else { self.checkIn(connection) }
                throw error
            }
            if let hook = self.beforeOneTripCommit.withLock({ $0 }) { await hook() }
            // A session that ended meanwhile (its limit passed, the server gone): nothing is sent, and the
            // filing goes under the case's lock, on another connection.
            guard !connection.isClosed else {
                Self.discard(connection)
                self.oneTripGivenBack.add(1, ordering: .relaxed)
                return nil
            }
            let outcome: Result<Int32?, CaseVaultError>
            do throws(CaseVaultError) {
                outcome = try await Self.bounded(closing: connection) {
                    () async throws -> Result<Int32?, CaseVaultError> in
                    do {
                        return .success(try await connection.rows(statement, logger: logger).first)
                    } catch let error as PSQLError where Self.refusedByServer(error) {
                        // A lock waited for past the call's 20 s (a table's, behind a migration's), given back
                        // to the case's lock, whose limits then answer.
                        if error.serverInfo?[.sqlState] == "55P03" { return .success(4) }
                        return .failure(Self.failure(error))
                    }
                }
            } catch {
                // Sent and not answered cleanly: PostgreSQL may have committed it.
                Self.discard(connection)
                throw Self.commitUnanswered
            }
            switch outcome {
            case .success(let answer?):
                self.checkIn(connection)
                return self.oneTripAnswered(answer, statement.row)
            case .success(nil):
                // No answer row: nothing says what happened, so nothing is filed again under the lock.
                Self.discard(connection)
                throw Self.commitUnanswered
            case .failure(let error):
                if error.code == .storageUnavailable { Self.discard(connection) } else { self.checkIn(connection) }
                throw error
            }
        }
    }

    /// What a one-trip filing's call answered (`casevault_file_unchanged`): the record's metadata when it
    /// filed it (0), `nil` otherwise, counted; a transaction not at READ COMMITTED (3: the database's
    /// `default_transaction_isolation` is another) is logged once, and from then on every filing takes the
    /// lock from the start.
    private func oneTripAnswered(_ answer: Int32, _ row: PostgresRecords.Row) -> RecordMetadata? {
        guard answer == 0 else {
            self.oneTripGivenBack.add(1, ordering: .relaxed)
            if answer == 3, !self.oneTripIsolationLogged.exchange(true, ordering: .relaxed) {
                self.logger.warning(
                    "the database's default transaction isolation is not READ COMMITTED: every filing takes its case's lock from the start, in five round trips instead of two"
                )
            }
            return nil
        }
        self.oneTripFiled.add(1, ordering: .relaxed)
        return row.metadata
    }

    /// Whether the server answered a one-trip filing's call with an error that rolled it back, so that nothing
    /// of it was kept: one of severity ERROR, raised before the procedure's `COMMIT` (after it the procedure
    /// only sets its answer), but not a cancel (57014), which may come after that commit; not a FATAL or a
    /// PANIC, which end the session and may follow a commit kept locally while it waited for the synchronous
    /// standby (a shutdown's, 57P01 to 57P03).
    static func refusedByServer(_ error: PSQLError) -> Bool {
        error.serverInfo?[.severity] == "ERROR" && error.serverInfo?[.sqlState] != "57014"
    }

    /// Has `hook` run between a one-trip filing's read and its commit, from now on (`nil`: none): for tests,
    /// which change the case meanwhile.
    package func runBeforeOneTripCommit(_ hook: (@Sendable () async -> Void)?) {
        self.beforeOneTripCommit.withLock { $0 = hook }
    }

    /// One-trip filings so far: their reads that reached the database, those filed in one trip, and those
    /// given back to the case's lock because a lock was held or something changed.
    package var oneTripCounts: (read: Int, filed: Int, givenBack: Int) {
        (
            self.oneTripReads.load(ordering: .relaxed), self.oneTripFiled.load(ordering: .relaxed),
            self.oneTripGivenBack.load(ordering: .relaxed)
        )
    }
}

// The awaited calls' own machinery, and the reads of a record the server awaits on every GET.
extension PostgresStorage {
    /// `underWrapEpoch`, each attempt awaited (`awaitInTransaction`).
    func awaitUnderWrapEpoch<T: Sendable>(
        _ body: @escaping @Sendable (EpochKey, PostgresConnection) async throws -> T?
    ) async throws(CaseVaultError) -> T {
        for attempt in 0..<Self.filingAttempts {
            if let done = try await self.awaitInTransaction(self.wrapAttempt(attempt, body)) { return done }
        }
        throw Self.epochsKeptTurning
    }

    package func awaitMetadata(_ id: RecordID) async throws(CaseVaultError) -> RecordMetadata {
        try await self.awaitLiveRow(id).metadata
    }

    /// `storedRecord(_:rosterUID:decide:)` without a thread blocked: the calling task waits for the
    /// database's answer (`runAwaiting`), so that a GET costs no hop to the blocking pool and back.
    package func awaitStoredRecord(
        _ id: RecordID, rosterUID: UInt32?, decide: (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) async throws(CaseVaultError) -> StoredRecord {
        let logger = self.logger
        let found = try await self.runAwaiting { connection in
            try await Self.recordCaseAndRoster(id, rosterUID: rosterUID, on: connection, logger: logger)
        }
        guard let (row, summary, onRoster) = found else { throw try await self.awaitMissing(id) }
        try decide(row.metadata, try Self.present(summary), onRoster)
        return try await self.awaitStored(row)
    }

    package func awaitStoredRecord(_ id: RecordID) async throws(CaseVaultError) -> StoredRecord {
        try await self.awaitStored(try await self.awaitLiveRow(id))
    }

    package func awaitShredHasBegun(_ id: RecordID) async throws(CaseVaultError) -> Bool {
        let logger = self.logger
        return try await self.runAwaiting { connection in
            try await Self.exists(Self.shredHasBegunQuery(id), on: connection, logger: logger)
        }
    }

    func awaitLiveRow(_ id: RecordID) async throws(CaseVaultError) -> PostgresRecords.Row {
        let records = self.records
        guard let row = try await self.runAwaiting({ connection in try await records.row(id, on: connection) }) else {
            throw try await self.awaitMissing(id)
        }
        return row
    }

    private func awaitMissing(_ id: RecordID) async throws(CaseVaultError) -> CaseVaultError {
        try await self.awaitShredHasBegun(id) ? CaseVaultError.recordShredded() : CaseVaultError.recordNotFound()
    }

    /// `stored`, the row read again without a thread blocked.
    private func awaitStored(_ row: PostgresRecords.Row, again: Bool = true) async throws(CaseVaultError)
        -> StoredRecord
    {
        if let stored = try self.storedIfHeld(row) { return stored }
        if again {
            let reread = try await self.awaitLiveRow(row.id)
            if reread.epoch != row.epoch { return try await self.awaitStored(reread, again: false) }
        }
        throw Self.epochNotHeld(row)
    }

    /// `withCaseLock(_:readingRoster:_:)` for a filing the server awaits on its event loops
    /// (`SuspendingStorage`): the same transaction, lock and read, each statement awaited and bounded as the
    /// blocking calls' are (`bounded`), on one of the connections the awaited case locks may hold at once
    /// (`awaitedLocks`). Never inside another case's lock.
    package func awaitWithCaseLock<T>(
        _ id: CaseID, readingRoster rosterUID: UInt32?,
        _ body: (CaseSummary?, Bool) async throws(CaseVaultError) -> T
    ) async throws(CaseVaultError) -> T {
        guard self.pinnedConnection == nil else {
            throw CaseVaultError(.storageFailure, "an awaited case lock was asked for inside another case's lock")
        }
        let lock = Prepared.CaseLock(space: Self.caseLockSpace, key: Self.caseLockKey(id.bytes))
        let logger = self.logger
        return try await self.awaitedLocks.withPermit { () async throws(CaseVaultError) -> T in
            let connection = try await self.awaitCheckOut()
            let read: (summary: CaseSummary?, onRoster: Bool, wrapEpoch: UInt64?)
            do throws(CaseVaultError) {
                read = try await Self.bounded(closing: connection) {
                    try await connection.perform(PostgresConnection.begin, logger: logger)
                    _ = try await connection.rows(lock, logger: logger)
                    return try await Self.caseSharingFilingLock(
                        id, rosterUID: rosterUID, on: connection, logger: logger)
                }
            } catch {
                Self.discard(connection)
                throw error
            }
            let pinned = Pinned(storage: ObjectIdentifier(self), connection: connection, wrapEpoch: read.wrapEpoch)
            let outcome: Result<T, CaseVaultError>
            do {
                outcome = .success(
                    try await Self.$pinned.withValue(pinned) { try await body(read.summary, read.onRoster) })
            } catch let error as CaseVaultError {
                outcome = .failure(error)
            } catch {
                outcome = .failure(CaseVaultError(.storageFailure, "a case's filing failed", cause: error))
            }
            do throws(CaseVaultError) {
                switch outcome {
                case .success:
                    do throws(CaseVaultError) {
                        try await Self.bounded(closing: connection) { try await connection.commit(logger: logger) }
                    } catch {
                        throw Self.committing(error)
                    }
                    self.checkIn(connection)
                case .failure(let error) where error.code == .storageUnavailable:
                    Self.discard(connection)
                case .failure:
                    try await Self.bounded(closing: connection) {
                        _ = try await connection.perform("ROLLBACK", logger: logger)
                    }
                    self.checkIn(connection)
                }
            } catch {
                Self.discard(connection)
                if case .success = outcome { throw error }
            }
            return try outcome.get()
        }
    }

    /// `run`, with the calling task waiting for the answer rather than a thread blocked on it: for a caller on
    /// the server's event loops (a read, a filing), which must never block. Inside an awaited case lock
    /// (`awaitWithCaseLock`) on its connection; otherwise on a connection of its own, of which at most
    /// `awaitedCallConnections` are held at once (the other calls wait, suspended). Bounded either way
    /// (`bounded`), so that a permit is held no longer than its statements' 35 s at most, past the set-up of a
    /// new connection when none is kept (bounded only by PostgresNIO's connect timeout).
    func runAwaiting<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T)
        async throws(CaseVaultError) -> T
    {
        guard !self.closed.withLock({ $0 }) else { throw Self.closedError }
        if let pinned = self.pinnedConnection {
            return try await Self.bounded(closing: pinned) {
                try await PostgresConnection.$joined.withValue(ObjectIdentifier(pinned)) { try await body(pinned) }
            }
        }
        return try await self.awaitedCalls.withPermit { () async throws(CaseVaultError) -> T in
            let connection = try await self.awaitCheckOut()
            do throws(CaseVaultError) {
                let value = try await Self.bounded(closing: connection) { try await body(connection) }
                self.checkIn(connection)
                return value
            } catch {
                if error.code == .storageUnavailable { Self.discard(connection) } else { self.checkIn(connection) }
                throw error
            }
        }
    }

    /// `checkOut`, awaited.
    func awaitCheckOut() async throws(CaseVaultError) -> PostgresConnection {
        guard !self.closed.withLock({ $0 }) else { throw Self.closedError }
        do {
            return try await self.connection()
        } catch {
            throw Self.unavailable(Self.failure(error).message)
        }
    }

    /// `inTransaction`, awaited.
    func awaitInTransaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T)
        async throws(CaseVaultError) -> T
    {
        if self.pinnedConnection != nil { return try await self.runAwaiting(body) }
        let logger = self.logger
        return try await self.runAwaiting { connection in
            try await connection.transaction(logger: logger) { connection -> T in try await body(connection) }
        }
    }

    /// Runs `body`, statements on `connection`, and answers at most `caseStatementLimit` later: then the
    /// connection is closed, which fails what waits on it, and the call answers `storage-unavailable` 5 s
    /// after at the latest whether or not `body` ended (as `wait(closing:)` bounds a case lock's blocking
    /// calls: PostgresNIO may leave a statement sent on a session the server ended while it was idle
    /// unanswered even once its connection is closed, and the task then ends only with the connection's
    /// last reference). `body` runs in a task of its own, with the caller's task-local values, so that the
    /// caller can be answered while it does not end. Its failure as `failure` answers it.
    static func bounded<T: Sendable>(
        closing connection: PostgresConnection, _ body: @escaping @Sendable () async throws -> T
    ) async throws(CaseVaultError) -> T {
        let race = BoundedRace<T>()
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, any Error>, Never>) in
            race.wait(continuation)
            Task { race.finish(await Self.result(of: body)) }
            let limit = TimeAmount.seconds(Self.caseStatementSeconds)
            let timer = connection.eventLoop.scheduleTask(in: limit) {
                // Answered just before: the connection may be serving another call already.
                guard race.expire() else { return }
                Self.discard(connection)
                connection.eventLoop.scheduleTask(in: .seconds(5)) {
                    race.finish(.failure(Self.unavailable("a statement had no answer")))
                }
            }
            race.onFinish { timer.cancel() }
        }
        switch result {
        case .success(let value):
            return value
        case .failure(let error):
            if race.hasExpired {
                throw Self.unavailable("a statement had no answer; its connection was closed")
            }
            throw Self.failure(error)
        }
    }

    private static func result<T>(of body: () async throws -> T) async -> Result<T, any Error> {
        do { return .success(try await body()) } catch { return .failure(error) }
    }

    /// Who answers `bounded`'s caller first, its body or its timer, once; and whether the timer fired.
    private final class BoundedRace<T: Sendable>: Sendable {
        private struct State {
            var waiter: CheckedContinuation<Result<T, any Error>, Never>?
            var answered = false
            var expired = false
            var onFinish: (@Sendable () -> Void)?
        }
        private let state = Mutex(State())

        var hasExpired: Bool { self.state.withLock { $0.expired } }

        func wait(_ continuation: CheckedContinuation<Result<T, any Error>, Never>) {
            self.state.withLock { $0.waiter = continuation }
        }

        /// Marks the timer fired, unless the caller was answered: whether it was not.
        func expire() -> Bool {
            self.state.withLock { state in
                guard !state.answered else { return false }
                state.expired = true
                return true
            }
        }

        /// Runs `action` once the caller is answered (at once when it has been).
        func onFinish(_ action: @escaping @Sendable () -> Void) {
            let now = self.state.withLock { state in
                guard !state.answered else { return true }
                state.onFinish = action
                return false
            }
            if now { action() }
        }

        /// Answers the caller with `result`, unless it was answered already.
        func finish(_ result: Result<T, any Error>) {
            let (waiter, action) = self.state.withLock { state in
                guard !state.answered else {
                    return (CheckedContinuation<Result<T, any Error>, Never>?.none, (@Sendable () -> Void)?.none)
                }
                state.answered = true
                defer {
                    state.waiter = nil
                    state.onFinish = nil
                }
                return (state.waiter, state.onFinish)
            }
            waiter?.resume(returning: result)
            action?()
        }
    }
}

import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import PostgresNIO
import Synchronization
import Testing

/// The filing in one trip on PostgreSQL (`Vault.awaitFile`, `PostgresStorage.awaitFileIfUnchanged`): decided
/// on the case read without its lock, committed only if that read still holds under the lock.
extension EpochExchangeTests {
    static func intake(_ marker: String) -> [UInt8] {
        Array(#"{"dispute_category":"roommate","screening":"\#(marker)"}"#.utf8)
    }

    /// `Vault.awaitFile` with `decide`, the code it failed with or the record it filed.
    static func awaitedFiling(
        _ vault: Vault<PostgresStorage>, _ record: NewRecord, rosterUID: UInt32? = nil,
        decide: @escaping @Sendable (CaseSummary, Bool) throws(CaseVaultError) -> Authority = { _, _ in .daemon }
    ) async -> Result<RecordMetadata, CaseVaultError> {
        do {
            return .success(try await vault.awaitFile(record, rosterUID: rosterUID, decide: decide).record)
        } catch {
            return .failure(error)
        }
    }

    /// Runs `change` (a blocking call of the other daemon's storage) between the next one-trip filing's read
    /// and its commit; what it threw is kept in `failure`.
    func between(
        _ storage: PostgresStorage, _ failure: HookFailure, _ change: @escaping @Sendable () throws -> Void
    ) {
        storage.runBeforeOneTripCommit {
            do {
                try await self.blocking(change)
            } catch {
                failure.text.withLock { $0 = "\(error)" }
            }
        }
    }

    /// Whether `condition` holds within `seconds`, asked every 5 ms.
    static func within(seconds: Int, _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !condition() {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return true
    }

    /// Holds `caseID`'s lock from `vault` until `release` is raised: the task holding it, once it holds it.
    func holdingCaseLock(_ vault: Vault<PostgresStorage>, _ caseID: CaseID, release: Flag) async
        -> Task<Void, any Error>
    {
        let locked = Flag()
        let holder = Task {
            try await vault.storage.awaitWithCaseLock(caseID, readingRoster: nil) { _, _ async throws(CaseVaultError) in
                locked.raise()
                while !release.isRaised { try? await Task.sleep(for: .milliseconds(5)) }
            }
        }
        #expect(await Self.within(seconds: 20) { locked.isRaised }, "the case's lock was not taken")
        return holder
    }

    /// An intake form with `marker` filed into `caseID` from `vault` on a task of its own, and a flag raised
    /// when the filing has ended.
    static func filingInBackground(_ vault: Vault<PostgresStorage>, _ caseID: CaseID, _ marker: String) -> (
        filing: Task<Result<RecordMetadata, CaseVaultError>, Never>, ended: Flag
    ) {
        let ended = Flag()
        let filing = Task {
            defer { ended.raise() }
            return await Self.awaitedFiling(
                vault, NewRecord(caseID: caseID, type: .intakeForm, content: Self.intake(marker)))
        }
        return (filing, ended)
    }

    /// Files an intake form into `caseID` from `vault` while a lock it needs is held: the one-trip call is
    /// given back at once (the count moves within 5 s) and the filing, under the case's lock, has not
    /// ended 300 ms later; once `release` is raised it files, and `other` reads the form back.
    func givenBackWhileHeld(
        _ vault: Vault<PostgresStorage>, _ other: Vault<PostgresStorage>, _ caseID: CaseID, _ marker: String,
        release: Flag
    ) async throws {
        let before = vault.storage.oneTripCounts.givenBack
        let (filing, ended) = Self.filingInBackground(vault, caseID, marker)
        #expect(await Self.within(seconds: 5) { vault.storage.oneTripCounts.givenBack == before + 1 })
        try await Task.sleep(for: .milliseconds(300))
        #expect(!ended.isRaised, "the filing ended while the lock was held")
        release.raise()
        let filed = try await filing.value.get()
        let read = try await self.blocking { try other.get(filed.id) }
        #expect(read.content == Self.intake(marker) && read.metadata.caseID == caseID)
    }

    @Test(
        "a filing that only adds its record is made in one trip on PostgreSQL and reads back at the other daemon; a case closed, its mediators replaced, or the filer taken off the roster between its read and its commit makes it decide again under the case's lock, which refuses it (case-closed, forbidden) and files nothing; a case's lock, or the lock filings share, held elsewhere makes it wait under the case's lock and file once it is let go; a session note, which needs the agreements, and a record that supersedes another, go under the lock from the start"
    )
    func oneTripFiling() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let storage = vaultA.storage
        let (caseID, otherCase, thirdCase) = try await self.blocking {
            let first = try vaultA.openCase(header: Self.header, mediators: [4001], author: nil).id
            let second = try vaultA.openCase(header: Self.header, mediators: [4001], author: nil).id
            let third = try vaultA.openCase(header: Self.header, mediators: [4001], author: nil).id
            _ = try vaultA.storage.addToRoster(4001)
            return (first, second, third)
        }
        let hookFailure = HookFailure()

        // Filed in one trip, by a mediator of the case on the roster; read back at the other daemon.
        let mediator: @Sendable (CaseSummary, Bool) throws(CaseVaultError) -> Authority = {
            summary, listed throws(CaseVaultError) in
            guard listed, summary.mediators.contains(4001) else {
                throw CaseVaultError(.forbidden, "not a mediator of the case on the roster")
            }
            return Authority(uid: 4001, role: "mediator")
        }
        let filed = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: caseID, type: .intakeForm, content: Self.intake("first")), rosterUID: 4001,
            decide: mediator)
        let first = try filed.get()
        #expect(storage.oneTripCounts == (read: 1, filed: 1, givenBack: 0))
        let read = try await self.blocking { try vaultB.get(first.id) }
        #expect(read.content == Self.intake("first") && read.metadata.caseID == caseID)

        // The case closed after the filing read it: refused under the lock, nothing filed.
        self.between(storage, hookFailure) {
            _ = try vaultB.storage.closeCase(caseID, outcome: .withdrawn, authority: .daemon)
        }
        let afterClosing = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: caseID, type: .intakeForm, content: Self.intake("closed")))
        #expect(afterClosing.failureCode == .caseClosed, "\(afterClosing)")
        #expect(storage.oneTripCounts == (read: 2, filed: 1, givenBack: 1))

        // The case's mediators replaced after the filing read them: forbidden under the lock.
        self.between(storage, hookFailure) { try vaultB.storage.assign(.mediators, otherCase, [4002]) }
        let afterAssigning = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: otherCase, type: .intakeForm, content: Self.intake("assigned")), rosterUID: 4001,
            decide: mediator)
        #expect(afterAssigning.failureCode == .forbidden, "\(afterAssigning)")
        #expect(storage.oneTripCounts == (read: 3, filed: 1, givenBack: 2))

        // The filer taken off the roster after the filing read it: forbidden under the lock, nothing filed.
        self.between(storage, hookFailure) { _ = try vaultB.storage.removeFromRoster(4001) }
        let afterRemoval = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: thirdCase, type: .intakeForm, content: Self.intake("removed")), rosterUID: 4001,
            decide: mediator)
        storage.runBeforeOneTripCommit(nil)
        #expect(afterRemoval.failureCode == .forbidden, "\(afterRemoval)")
        #expect(storage.oneTripCounts == (read: 4, filed: 1, givenBack: 3))
        #expect(hookFailure.text.withLock { $0 } == nil)

        let kept = try await self.blocking {
            try [caseID, otherCase, thirdCase].map { id in
                try vaultB.storage.records(caseID: id).filter { $0.type == .intakeForm }.map(\.id)
            }
        }
        #expect(kept == [[first.id], [], []])

        // The case's lock held by the other daemon: the call takes no lock it would wait for, and the filing
        // waits under the lock instead, filing once it is let go.
        let release = Flag()
        defer { release.raise() }
        let holder = await self.holdingCaseLock(vaultB, thirdCase, release: release)
        try await self.givenBackWhileHeld(vaultA, vaultB, thirdCase, "waited", release: release)
        try await holder.value

        // The lock filings share held alone (as a restore or a move holds it): the same.
        try await a.connection.query(
            "SELECT pg_advisory_lock(\(PostgresRecords.filingLock))", logger: self.logger)
        let unlocked = Flag()
        let unlocker = Task {
            while !unlocked.isRaised { try? await Task.sleep(for: .milliseconds(5)) }
            try await a.connection.query(
                "SELECT pg_advisory_unlock(\(PostgresRecords.filingLock))", logger: self.logger)
        }
        defer { unlocked.raise() }
        try await self.givenBackWhileHeld(vaultA, vaultB, thirdCase, "behind a restore", release: unlocked)
        try await unlocker.value
        #expect(storage.oneTripCounts == (read: 6, filed: 1, givenBack: 5))

        // What needs more than the case goes under the lock from the start: a session note needs the
        // agreements, and a record it supersedes is read (here another case's, refused).
        let note = await Self.awaitedFiling(
            vaultA, NewRecord(caseID: otherCase, type: .sessionNote, content: Self.note("n")))
        #expect(note.failureCode == .agreementsMissing, "\(note)")
        let superseding = await Self.awaitedFiling(
            vaultA,
            NewRecord(caseID: otherCase, type: .intakeForm, content: Self.intake("again"), supersedes: first.id))
        #expect(superseding.failureCode == .invalidField, "\(superseding)")
        #expect(storage.oneTripCounts == (read: 6, filed: 1, givenBack: 5))
    }

    @Test(
        "a database whose sessions begin at REPEATABLE READ, for a role with a statement timeout of 200 ms: the procedure refuses the first one-trip call (it files only at READ COMMITTED), and that filing and every later one are made under the case's lock, none in one trip; a filing that waits 600 ms for its case's lock held elsewhere still files, the daemon's sessions running without the timeout"
    )
    func oneTripUnderAnotherIsolation() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        // Set before the daemons connect: each of their sessions begins so.
        for setting in ["default_transaction_isolation = 'repeatable read'", "statement_timeout = '200ms'"] {
            _ = try clusters.psql(
                clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
                "ALTER ROLE \(PostgresClusters.user) SET \(setting)")
        }
        let keys = try KeyFolder()
        let (_, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let storage = vaultA.storage
        let caseID = try await self.blocking { try vaultA.openCase(header: Self.header, mediators: [], author: nil).id }

        let first = try await Self.awaitedFiling(
            vaultA, NewRecord(caseID: caseID, type: .intakeForm, content: Self.intake("first"))
        ).get()
        #expect(storage.oneTripCounts == (read: 1, filed: 0, givenBack: 1))
        let second = try await Self.awaitedFiling(
            vaultA, NewRecord(caseID: caseID, type: .intakeForm, content: Self.intake("second"))
        ).get()
        #expect(
            storage.oneTripCounts == (read: 1, filed: 0, givenBack: 1),
            "a filing was sent in one trip after the database refused the first")

        // The case's lock held by the other daemon for 600 ms, three times the role's statement timeout.
        let release = Flag()
        defer { release.raise() }
        let holder = await self.holdingCaseLock(vaultB, caseID, release: release)
        let (waiting, ended) = Self.filingInBackground(vaultA, caseID, "waited")
        try await Task.sleep(for: .milliseconds(600))
        #expect(!ended.isRaised, "the filing ended while the case's lock was held")
        release.raise()
        try await holder.value
        let third = try await waiting.value.get()

        for (record, marker) in [(first, "first"), (second, "second"), (third, "waited")] {
            let read = try await self.blocking { try vaultB.get(record.id) }
            #expect(read.content == Self.intake(marker) && read.metadata.caseID == caseID)
        }
    }

    @Test(
        "a one-trip filing whose call waits for a lock on the records' table (held as a migration would hold it): cancelled meanwhile, it answers storage-failure saying it may have been done and files nothing; left waiting past the procedure's 20 s lock timeout, it is given back to the case's lock and files once the table is let go"
    )
    func oneTripBehindATableLock() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let storage = vaultA.storage
        let caseID = try await self.blocking { try vaultA.openCase(header: Self.header, mediators: [], author: nil).id }
        // A session of the test keeps every insert into the records' table waiting.
        try await a.connection.query("BEGIN", logger: self.logger)
        try await a.connection.query("LOCK TABLE casevault_records IN SHARE MODE", logger: self.logger)
        let calls = """
            FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()
                AND query LIKE '%casevault_file_unchanged%'
            """

        // Cancelled while it waits (SQLSTATE 57014, which may also come after the procedure's commit).
        let (cancelled, _) = Self.filingInBackground(vaultA, caseID, "cancel")
        let waiting = PostgresQuery(unsafeSQL: "SELECT count(*) \(calls)")
        #expect(try await self.untilFound(waiting, on: b.connection), "the call never waited for the table")
        try await b.connection.query(
            PostgresQuery(unsafeSQL: "SELECT pg_cancel_backend(pid) \(calls)"), logger: self.logger)
        let outcome = await cancelled.value
        if case .failure(let error) = outcome {
            #expect(error.code == .storageFailure && error.message.contains("may have been done"), "\(error)")
        } else {
            Issue.record("a cancelled call was answered \(outcome)")
        }
        #expect(storage.oneTripCounts == (read: 1, filed: 0, givenBack: 0))

        // Left waiting: the procedure's lock timeout (SQLSTATE 55P03) gives it back to the case's lock, whose
        // insert waits in turn, and files once the table is let go.
        let (waited, _) = Self.filingInBackground(vaultA, caseID, "waited")
        let givenBack = await Self.within(seconds: 40) { storage.oneTripCounts.givenBack == 1 }
        #expect(givenBack, "the call was not given back at its lock timeout")
        try await a.connection.query("COMMIT", logger: self.logger)
        let filed = try await waited.value.get()
        #expect(storage.oneTripCounts == (read: 2, filed: 0, givenBack: 1))
        let kept = try await self.blocking {
            try vaultB.storage.records(caseID: caseID).filter { $0.type == .intakeForm }.map(\.id)
        }
        #expect(kept == [filed.id], "the cancelled call's form was filed, or the waiting one was not")
    }

    @Test(
        "a one-trip filing whose session the server ends while its commit waits for the synchronous standby answers storage-failure saying it may have been done, never a filing acknowledged: the procedure commits before it answers; the row was kept on the primary"
    )
    func oneTripCommitCutShort() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let caseID = try await self.blocking { try vaultA.openCase(header: Self.header, mediators: [], author: nil).id }

        try clusters.kill(primary: false)
        let filing = Task {
            await Self.awaitedFiling(vaultA, NewRecord(caseID: caseID, type: .intakeForm, content: Self.intake("cut")))
        }
        let waiting: PostgresQuery = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        #expect(try await self.untilFound(waiting, on: a.connection), "no commit waited for the standby")
        try await a.connection.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'", logger: self.logger)
        let outcome = await filing.value
        if case .failure(let error) = outcome {
            #expect(error.code == .storageFailure && error.message.contains("may have been done"), "\(error)")
        } else {
            Issue.record("a filing whose commit the standby never acknowledged was answered \(outcome)")
        }
        #expect(vaultA.storage.oneTripCounts == (read: 1, filed: 0, givenBack: 0))
        let kept = try await self.blocking {
            try vaultB.storage.records(caseID: caseID).filter { $0.type == .intakeForm }.count
        }
        #expect(kept == 1)
        try clusters.restartStandby()
    }
}

/// What a test's hook threw, if it did.
final class HookFailure: Sendable {
    let text = Mutex<String?>(nil)
}

extension Result where Failure == CaseVaultError {
    /// The code of the error, `nil` for a success.
    var failureCode: CaseVaultError.Code? {
        if case .failure(let error) = self { return error.code }
        return nil
    }
}

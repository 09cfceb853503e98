import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Synchronization
import Testing

/// The retention sweep on PostgreSQL (`PostgresStorage.sweep`), from two daemons at once.
extension EpochExchangeTests {
    /// Daemons vault-a and vault-b on `clusters`, epoch 1 turned to by a and received by b.
    func twoDaemonsOnEpochOne(_ clusters: PostgresClusters, _ keys: KeyFolder) async throws -> (Daemon, Daemon) {
        let (a, b) = try await self.twoDaemons(clusters, keys)
        _ = try await a.exchange.turn(from: nil, on: a.connection)
        #expect(try await b.exchange.receive(on: b.connection) == [1])
        return (a, b)
    }

    @Test(
        "the retention sweep on PostgreSQL: a dry run counts and changes nothing; a sweep stopped by its limit after one case's batch reports itself incomplete; two daemons sweeping at once dispose of the rest once between them, a case's records under one certificate of erasure by key destruction; a held case's records are held back, an open case's header kept; a second sweep finds nothing"
    )
    func sweepOnPostgres() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b) = try await self.twoDaemonsOnEpochOne(clusters, keys)
        let day: Int64 = 86_400_000
        let clock = Mutex<Int64>(1_780_000_000_000)
        let now: @Sendable () -> Int64 = { clock.withLock { $0 } }
        // Intake forms a day after filing; what a closed case keeps, a day after its closing.
        var retention = RetentionSchedule.standard
        retention.rules[.intakeForm] = RetentionRule(days: 1, after: .filed)
        for type in [RecordType.caseHeader, .agreementToMediate, .finalAgreement] {
            retention.rules[type] = RetentionRule(days: 1, after: .caseClosed)
        }
        // a sweeps a case a batch; b as many as 500 records a batch.
        let vaultA = try self.vault(a, clusters, retention: retention, sweepBatch: 1, clock: now)
        let vaultB = try self.vault(b, clusters, retention: retention, clock: now)
        let intake = Array(#"{"dispute_category":"roommate","screening_notes":"n"}"#.utf8)

        // Two closed cases (header, two agreements, an intake form, the final agreement), one open case with
        // a form, and a held case with a form.
        let (closed, open, held) = try await self.blocking { () throws -> ([CaseID], CaseID, CaseID) in
            var closed: [CaseID] = []
            for _ in 0..<2 {
                let (caseID, _) = try Self.caseInSession(vaultA, vaultB, notes: [])
                _ = try vaultB.file(NewRecord(caseID: caseID, type: .intakeForm, content: intake))
                _ = try vaultA.file(NewRecord(caseID: caseID, type: .finalAgreement, content: Self.finalAgreement))
                closed.append(caseID)
            }
            let open = try vaultA.openCase(header: Self.header, mediators: [], author: nil).id
            _ = try vaultA.file(NewRecord(caseID: open, type: .intakeForm, content: intake))
            let held = try vaultB.openCase(header: Self.header, mediators: [], author: nil).id
            _ = try vaultB.file(NewRecord(caseID: held, type: .intakeForm, content: intake))
            _ = try vaultB.placeHold(on: held, reason: "litigation", authority: .daemon)
            return (closed, open, held)
        }
        let heldForm = try await self.blocking { try vaultA.storage.records(caseID: held) }.filter {
            $0.type == .intakeForm
        }
        let openForm = try await self.blocking { try vaultA.storage.records(caseID: open) }.filter {
            $0.type == .intakeForm
        }

        // Nothing is due yet.
        let early = try await self.blocking { try vaultB.storage.sweep(dryRun: false, limit: nil, authority: .daemon) }
        #expect(early.totals == SweepReport.Counts() && early.certificates == 0)

        // Two days on: a dry run counts (2 closed cases of 5 records, and the open case's form) and changes nothing.
        clock.withLock { $0 += 2 * day }
        let dry = try await self.blocking { try vaultB.storage.sweep(dryRun: true, limit: nil, authority: .daemon) }
        #expect(dry.totals.disposed == 11 && dry.totals.heldBack == 1 && dry.certificates == 0)
        #expect(dry.byType[.intakeForm]?.disposed == 3 && dry.byType[.caseHeader]?.disposed == 2)
        #expect(try await self.blocking { try vaultA.storage.records(caseID: closed[0]) }.count == 5)

        // a stops after its first batch: one case, one certificate.
        let director = Authority(uid: 4100, role: "director")
        let first = try await self.blocking { try vaultA.storage.sweep(dryRun: false, limit: 1, authority: director) }
        #expect(!first.complete && first.certificates == 1)
        #expect([1, 5].contains(first.totals.disposed), "one case's records: \(first.totals)")

        // Both daemons at once: the rest goes once between them.
        async let sweptA = self.blocking { try vaultA.storage.sweep(dryRun: false, limit: nil, authority: director) }
        async let sweptB = self.blocking { try vaultB.storage.sweep(dryRun: false, limit: nil, authority: .daemon) }
        let (restA, restB) = try await (sweptA, sweptB)
        #expect(first.totals.disposed + restA.totals.disposed + restB.totals.disposed == 11)
        #expect(first.certificates + restA.certificates + restB.certificates == 3)
        #expect(restA.complete && restB.complete)
        // One after the other (the sweep's lock): the second listed what the first left, so found nothing gone.
        #expect(restA.totals.alreadyGone + restB.totals.alreadyGone == 0)

        // Gone for both daemons; the held form and the open case's header stay.
        for caseID in closed {
            for vault in [vaultA, vaultB] {
                #expect(try await self.blocking { try vault.storage.records(caseID: caseID) }.isEmpty)
            }
        }
        #expect(await self.code { _ = try vaultB.get(openForm[0].id) } == .shredded)
        #expect(try await self.blocking { try vaultB.get(heldForm[0].id) }.content == intake)
        #expect(try await self.blocking { try vaultA.storage.records(caseID: open) }.map(\.type) == [.caseHeader])

        // Each closed case: one certificate for its five records, of the sweep, erasure by key destruction.
        let publicKey = try SealingServices(rootKey: Self.vaultRootKey).certificatePublicKey
        for caseID in closed {
            let documents = try await self.blocking { try vaultB.storage.certificates(caseID: caseID) }
            let certificates = documents.compactMap {
                DestructionCertificate.verify(document: $0, publicKey: publicKey)
            }
            #expect(certificates.count == 1 && certificates.first?.records.count == 5)
            #expect(
                certificates.first?.method == "retention_sweep" && certificates.first?.reason == "retention_expired")
            #expect(certificates.first?.erasure?.method == "key_destruction")
        }

        // Nothing left but what the hold keeps.
        let again = try await self.blocking { try vaultA.storage.sweep(dryRun: false, limit: nil, authority: .daemon) }
        #expect(again.totals.disposed == 0 && again.totals.heldBack == 1 && again.certificates == 0)
    }

    /// A sweep run on a thread of its own: its report or error once it ends.
    final class RacedSweep: Sendable {
        private let outcome = Mutex<Result<SweepReport, CaseVaultError>?>(nil)
        private let done = DispatchSemaphore(value: 0)

        var isFinished: Bool { self.outcome.withLock { $0 != nil } }

        func run(_ body: @escaping @Sendable () throws(CaseVaultError) -> SweepReport) {
            Thread {
                let result = Result { () throws(CaseVaultError) in try body() }
                self.outcome.withLock { $0 = result }
                self.done.signal()
            }.start()
        }

        func wait() throws(CaseVaultError) -> SweepReport {
            self.done.wait()
            return try self.outcome.withLock { $0! }.get()
        }
    }

    @Test(
        "the sweep's batch looks again under its cases' locks: a hold placed and a record shredded by another daemon after the sweep listed them, committed while the sweep waits for those locks, are held back and counted already gone, and nothing is disposed of"
    )
    func sweepLooksAgainUnderLocks() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b) = try await self.twoDaemonsOnEpochOne(clusters, keys)
        let clock = Mutex<Int64>(1_780_000_000_000)
        let now: @Sendable () -> Int64 = { clock.withLock { $0 } }
        var retention = RetentionSchedule.standard
        retention.rules[.intakeForm] = RetentionRule(days: 1, after: .filed)
        let vaultA = try self.vault(a, clusters, retention: retention, clock: now)
        let vaultB = try self.vault(b, clusters, retention: retention, clock: now)
        let intake = Array(#"{"dispute_category":"roommate","screening_notes":"n"}"#.utf8)
        // Two open cases with an intake form each, due two days on.
        let (held, shredded, form) = try await self.blocking { () throws -> (CaseID, CaseID, RecordID) in
            let held = try vaultA.openCase(header: Self.header, mediators: [], author: nil).id
            _ = try vaultA.file(NewRecord(caseID: held, type: .intakeForm, content: intake))
            let shredded = try vaultA.openCase(header: Self.header, mediators: [], author: nil).id
            let form = try vaultA.file(NewRecord(caseID: shredded, type: .intakeForm, content: intake)).record.id
            return (held, shredded, form)
        }
        clock.withLock { $0 += 2 * 86_400_000 }
        let order = ShredOrder(
            method: .request, authority: Authority(uid: 4100, role: "director"), reason: "filed_in_error")

        // b holds both cases' locks: it places a hold on one and shreds the other's form, then starts a's
        // sweep, which lists both forms as due (b has not committed) and waits for the cases' locks.
        let sweep = RacedSweep()
        let release = DispatchSemaphore(value: 0)
        async let finishedEarly = self.blocking {
            try vaultB.storage.withCaseLock(held) { () throws(CaseVaultError) -> Bool in
                try vaultB.storage.withCaseLock(shredded) { () throws(CaseVaultError) -> Bool in
                    _ = try vaultB.placeHold(on: held, reason: "late", authority: .daemon)
                    _ = try vaultB.storage.shred([form], order: order)
                    sweep.run { () throws(CaseVaultError) in
                        try vaultA.storage.sweep(dryRun: false, limit: nil, authority: .daemon)
                    }
                    release.wait()
                    return sweep.isFinished
                }
            }
        }
        // Until the sweep waits for a case's lock (PostgreSQL's second key space is the case locks').
        let waiting = try await self.untilFound(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2",
            on: a.connection)
        release.signal()
        #expect(waiting, "the sweep never waited for a case's lock")
        #expect(try await !finishedEarly, "the sweep finished while b held the cases' locks")
        // Waited for on a thread of its own: the sweep's storage calls need the cooperative pool's threads.
        let report = try await self.blocking { try sweep.wait() }
        #expect(report.totals.disposed == 0, "\(report.totals)")
        #expect(report.totals.heldBack == 1 && report.totals.alreadyGone == 1, "\(report.totals)")
        #expect(report.certificates == 0)
        #expect(try await self.blocking { try vaultA.storage.records(caseID: held) }.count == 2)
    }
}

import CaseVaultCore
import CaseVaultStore
import Foundation
import GRDB
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Retention sweeps and legal holds")
struct RetentionTests {
    /// One record of `type` in `caseID`, filed at the clock's current time.
    static func file(_ store: RecordStore, _ type: RecordType, in caseID: CaseID, marker: String = "keep") throws
        -> RecordMetadata
    {
        try store.sealed.put(NewRecord(caseID: caseID, type: type, content: Samples.content(type, marker: marker)))
    }

    static func openCase(_ store: RecordStore) throws -> CaseSummary {
        try store.sealed.openCase(header: Samples.content(.caseHeader, marker: "names"), mediators: [], author: nil)
    }

    static func isLive(_ store: RecordStore, _ id: RecordID) throws -> Bool {
        do {
            _ = try store.sealed.get(id)
            return true
        } catch  where error.code == .shredded {
            return false
        }
    }

    @Test(
        "the clock walks through the standard schedule: each type is disposed at its due instant, not a second or a millisecond earlier"
    )
    func walkThroughTheSchedule() throws {
        let vault = TestVault()
        // Filed on a leap day, so that "3 years after" must land on 28 February.
        let clock = TestClock("2024-02-29T12:00:00Z")
        let store = try vault.open(clock: clock)
        defer { store.close() }

        let closed = try Self.openCase(store)
        let closedHeader = try #require(store.records(caseID: closed.id).first)
        let agreement = try Self.file(store, .agreementToMediate, in: closed.id)
        let final = try Self.file(store, .finalAgreement, in: closed.id)
        let open = try Self.openCase(store)
        let intake = try Self.file(store, .intakeForm, in: open.id)
        let note = try Self.file(store, .sessionNote, in: open.id)
        let evaluation = try Self.file(store, .evaluation, in: open.id)
        let disclosure = try Self.file(store, .disclosure, in: open.id)
        let openAgreement = try Self.file(store, .agreementToMediate, in: open.id)
        clock.now = TestClock.parse("2024-03-10T12:00:00Z")
        _ = try store.closeCase(closed.id, outcome: .noAgreement)

        // When each is due, written out from docs/API.md's schedule by hand.
        let due: [(RecordMetadata, String)] = [
            (note, "2024-03-30T12:00:00Z"),  // 30 days after filing
            (evaluation, "2026-02-28T12:00:00Z"),  // 2 years after filing (no 29 February in 2026)
            (intake, "2027-02-28T12:00:00Z"),  // 3 years after filing
            (disclosure, "2031-02-28T12:00:00Z"),  // 7 years after filing
            (agreement, "2031-03-10T12:00:00Z"),  // 7 years after the case closed
            (final, "2031-03-10T12:00:00Z"),
            (closedHeader, "2031-03-10T12:00:00Z"),
        ]
        for time in Set(due.map(\.1)).sorted() {
            let instant = TestClock.parse(time)
            let now = due.filter { $0.1 == time }.map(\.0)
            for before in [instant - 1000, instant - 1] {
                clock.now = before
                _ = try store.sweep()
                for record in now {
                    #expect(try Self.isLive(store, record.id), "\(record.type) was disposed before \(time)")
                }
            }
            clock.now = instant
            let report = try store.sweep()
            #expect(report.disposed == now.count)
            for record in now {
                #expect(!(try Self.isLive(store, record.id)), "\(record.type) was not disposed at \(time)")
                #expect(report.byType[record.type]?.disposed == 1)
            }
            // Everything due later is still there.
            for (later, laterTime) in due where TestClock.parse(laterTime) > instant {
                #expect(try Self.isLive(store, later.id), "\(later.type) went early, at \(time)")
            }
        }
        // The open case's agreement and header count from a closing that has not happened.
        clock.now = TestClock.parse("2124-01-01T00:00:00Z")
        _ = try store.sweep()
        #expect(try Self.isLive(store, openAgreement.id))
        #expect(
            try store.records(caseID: open.id).map(\.type).sorted(by: { $0.rawValue < $1.rawValue }) == [
                .agreementToMediate, .caseHeader,
            ])
        let certified = try Certified.methods(store)
        for (record, _) in due {
            #expect(certified[record.id.rawValue] == "retention_sweep", "each disposal has its certificate")
        }
    }

    @Test("a configured rule replaces the standard one, counted from the event it names")
    func configuredRule() throws {
        let vault = TestVault()
        let clock = TestClock("2026-01-31T08:00:00Z")
        let store = try vault.open(clock: clock) { configuration in
            configuration.retention = try! RetentionSchedule.standard(overriddenBy: [
                "evaluation": "1 month after filed"
            ])
        }
        defer { store.close() }
        let summary = try Self.openCase(store)
        let evaluation = try Self.file(store, .evaluation, in: summary.id)
        clock.now = TestClock.parse("2026-02-28T07:59:59Z")
        _ = try store.sweep()
        #expect(try Self.isLive(store, evaluation.id))
        clock.now = TestClock.parse("2026-02-28T08:00:00Z")  // 31 January + 1 month = 28 February
        _ = try store.sweep()
        #expect(!(try Self.isLive(store, evaluation.id)))
    }

    @Test("a held case's records survive every sweep until the hold is released; notes are not held by default")
    func holdsKeepRecordsUntilReleased() throws {
        let vault = TestVault()
        let clock = TestClock("2020-01-01T00:00:00Z")
        let store = try vault.open(clock: clock)
        defer { store.close() }
        let held = try Self.openCase(store)
        let intake = try Self.file(store, .intakeForm, in: held.id)
        let note = try Self.file(store, .sessionNote, in: held.id)
        let other = try Self.openCase(store)
        let otherIntake = try Self.file(store, .intakeForm, in: other.id)
        let hold = try store.sealed.placeHold(
            on: held.id, reason: "litigation QX7MARKERZK", authority: Authority(uid: 1000, role: "director"))
        let second = try store.sealed.placeHold(
            on: held.id, reason: "a second matter", authority: Authority(uid: 1000, role: "director"))
        let standing = try store.sealed.holds()
        #expect(Set(standing.map(\.id)) == [hold.id, second.id])
        #expect(
            standing.first { $0.id == hold.id }?.reason == "litigation QX7MARKERZK",
            "the director reads the reason back")

        for year in ["2024", "2026", "2030"] {
            clock.now = TestClock.parse("\(year)-06-01T00:00:00Z")
            let report = try store.sweep()
            #expect(try Self.isLive(store, intake.id), "a held record was disposed in \(year)")
            #expect(report.byType[.intakeForm]?.heldBack == 1)
        }
        #expect(!(try Self.isLive(store, note.id)), "a hold keeps notes only when the configuration says so")
        #expect(!(try Self.isLive(store, otherIntake.id)))
        #expect { try store.shred(intake.id) } throws: { ($0 as? CaseVaultError)?.code == .held }

        _ = try store.releaseHold(hold.id)
        _ = try store.sweep()
        #expect(try Self.isLive(store, intake.id), "another hold still stands")
        _ = try store.releaseHold(second.id)
        #expect(throws: CaseVaultError.self) { _ = try store.releaseHold(second.id) }
        let report = try store.sweep()
        #expect(report.byType[.intakeForm]?.disposed == 1)
        #expect(!(try Self.isLive(store, intake.id)), "the next sweep after the release disposes the record")
        #expect(try store.sealed.holds().isEmpty)
        // The reason is sealed: it is on no file in clear.
        #expect(vault.filesContaining(Array("QX7MARKERZK".utf8)).isEmpty)
    }

    @Test("with holds_keep_session_notes, a hold keeps notes through sweeps and through the case's closing")
    func holdsKeepNotesWhenConfigured() throws {
        let vault = TestVault()
        let clock = TestClock("2020-01-01T00:00:00Z")
        let store = try vault.open(clock: clock) { configuration in
            configuration.retention.holdsKeepSessionNotes = true
        }
        defer { store.close() }
        let summary = try Self.openCase(store)
        let note = try Self.file(store, .sessionNote, in: summary.id)
        let hold = try store.sealed.placeHold(on: summary.id, reason: "r", authority: .daemon)
        clock.now = TestClock.parse("2021-01-01T00:00:00Z")
        #expect(try store.sweep().byType[.sessionNote]?.heldBack == 1)
        #expect(try store.closeCase(summary.id, outcome: .withdrawn).isEmpty)
        #expect(try Self.isLive(store, note.id))
        _ = try store.releaseHold(hold.id)
        #expect(try store.sweep().byType[.sessionNote]?.disposed == 1)
        #expect(!(try Self.isLive(store, note.id)))
    }

    @Test("a dry run changes nothing; a sweep is idempotent; a limit stops early and says so")
    func dryRunIdempotenceAndLimit() throws {
        let vault = TestVault()
        let clock = TestClock("2020-01-01T00:00:00Z")
        let store = try vault.open(clock: clock) { $0.sweepBatch = 4 }
        defer { store.close() }
        let summary = try Self.openCase(store)
        let notes = try (0..<10).map { _ in try Self.file(store, .sessionNote, in: summary.id) }
        clock.now = TestClock.parse("2020-03-01T00:00:00Z")

        let plan = try store.sweep(dryRun: true)
        #expect(plan.dryRun && plan.byType[.sessionNote]?.disposed == 10)
        #expect(try notes.allSatisfy { try Self.isLive(store, $0.id) })
        #expect(try store.certificates().isEmpty)

        let partial = try store.sweep(limit: 5)
        #expect(!partial.complete)
        #expect(partial.disposed == 8, "whole batches of 4 until the limit is reached")
        let rest = try store.sweep()
        #expect(rest.complete && rest.disposed == 2)
        let again = try store.sweep()
        #expect(again.disposed == 0 && again.totals.alreadyGone == 0)
        #expect(try notes.allSatisfy { !(try Self.isLive(store, $0.id)) })
        #expect(try Certified.methods(store).count == 10)
    }

    @Test(
        "a sweep leaves the index's WAL empty when it returns: no page image of the rows it removed, or of the writes that certified them, stays there"
    )
    func sweepTruncatesTheWAL() throws {
        let vault = TestVault()
        let clock = TestClock("2020-01-01T00:00:00Z")
        let store = try vault.open(clock: clock) { $0.sweepBatch = 4 }
        defer { store.close() }
        let cases = try (0..<3).map { _ in try Self.openCase(store) }
        for n in 0..<10 { _ = try Self.file(store, .sessionNote, in: cases[n % cases.count].id) }
        clock.now = TestClock.parse("2020-03-01T00:00:00Z")
        #expect(vault.indexWALBytes > 0, "the puts' rows went through the WAL")

        let report = try store.sweep()
        #expect(report.disposed == 10 && report.certificates == 3)
        #expect(vault.indexWALBytes == 0, "after the sweep the WAL still holds \(vault.indexWALBytes) bytes")
    }
}

extension RetentionTests {
    /// `cases` cases whose `copies` notes each were filed in turn (so every batch holds records of every
    /// case), due 30 days after; the ids by case.
    static func interleavedNotes(_ store: RecordStore, cases: Int = 3, copies: Int = 6) throws -> [CaseID: Set<String>]
    {
        let caseIDs = try (0..<cases).map { _ in try Self.openCase(store).id }
        var notes: [CaseID: Set<String>] = [:]
        for copy in 0..<copies {
            for caseID in caseIDs {
                notes[caseID, default: []].insert(
                    try Self.file(store, .sessionNote, in: caseID, marker: "n\(copy)").id.rawValue)
            }
        }
        return notes
    }

    /// The records each certificate of `store` lists, by the case it names.
    static func certified(_ store: RecordStore) throws -> [(caseID: String, records: Set<String>)] {
        try store.certificates().map { document in
            let certificate = try #require(
                DestructionCertificate.verify(document: document, publicKey: store.certificatePublicKey))
            #expect(certificate.method == "retention_sweep")
            return (certificate.caseID, Set(certificate.records.map(\.recordID)))
        }
    }

    @Test(
        "a sweep of more records than a section of certificates, its cases' records interleaved: each case gets one certificate listing exactly its records, and no record waits for one after"
    )
    func certificatesAcrossSections() throws {
        let vault = TestVault()
        let clock = TestClock("2020-01-01T00:00:00Z")
        let store = try vault.open(clock: clock)
        defer { store.close() }
        // Five cases of a quarter of a section each: the first section of certificates takes four whole cases
        // and the next one the fifth.
        let notes = try Self.interleavedNotes(store, cases: 5, copies: RecordStore.shredSection / 4)
        clock.now = TestClock.parse("2020-03-01T00:00:00Z")

        let report = try store.sweep()
        #expect(report.disposed == 5 * (RecordStore.shredSection / 4) && report.certificates == 5)
        let certified = try Self.certified(store)
        #expect(Set(certified.map(\.caseID)) == Set(notes.keys.map(\.rawValue)), "a case has no certificate, or two")
        for (caseID, records) in certified {
            #expect(notes[try CaseID(caseID)] == records, "a certificate lists exactly its case's swept records")
        }
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        defer { try? index.close() }
        let (waiting, orders) = try index.read { db in
            (
                try Int.fetchOne(db, sql: "SELECT count(*) FROM shred_certifying"),
                try Int.fetchOne(db, sql: "SELECT count(*) FROM shred_order_list")
            )
        }
        #expect(waiting == 0 && orders == 0, "records or orders still wait for certificates")
    }

    @Test("a sweep's batches take records in the index's order, and each case still gets one certificate per sweep")
    func oneCertificatePerCasePerSweep() throws {
        let vault = TestVault()
        let clock = TestClock("2020-01-01T00:00:00Z")
        let store = try vault.open(clock: clock) { $0.sweepBatch = 4 }
        defer { store.close() }
        let notes = try Self.interleavedNotes(store)
        clock.now = TestClock.parse("2020-03-01T00:00:00Z")

        let report = try store.sweep()
        #expect(report.disposed == 18 && report.certificates == 3)
        let certified = try Self.certified(store)
        #expect(certified.count == 3, "a case's records were split over the batches' certificates")
        for (caseID, records) in certified {
            #expect(notes[try CaseID(caseID)] == records, "a certificate lists exactly its case's swept records")
        }
    }
}

@Suite("Retention sweep crash safety")
struct SweepCrashTests {
    @Test(
        "a sweep killed between its batches has what it shredded certified at the next open, one certificate per case"
    )
    func killedSweepIsCertifiedAtOpen() throws {
        let vault = TestVault()
        let (notes, sweepTime) = try Self.killSweepAfterTwoBatches(vault)
        try Self.expectKilledSweepCertified(vault, notes: notes, at: sweepTime)
    }

    @Test(
        "a sweep killed once its certificates are committed, before its removed records leave the index, is not certified twice: at the next open each case keeps its one certificate, and nothing waits after"
    )
    func sweepKilledAfterItsCertificates() throws {
        let vault = TestVault()
        let (notes, sweepTime) = try Self.killSweepAfterItsCertificates(vault)
        #expect(try Self.waiting(vault) == (18, 3), "the sweep died with its three certificates committed")
        try Self.expectCertifiedOnce(vault, notes: notes, at: sweepTime)
    }

    @Test(
        "a sweep killed half-way through removing its certified records, over more commits than one: at the next open none is certified again, and nothing waits after"
    )
    func sweepKilledWhileRemovingItsCertifiedRecords() throws {
        let vault = TestVault()
        // A section certifies one case of 100 notes, or removes 10 waiting rows: the certificates take one
        // commit, the 300 rows two more of 20 sections; the helper dies after the first of those.
        let (notes, sweepTime) = try Self.killSweepAfterItsCertificates(vault, copies: 100, batch: 100, passes: 1)
        #expect(try Self.waiting(vault) == (100, 3), "the sweep died with 200 of its 300 certified rows removed")
        try Self.expectCertifiedOnce(vault, notes: notes, at: sweepTime)
    }

    @Test(
        "the same, with the sweep's order row lost as from a damaged index: its certified records are not certified again as orphans at the next open"
    )
    func certifiedRecordsOfALostOrder() throws {
        let vault = TestVault()
        let (notes, sweepTime) = try Self.killSweepAfterItsCertificates(vault)
        #expect(try Self.waiting(vault) == (18, 3), "the sweep died with its three certificates committed")
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        try index.write { db in try db.execute(sql: "DELETE FROM shred_order_list") }
        try index.close()
        try Self.expectCertifiedOnce(vault, notes: notes, at: sweepTime)
    }

    /// Files `RetentionTests.interleavedNotes` (three cases of `copies` notes) in `vault` and kills, in a
    /// helper process, a sweep in batches of `batch` after `passes` + 1 commits of its certification, a
    /// section of which certifies one case (the certificates in one commit, the rows removed in the next):
    /// by default once its certificates are committed, before the removed records leave
    /// `shred_certifying`. Returns the notes and the sweep's time.
    static func killSweepAfterItsCertificates(_ vault: TestVault, copies: Int = 6, batch: Int = 4, passes: Int = 0)
        throws -> (notes: [CaseID: Set<String>], at: Int64)
    {
        let notes = try {
            let store = try vault.open(clock: TestClock("2020-01-01T00:00:00Z"))
            defer { store.close() }
            return try RetentionTests.interleavedNotes(store, copies: copies)
        }()
        let sweepTime = TestClock.parse("2020-03-01T00:00:00Z")
        let result = try Helper.run([
            "sweep", "--data", vault.data, "--key", vault.key, "--now", "\(sweepTime)", "--batch", "\(batch)",
            "--certification-section", "1", "--crash-at", CrashPoint.certifyAfterCommit.rawValue,
            "--crash-after-passes", "\(passes)",
        ])
        #expect(!result.output.contains("swept"), "the helper died at its point")
        return (notes, sweepTime)
    }

    /// The removed records that wait in `vault`'s closed index, and the cases listed as certified meanwhile.
    static func waiting(_ vault: TestVault) throws -> (records: Int, cases: Int) {
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        defer { try? index.close() }
        return try index.read { db in
            (
                try Int.fetchOne(db, sql: "SELECT count(*) FROM shred_certifying") ?? -1,
                try Int.fetchOne(db, sql: "SELECT count(*) FROM shred_certified") ?? -1
            )
        }
    }

    /// Opens `vault` after `killSweepAfterItsCertificates`: each case of `notes` has one certificate, listing
    /// exactly its notes, and nothing waits.
    static func expectCertifiedOnce(_ vault: TestVault, notes: [CaseID: Set<String>], at sweepTime: Int64) throws {
        var configuration = vault.configuration()
        configuration.clock = { sweepTime }
        let store = try RecordStore.open(configuration, logger: .init(label: "test"))
        defer { store.close() }
        let certified = try RetentionTests.certified(store)
        #expect(certified.count == 3, "a case was certified again at open: \(certified.map(\.caseID))")
        for (caseID, records) in certified {
            #expect(notes[try CaseID(caseID)] == records, "a certificate lists exactly its case's swept records")
        }
        #expect(try Self.waiting(vault) == (0, 0), "records or certified cases still wait after the open")
        #expect(try store.sweep().disposed == 0)
    }

    /// Files `RetentionTests.interleavedNotes` in `vault` and kills, in a helper process, a sweep in batches
    /// of four after its second batch: eight notes of three cases removed and waiting for their
    /// certificates under the sweep's open order. Returns the notes and the sweep's time.
    static func killSweepAfterTwoBatches(_ vault: TestVault) throws -> (notes: [CaseID: Set<String>], at: Int64) {
        let clock = TestClock("2020-01-01T00:00:00Z")
        let notes = try {
            let store = try vault.open(clock: clock)
            defer { store.close() }
            return try RetentionTests.interleavedNotes(store)
        }()
        let sweepTime = TestClock.parse("2020-03-01T00:00:00Z")
        let result = try Helper.run([
            "sweep", "--data", vault.data, "--key", vault.key, "--now", "\(sweepTime)", "--batch", "4",
            "--crash-at", CrashPoint.sweepAfterBatch.rawValue, "--crash-after-passes", "1",
        ])
        #expect(!result.output.contains("swept"), "the helper died after its second batch")
        return (notes, sweepTime)
    }

    /// Opens `vault` after `killSweepAfterTwoBatches` and checks that the killed sweep's eight notes are
    /// certified at open, one certificate per case, and that the next sweep disposes of the rest.
    static func expectKilledSweepCertified(_ vault: TestVault, notes: [CaseID: Set<String>], at sweepTime: Int64)
        throws
    {
        var configuration = vault.configuration()
        configuration.clock = { sweepTime }
        let store = try RecordStore.open(configuration, logger: .init(label: "test"))
        defer { store.close() }
        let atOpen = try RetentionTests.certified(store)
        #expect(atOpen.count == 3, "the killed sweep's order is certified at open, one certificate per case")
        #expect(atOpen.reduce(0) { $0 + $1.records.count } == 8, "two batches of four were shredded")
        for (caseID, records) in atOpen {
            #expect(records.isSubset(of: notes[try CaseID(caseID)] ?? []))
        }
        let rest = try store.sweep()
        #expect(rest.disposed == 10 && rest.certificates == 3)
    }

    static let cycles = max(20, Int(ProcessInfo.processInfo.environment["CASEVAULT_CRASH_CYCLES"] ?? "") ?? 20)

    /// A vault at 2020-01-01: 12 cases, one held, half closed, each with records of every type.
    struct Fixture {
        var keep: [RecordID: [UInt8]] = [:]
        var dispose: [RecordID] = []
        var heldCase: CaseID?
    }

    static func populate(_ vault: TestVault) throws -> Fixture {
        let clock = TestClock("2020-01-01T00:00:00Z")
        let store = try vault.open(clock: clock)
        defer { store.close() }
        var fixture = Fixture()
        for index in 0..<12 {
            let summary = try RetentionTests.openCase(store)
            let header = try #require(store.records(caseID: summary.id).first)
            let closes = index % 2 == 0
            let held = index == 3
            if held {
                fixture.heldCase = summary.id
                _ = try store.sealed.placeHold(on: summary.id, reason: "held", authority: .daemon)
            }
            var records: [RecordMetadata] = []
            for type in [RecordType.intakeForm, .agreementToMediate, .evaluation, .disclosure, .finalAgreement] {
                for copy in 0..<3 {
                    records.append(try RetentionTests.file(store, type, in: summary.id, marker: "c\(index)-\(copy)"))
                }
            }
            let notes = try (0..<3).map { copy in
                try RetentionTests.file(store, .sessionNote, in: summary.id, marker: "n\(index)-\(copy)")
            }
            if closes {
                _ = try store.closeCase(summary.id, outcome: .noAgreement)  // shreds the notes now
            } else {
                records += notes
            }
            // Swept at 2028-01-01: due are intake (3 y), evaluation (2 y), disclosure (7 y), notes, and for
            // closed cases the agreements, final agreements and header (7 y after closing).
            for record in records + [header] {
                let filedRule = [RecordType.intakeForm, .evaluation, .disclosure, .sessionNote].contains(record.type)
                let due = filedRule || closes
                let covered = held && record.type != .sessionNote
                if due && !covered {
                    fixture.dispose.append(record.id)
                } else {
                    fixture.keep[record.id] = try store.sealed.get(record.id).content
                }
            }
        }
        return fixture
    }

    @Test(
        "a sweep killed with SIGKILL at random points leaves, after restart and one more sweep, exactly the records that should remain"
    )
    func killedSweepResumes() throws {
        let template = TestVault()
        let fixture = try Self.populate(template)
        let sweepTime = TestClock.parse("2028-01-01T00:00:00Z")
        let points: [CrashPoint] = [
            .shredAfterMark, .shredAfterSlotOverwrite, .shredAfterCiphertextOverwrite, .shredAfterIndexRemoval,
            .sweepAfterBatch,
        ]
        var killed = 0
        for cycle in 0..<Self.cycles {
            let vault = TestVault()
            try FileManager.default.copyItem(atPath: template.root + "/data", toPath: vault.data)
            try FileManager.default.copyItem(atPath: template.root + "/keys", toPath: vault.root + "/keys")
            // Evidence of one record to be disposed, to look for on disk afterwards.
            let witness = fixture.dispose[cycle % fixture.dispose.count]
            let evidence = try ShredEvidence(vault: vault, id: witness)

            var arguments = [
                "sweep", "--data", vault.data, "--key", vault.key, "--now", "\(sweepTime)", "--batch", "7",
            ]
            if cycle % 2 == 0 {
                let point = points[(cycle / 2) % points.count]
                arguments += ["--crash-at", point.rawValue, "--crash-after-passes", "\(Int.random(in: 0..<8))"]
            } else {
                arguments += ["--die-after-microseconds", "\(Int.random(in: 1_000...80_000))"]
            }
            let result = try Helper.run(arguments)
            if !result.output.contains("swept") { killed += 1 }

            var configuration = vault.configuration()
            configuration.clock = { sweepTime }
            let store = try RecordStore.open(configuration, logger: .init(label: "test"))
            let after = try store.sweep()
            #expect(after.complete)
            for (id, content) in fixture.keep {
                #expect(
                    try store.sealed.get(id).content == content,
                    "cycle \(cycle): a record that should remain is gone or changed")
            }
            for id in fixture.dispose {
                #expect(throws: CaseVaultError.self, "cycle \(cycle): a due record survived") {
                    _ = try store.sealed.get(id)
                }
                #expect(try store.isShredded(id))
            }
            // (Closing the even cases shredded their notes before the sweep, with certificates of their own.)
            let swept = Set(try Certified.methods(store).filter { $0.value == "retention_sweep" }.keys)
            let expected = Set(fixture.dispose.map(\.rawValue))
            #expect(
                swept == expected,
                "cycle \(cycle): \(expected.subtracting(swept).count) disposals uncertified, \(swept.subtracting(expected).count) certified wrongly"
            )
            let again = try store.sweep()
            #expect(again.disposed == 0, "cycle \(cycle): the sweep is idempotent")
            store.close()
            evidence.expectGone(from: vault)
        }
        #expect(
            killed >= Self.cycles / 2, "most cycles should have been killed mid-sweep (\(killed) of \(Self.cycles))")
    }
}

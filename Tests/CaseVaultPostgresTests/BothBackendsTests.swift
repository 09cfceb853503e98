import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// One scenario, through the sealing layer's `Vault`, on each storage: the local store (a data directory)
/// and PostgreSQL (a primary and a synchronous standby the test starts). Whatever the backend, a user
/// relies on the same answers.
extension EpochExchangeTests {
    @Test(
        "the same case on a data directory and on PostgreSQL gets the same answers: a record reads back, an unknown one is not found; a note waits for every agreement; a hold refuses a shred until released and keeps its reason; a shred answers shredded afterwards, enters the ledger and is certified with the record named; a final agreement destroys the notes and closes the case, refusing later filings; certificates verify under the vault's key"
    )
    func sameAnswersOnBothBackends() async throws {
        var template = Array((NSTemporaryDirectory() + "/casevault-both-XXXXXX").utf8CString)
        let folder = String(cString: try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }))
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let local = try RecordStore.open(
            StoreConfiguration(
                dataDirectory: URL(fileURLWithPath: folder + "/data"),
                rootKeyFile: URL(fileURLWithPath: folder + "/keys/root.key"), maxContentBytes: 1 << 20),
            logger: Logger(label: "test"))
        defer { local.close() }
        let localVault = Vault(storage: local)
        try await self.blocking { try Self.sameAnswers(localVault, publicKey: local.sealing.certificatePublicKey) }

        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (_, _, vaultA, _) = try await self.twoVaults(clusters, keys)
        let publicKey = try SealingServices(rootKey: Self.vaultRootKey).certificatePublicKey
        try await self.blocking { try Self.sameAnswers(vaultA, publicKey: publicKey) }
    }

    /// The scenario, on one storage; its certificates verify under `publicKey`.
    static func sameAnswers<S: ServedStorage>(_ vault: Vault<S>, publicKey: [UInt8]) throws {
        func code(_ body: () throws -> Void) -> CaseVaultError.Code? {
            do {
                try body()
                return nil
            } catch {
                return (error as? CaseVaultError)?.code
            }
        }
        let storage = vault.storage
        let opened = try vault.openCase(header: Self.header, mediators: [4001], author: "intake")
        let caseID = opened.id
        let intake = try vault.file(
            NewRecord(
                caseID: caseID, type: .intakeForm,
                content: Array(#"{"dispute_category":"roommate","screening":"both backends"}"#.utf8))
        ).record
        #expect(String(decoding: try vault.get(intake.id).content, as: UTF8.self).contains("both backends"))
        #expect(code { _ = try vault.get(RecordID(bytes: Random.bytes(count: 16))) } == .notFound)

        #expect(
            code { _ = try vault.file(NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("early"))) }
                == .agreementsMissing)
        for participant in ["p1", "p2"] {
            _ = try vault.file(
                NewRecord(caseID: caseID, type: .agreementToMediate, content: Self.agreement(participant)))
        }
        let note = try vault.file(NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("said"))).record
        #expect(String(decoding: try vault.get(note.id).content, as: UTF8.self).contains("said"))

        let hold = try vault.placeHold(on: caseID, reason: "litigation pending", authority: .daemon)
        #expect(
            code { _ = try storage.shred([intake.id], order: ShredOrder(method: .request, authority: .daemon)) }
                == .held)
        #expect(try vault.holds().map(\.reason) == ["litigation pending"])
        #expect(try storage.releaseHold(hold.id) == caseID)
        #expect(try vault.holds().isEmpty)
        _ = try storage.shred([intake.id], order: ShredOrder(method: .request, authority: .daemon))
        #expect(code { _ = try vault.get(intake.id) } == .shredded)
        #expect(try storage.shreddedRecords().map(\.id).contains(intake.id))
        let first = try storage.certificates(caseID: caseID).compactMap {
            DestructionCertificate.verify(document: $0, publicKey: publicKey)
        }
        #expect(first.count == 1 && first.first?.records.map(\.recordID) == [intake.id.rawValue])

        let final = try vault.file(NewRecord(caseID: caseID, type: .finalAgreement, content: Self.finalAgreement))
        #expect(final.shredded == [note.id])
        #expect(code { _ = try vault.get(note.id) } == .shredded)
        #expect(try storage.caseSummary(caseID).state == .closed)
        #expect(
            code { _ = try vault.file(NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("late"))) }
                == .caseClosed)
        let all = try storage.certificates(caseID: caseID)
        #expect(
            all.count == 2
                && all.allSatisfy { DestructionCertificate.verify(document: $0, publicKey: publicKey) != nil })
    }

    @Test(
        "the retention sweep gives the same answers on a data directory and on PostgreSQL: nothing is due before its time; a dry run counts and changes nothing; the sweep disposes of a form whose time came, under a certificate, holds back a held case's form, and finds nothing the second time"
    )
    func sweepAnswersOnBothBackends() async throws {
        let day: Int64 = 86_400_000
        var retention = RetentionSchedule.standard
        retention.rules[.intakeForm] = RetentionRule(days: 1, after: .filed)

        var template = Array((NSTemporaryDirectory() + "/casevault-both-XXXXXX").utf8CString)
        let folder = String(cString: try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }))
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let localClock = Mutex<Int64>(1_780_000_000_000)
        var configuration = StoreConfiguration(
            dataDirectory: URL(fileURLWithPath: folder + "/data"),
            rootKeyFile: URL(fileURLWithPath: folder + "/keys/root.key"), maxContentBytes: 1 << 20)
        configuration.retention = retention
        configuration.clock = { localClock.withLock { $0 } }
        let local = try RecordStore.open(configuration, logger: Logger(label: "test"))
        defer { local.close() }
        let localVault = Vault(storage: local)
        try await self.blocking {
            try Self.sweepAnswers(
                localVault, publicKey: local.sealing.certificatePublicKey,
                advance: { localClock.withLock { $0 += 2 * day } })
        }

        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, _) = try await self.twoDaemonsOnEpochOne(clusters, keys)
        let clock = Mutex<Int64>(1_780_000_000_000)
        let vault = try self.vault(a, clusters, retention: retention, clock: { clock.withLock { $0 } })
        let publicKey = try SealingServices(rootKey: Self.vaultRootKey).certificatePublicKey
        try await self.blocking {
            try Self.sweepAnswers(vault, publicKey: publicKey, advance: { clock.withLock { $0 += 2 * day } })
        }
    }

    /// The sweep's scenario, on one storage whose clock `advance` moves two days on.
    static func sweepAnswers<S: ServedStorage>(_ vault: Vault<S>, publicKey: [UInt8], advance: () -> Void) throws {
        let storage = vault.storage
        let form = Array(#"{"dispute_category":"roommate","screening":"due"}"#.utf8)
        let open = try vault.openCase(header: Self.header, mediators: [], author: nil).id
        let due = try vault.file(NewRecord(caseID: open, type: .intakeForm, content: form)).record
        let held = try vault.openCase(header: Self.header, mediators: [], author: nil).id
        let kept = try vault.file(NewRecord(caseID: held, type: .intakeForm, content: form)).record
        _ = try vault.placeHold(on: held, reason: "litigation", authority: .daemon)

        let early = try storage.sweep(dryRun: false, limit: nil, authority: .daemon)
        #expect(early.totals == SweepReport.Counts() && early.certificates == 0)
        advance()
        let dry = try storage.sweep(dryRun: true, limit: nil, authority: .daemon)
        #expect(dry.totals.disposed == 1 && dry.totals.heldBack == 1 && dry.certificates == 0, "\(dry)")
        #expect(String(decoding: try vault.get(due.id).content, as: UTF8.self).contains("due"))
        let swept = try storage.sweep(dryRun: false, limit: nil, authority: .daemon)
        #expect(swept.totals.disposed == 1 && swept.totals.heldBack == 1 && swept.certificates == 1, "\(swept)")
        do {
            _ = try vault.get(due.id)
            Issue.record("a swept form still reads")
        } catch {
            #expect(error.code == .shredded)
        }
        #expect(String(decoding: try vault.get(kept.id).content, as: UTF8.self).contains("due"))
        #expect(try storage.shreddedRecords().map(\.id) == [due.id])
        let certificates = try storage.certificates(caseID: open).compactMap {
            DestructionCertificate.verify(document: $0, publicKey: publicKey)
        }
        #expect(certificates.count == 1 && certificates.first?.method == "retention_sweep")
        #expect(certificates.first?.records.map(\.recordID) == [due.id.rawValue])
        let again = try storage.sweep(dryRun: false, limit: nil, authority: .daemon)
        #expect(again.totals.disposed == 0 && again.certificates == 0)
    }
}

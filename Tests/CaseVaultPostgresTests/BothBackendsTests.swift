import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Logging
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
}

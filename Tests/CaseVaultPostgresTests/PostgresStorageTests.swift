import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Logging
import PostgresNIO
import Testing

/// The sealing layer's `Vault` on PostgreSQL (`PostgresStorage`): two daemons, each with its own epoch key
/// file, keeping one case on a primary and a synchronous standby, through the same lifecycle rules as the
/// local store.
extension EpochExchangeTests {
    static let header = Array(
        #"{"participants":[{"name":"Ada Participant","contact":"ada@example.edu"},{"name":"Bo Participant"}]}"#.utf8)
    static let finalAgreement = Array(
        #"{"terms":"shared kitchen rota","outcome":"resolved","outcome_confidential":true,"consents":["p1","p2"]}"#.utf8
    )

    static func agreement(_ participant: String) -> [UInt8] {
        Array(
            #"""
            {"participant":"\#(participant)","signed_at":"2026-03-01T14:00:00Z","method":"written","online":false,
             "acknowledgements":{"confidentiality":true,"no_recording":true,"will_not_compel_mediator":true,
             "will_not_discuss_outside":true}}
            """#.utf8)
    }

    static func note(_ text: String) -> [UInt8] { Array(#"{"text":"\#(text)"}"#.utf8) }

    /// A daemon's vault on `clusters`: the vault's root key, the daemon's epoch key file, the standby listed
    /// first (the storage finds the primary).
    func vault(_ daemon: Daemon, _ clusters: PostgresClusters) throws -> Vault<PostgresStorage> {
        let storage = PostgresStorage(
            sealing: try SealingServices(rootKey: Self.vaultRootKey),
            locator: PrimaryLocator(
                location: try clusters.location([clusters.standby, clusters.primary]), password: clusters.password,
                logger: self.logger),
            epochKeys: daemon.exchange.file, eraseWindow: 86_400, maxContentBytes: 1 << 20, logger: self.logger)
        return Vault(storage: storage)
    }

    /// Runs `body` on a thread of its own: the storage blocks its caller, which must not be one of the
    /// cooperative pool's threads that run its queries.
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }

    /// What `body` threw, as a `CaseVaultError`'s code; `nil` when it did not throw.
    func code(_ body: @escaping @Sendable () throws -> Void) async -> CaseVaultError.Code? {
        do {
            try await self.blocking(body)
            return nil
        } catch {
            return (error as? CaseVaultError)?.code
        }
    }

    @Test(
        "two daemons keep one case on PostgreSQL through the sealing layer: what one files the other opens; notes need every agreement; the final agreement deletes the notes' rows in its own transaction and closes the case; the notes are shredded for both; no content reaches the database's files"
    )
    func caseAcrossDaemons() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b) = try await self.twoDaemons(clusters, keys)
        let (vaultA, vaultB) = (try self.vault(a, clusters), try self.vault(b, clusters))
        // Before any epoch is ready, nothing is filed.
        #expect(
            await self.code { _ = try vaultA.openCase(header: Self.header, mediators: [4001], author: "intake") }
                == .keyUnavailable)
        _ = try await a.exchange.turn(from: nil, on: a.connection)
        #expect(try await b.exchange.receive(on: b.connection) == [1])

        let summary = try await self.blocking {
            try vaultA.openCase(header: Self.header, mediators: [4001], author: "intake")
        }
        let caseID = summary.id
        #expect(try await self.blocking { try vaultB.caseHeader(caseID) } == Self.header)
        #expect(try await self.blocking { try vaultB.storage.caseSummary(caseID) } == summary)
        #expect(
            await self.code {
                _ = try vaultB.file(NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("too early")))
            } == .agreementsMissing)
        _ = try await self.blocking {
            try vaultA.file(NewRecord(caseID: caseID, type: .agreementToMediate, content: Self.agreement("p1")))
        }
        #expect(try await self.blocking { try vaultB.storage.caseSummary(caseID) }.state == .agreement)
        #expect(
            await self.code {
                _ = try vaultA.file(NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("still early")))
            } == .agreementsMissing)
        _ = try await self.blocking {
            try vaultB.file(NewRecord(caseID: caseID, type: .agreementToMediate, content: Self.agreement("p2")))
        }
        // Each agreement keeps its participant sealed beside it, so a note's filing opens no agreement.
        let agreements = try await self.blocking { try vaultA.storage.agreements(caseID) }
        #expect(agreements.count == 2 && agreements.allSatisfy { $0.sealedParticipant != nil })

        var notes: [RecordID] = []
        for (number, vault) in [vaultA, vaultB, vaultA].enumerated() {
            notes.append(
                try await self.blocking {
                    try vault.file(
                        NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("said in session \(number)")))
                }.record.id)
        }
        #expect(try await self.blocking { try vaultA.storage.caseSummary(caseID) }.state == .session)
        let second = notes[1]
        #expect(try await self.blocking { try vaultA.get(second) }.content == Self.note("said in session 1"))

        let filed = try await self.blocking {
            try vaultB.file(NewRecord(caseID: caseID, type: .finalAgreement, content: Self.finalAgreement))
        }
        #expect(filed.shredded == notes)
        #expect(try await self.blocking { try vaultA.storage.caseSummary(caseID) }.state == .closed)
        for note in notes {
            #expect(await self.code { _ = try vaultA.get(note) } == .shredded)
            #expect(await self.code { _ = try vaultB.storage.metadata(note) } == .shredded)
        }
        #expect(await self.code { _ = try vaultA.get(RecordID(bytes: Random.bytes(count: 16))) } == .notFound)
        #expect(
            await self.code {
                _ = try vaultA.file(NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("late")))
            } == .caseClosed)
        let final = filed.record.id
        // The shreds' certificate, issued with them: erasure by destroying epoch 1, promised within the window.
        let publicKey = try SealingServices(rootKey: Self.vaultRootKey).certificatePublicKey
        let documents = try await self.blocking { try vaultB.storage.certificates(caseID: caseID) }
        let certificate = try #require(
            documents.count == 1 ? DestructionCertificate.verify(document: documents[0], publicKey: publicKey) : nil)
        #expect(certificate.method == "final_agreement" && certificate.version == 2)
        #expect(Set(certificate.records.map(\.recordID)) == Set(notes.map(\.rawValue)))
        #expect(certificate.records.allSatisfy { $0.type == "session_note" })
        let erasure = try #require(certificate.erasure)
        #expect(erasure.method == "key_destruction" && erasure.epoch == 1 && erasure.completes == nil)
        let issued = try #require(Timestamp.milliseconds(parsing: certificate.issuedAt))
        #expect(erasure.completeBy.flatMap(Timestamp.milliseconds(parsing:)) == issued + 86_400_000)
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 0)
        #expect(try await self.blocking { try vaultA.get(final) }.content == Self.finalAgreement)

        // Through a turn: a filing after it is wrapped under epoch 2; once the live records are rewrapped and
        // both daemons have destroyed epoch 1, what was filed under it opens at either daemon under epoch 2.
        try await self.turn(from: 1, by: b, receivedBy: a)
        let evaluation = try await self.blocking {
            try vaultB.file(
                NewRecord(
                    caseID: caseID, type: .evaluation,
                    content: Array(#"{"satisfaction":5,"would_recommend":true}"#.utf8)))
        }.record.id
        let records = PostgresRecords(logger: self.logger)
        #expect(try await records.row(evaluation, on: a.connection)?.epoch == 2)
        #expect(try await records.row(final, on: a.connection)?.epoch == 1)
        #expect(try await records.rewrap(below: 2, keys: try a.exchange.file.epochKeys(), on: a.connection) == 4)
        #expect(try await a.exchange.destroy(before: 2, on: a.connection) == [1])
        // Not complete while daemon b still holds epoch 1; complete, and certified once, when it does not.
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 0)
        #expect(try await b.exchange.destroy(before: 2, on: b.connection) == [1])
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 1)
        #expect(try await self.blocking { try vaultB.storage.certifyErasures() } == 0)
        let both = try await self.blocking { try vaultA.storage.certificates(caseID: caseID) }
        let completion = try #require(
            both.count == 2 ? DestructionCertificate.verify(document: both[1], publicKey: publicKey) : nil)
        #expect(completion.erasure?.completes == certificate.certificateID && completion.erasure?.epoch == 1)
        #expect(completion.records == certificate.records && completion.certificateID != certificate.certificateID)
        let completed = try #require(completion.erasure?.completedAt.flatMap(Timestamp.milliseconds(parsing:)))
        #expect(completed >= issued)
        #expect(try await records.row(final, on: a.connection)?.epoch == 2)
        for vault in [vaultA, vaultB] {
            #expect(try await self.blocking { try vault.get(final) }.content == Self.finalAgreement)
            #expect(try await self.blocking { try vault.caseHeader(caseID) } == Self.header)
        }

        // Each shred left its row: under the epoch its key was wrapped in, by the final agreement.
        let shreds = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            "SELECT count(*) FROM casevault_shreds WHERE epoch = 1 AND method = 'final_agreement' AND case_id = '\\x\(caseID)'"
        )
        #expect(shreds == "3")
        // Not yet on PostgreSQL, and saying so.
        #expect(await self.code { _ = try vaultA.storage.sealedHolds() } == .storageFailure)

        // No content, name or contact in any file of either cluster: everything was sealed first.
        try await a.connection.query("CHECKPOINT", logger: self.logger)
        var found: [String] = []
        var plain = 0
        for data in [clusters.primaryData, clusters.standbyData] {
            for file in Self.files(under: data) {
                // The search's control: the shreds' method is kept in the clear, and is found.
                if Self.contains(file.bytes, Array("final_agreement".utf8)) { plain += 1 }
                for secret in ["Ada Participant", "ada@example.edu", "kitchen rota", "said in session"]
                where Self.contains(file.bytes, Array(secret.utf8)) {
                    found.append("\(secret) in \(file.path)")
                }
            }
        }
        #expect(plain >= 2)
        #expect(found.isEmpty)
    }

    @Test(
        "a final agreement and notes filed at once from two daemons: the case lock orders them, so no note outlives the final agreement in a closed case"
    )
    func caseLockAcrossDaemons() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b) = try await self.twoDaemons(clusters, keys)
        _ = try await a.exchange.turn(from: nil, on: a.connection)
        #expect(try await b.exchange.receive(on: b.connection) == [1])
        let (vaultA, vaultB) = (try self.vault(a, clusters), try self.vault(b, clusters))

        for round in 0..<8 {
            let caseID = try await self.blocking {
                let summary = try vaultA.openCase(header: Self.header, mediators: [], author: nil)
                for participant in ["p1", "p2"] {
                    _ = try vaultA.file(
                        NewRecord(caseID: summary.id, type: .agreementToMediate, content: Self.agreement(participant)))
                }
                _ = try vaultA.file(NewRecord(caseID: summary.id, type: .sessionNote, content: Self.note("first")))
                return summary.id
            }
            // Daemon b files notes until the case is closed under it; daemon a files the final agreement.
            async let notes: Int? = try? self.blocking {
                var filed = 0
                while true {
                    do {
                        _ = try vaultB.file(NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("more")))
                        filed += 1
                    } catch {
                        guard (error as? CaseVaultError)?.code == .caseClosed else { throw error }
                        return filed
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(20))
            let final = try await self.blocking {
                try vaultA.file(NewRecord(caseID: caseID, type: .finalAgreement, content: Self.finalAgreement))
            }
            let filedNotes = await notes
            #expect(final.shredded.count == (filedNotes ?? -1) + 1, "round \(round)")
            let live = try clusters.psql(
                clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
                "SELECT count(*) FROM casevault_records WHERE type = 'session_note' AND case_id = '\\x\(caseID)'")
            #expect(live == "0", "round \(round): session notes outlived the final agreement")
        }
    }
}

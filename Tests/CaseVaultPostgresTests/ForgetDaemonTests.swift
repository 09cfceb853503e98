import CaseVaultCore
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Logging
import PostgresNIO
import Testing

/// A host gone for good: the operator's word that a daemon's epoch key file is destroyed
/// (`PostgresStorage.forgetDaemon`), the certificates it lets complete, and the daemon coming back after all.
extension EpochExchangeTests {
    @Test(
        "a daemon away and retired holds back the certificate completing an erasure; forgetting it is refused while it holds its name and for a name never seen, changing nothing; forgotten, the certificate is issued naming it as attested; back after all, it destroys every key its file held and rejoins with the current key"
    )
    func forgottenDaemon() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let a = try await self.daemon("vault-a", clusters, keys: keys)
        let b = try await self.daemon("vault-b", clusters, keys: keys)
        try await PostgresSchema.migrate(a.connection, logger: self.logger)
        let (vaultA, vaultB) = (try self.vault(a, clusters), try self.vault(b, clusters))
        let (sa, sb) = (vaultA.storage.schedule(a.exchange), vaultB.storage.schedule(b.exchange))
        try await self.bothHoldEpochOne(a, sa, b, sb)

        // The final agreement shreds the case's note under epoch 1.
        let caseID = try await self.blocking {
            try vaultA.openCase(header: Self.header, mediators: [4001], author: "intake")
        }.id
        for participant in ["p1", "p2"] {
            _ = try await self.blocking {
                try vaultA.file(
                    NewRecord(caseID: caseID, type: .agreementToMediate, content: Self.agreement(participant)))
            }
        }
        _ = try await self.blocking {
            try vaultA.file(NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("said in session")))
        }
        let final = try await self.blocking {
            try vaultA.file(NewRecord(caseID: caseID, type: .finalAgreement, content: Self.finalAgreement))
        }.record.id
        let publicKey = try SealingServices(rootKey: Self.vaultRootKey).certificatePublicKey
        let firsts = try await self.blocking { try vaultA.storage.certificates(caseID: caseID) }
        let first = try #require(
            firsts.count == 1 ? DestructionCertificate.verify(document: firsts[0], publicKey: publicKey) : nil)
        #expect(first.erasure?.epoch == 1)

        // b receives epoch 2 at a's turn and its host goes before it destroys epoch 1 (its own step would do
        // both: here b's exchange publishes and receives alone). a rewraps the live records and destroys
        // epoch 1; b's file still holds it, so the erasure is not certified complete, even once b, away for
        // an eighth of the window, is retired.
        try await self.age(a.connection, hours: 12)
        try await b.exchange.publishPair(for: 2, on: b.connection)
        let turned = try await sa.step(on: a.connection)
        #expect(turned.turnedTo == 2, "\(turned)")
        #expect(try await b.exchange.receive(on: b.connection) == [2])
        #expect(try await sa.step(on: a.connection).destroyed == [1])
        try await self.steady("vault-a", hours: 2, on: a.connection)
        try await self.away("vault-b", hours: 4, on: a.connection)
        #expect(try await sa.step(on: a.connection).retired == ["vault-b"])
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 0)
        #expect(try await self.blocking { try vaultA.get(final) }.content == Self.finalAgreement)

        // Refused while b holds its name (it serves, its steps stalled), and for a name the vault never saw:
        // nothing changes.
        let presence = DaemonPresence.key(try DaemonName("vault-b"))
        try await b.connection.query("SELECT pg_advisory_lock(\(presence))", logger: self.logger)
        let storage = vaultA.storage
        #expect(await self.code { _ = try storage.forgetDaemon(try DaemonName("vault-b")) } == .daemonPresent)
        try await b.connection.query("SELECT pg_advisory_unlock(\(presence))", logger: self.logger)
        #expect(await self.code { _ = try storage.forgetDaemon(try DaemonName("vault-z")) } == .notFound)
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 0)
        let untouched = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            "SELECT count(*) FROM casevault_epoch_holders WHERE daemon = 'vault-b' AND destroyed_at IS NULL")
        #expect(untouched == "2")

        // Forgotten: its holding of epoch 1 counts as destroyed, on the operator's word, which the second
        // certificate names.
        #expect(try await self.blocking { try storage.forgetDaemon(try DaemonName("vault-b")) } == [1, 2])
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 1)
        let both = try await self.blocking { try vaultA.storage.certificates(caseID: caseID) }
        let second = try #require(
            both.count == 2 ? DestructionCertificate.verify(document: both[1], publicKey: publicKey) : nil)
        #expect(second.erasure?.completes == first.certificateID && second.erasure?.attested == ["vault-b"])
        #expect(first.erasure?.attested == nil)

        // b's host was not gone after all: at its next step it destroys every key its file holds before
        // anything else, the current epoch's too, then rejoins as a daemon without the current key does, and
        // holds epoch 2 again by a copy sealed to its new pair: the database says so.
        #expect(try self.slotEpochs(b) == [1, 2])
        let back = try await sb.step(on: b.connection)
        #expect(back.rejoinedForgotten && back.destroyed == [1, 2] && back.publishedFor == 2, "\(back)")
        #expect(try b.exchange.file.keyEpochs().isEmpty && self.slotEpochs(b) == [2], "only its pair for epoch 2")
        #expect(try await sa.step(on: a.connection).sharedWith == ["vault-b"])
        #expect(try await sb.step(on: b.connection).received == [2])
        #expect(try self.slotEpochs(b) == [2] && b.exchange.file.keyEpochs() == [2])
        #expect(try await self.blocking { try vaultB.get(final) }.content == Self.finalAgreement)
        let rows = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            """
            SELECT string_agg(epoch || ':' || (destroyed_at IS NULL) || ':' || attested, ',' ORDER BY epoch)
            FROM casevault_epoch_holders WHERE daemon = 'vault-b'
            """)
        #expect(rows == "1:false:true,2:true:false", "\(rows)")
        let mark = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            "SELECT count(*) FROM casevault_daemons WHERE forgotten_at IS NOT NULL")
        #expect(mark == "0")
        let again = try await sb.step(on: b.connection)
        #expect(!again.rejoinedForgotten && again.destroyed.isEmpty, "\(again)")
    }
}

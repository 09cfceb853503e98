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
        // Held to the end: the daemons' epoch key files are in it.
        let keys = try KeyFolder()
        defer { withExtendedLifetime(keys) {} }
        let (a, b, vaultA, vaultB, sa, sb) = try await self.scheduledDaemons(clusters, keys)
        try await self.bothHoldEpochOne(a, sa, b, sb)

        // The final agreement shreds the case's note under epoch 1.
        let (caseID, final) = try await self.caseWithShreddedNote(vaultA)
        let publicKey = try SealingServices(rootKey: Self.vaultRootKey).certificatePublicKey
        let firsts = try await self.blocking { try vaultA.storage.certificates(caseID: caseID) }
        let first = try #require(
            firsts.count == 1 ? DestructionCertificate.verify(document: firsts[0], publicKey: publicKey) : nil)
        #expect(first.erasure?.epoch == 1)

        // b receives epoch 2 at a's turn, publishes a pair for epoch 3, and its host goes before it destroys
        // epoch 1 (its own step would do both: here b's exchange publishes and receives alone). a turns to 3,
        // a copy waiting for b; once b is away for an eighth of the window a retires it (the copy leaves b a
        // retired holding of 3: b's pair opens its residue), rewraps the live records under 3 and destroys
        // 1 (once b held 2) and 2. b's file still holds 1, so the erasure is not certified complete.
        try await self.turnToTwo(a, sa, b)
        #expect(try await b.exchange.receive(on: b.connection) == [2])
        try await self.age(a.connection, hours: 12)
        try await b.exchange.publishPair(for: 3, on: b.connection)
        let oldPair = try #require(try b.exchange.file.pair(epoch: 3)).publicKey
        let third = try await sa.step(on: a.connection)
        #expect(third.turnedTo == 3 && third.destroyed == [1], "\(third)")
        let storage = vaultA.storage
        // Refused while b has stepped within an eighth of the window, though its presence lock is not held:
        // it may be between two connections.
        #expect(await self.code { _ = try storage.forgetDaemon(try DaemonName("vault-b")) } == .daemonPresent)
        try await self.steady("vault-a", hours: 2, on: a.connection)
        try await self.away("vault-b", hours: 4, on: a.connection)
        let retired = try await sa.step(on: a.connection)
        #expect(retired.retired == ["vault-b"] && retired.destroyed == [2], "\(retired)")
        #expect(a.exchange.file.keyEpochs() == [3])
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 0)
        #expect(try await self.blocking { try vaultA.get(final) }.content == Self.finalAgreement)

        // Refused while b holds its name (it serves, its steps stalled); while b alone holds an epoch live
        // records are wrapped under (a's holding of 3 made to look destroyed); and for a name the vault never
        // saw. Nothing changes.
        let presence = DaemonPresence.key(try DaemonName("vault-b"))
        try await b.connection.query("SELECT pg_advisory_lock(\(presence))", logger: self.logger)
        #expect(await self.code { _ = try storage.forgetDaemon(try DaemonName("vault-b")) } == .daemonPresent)
        try await b.connection.query("SELECT pg_advisory_unlock(\(presence))", logger: self.logger)
        try await a.connection.query(
            "UPDATE casevault_epoch_holders SET destroyed_at = now() WHERE daemon = 'vault-a' AND epoch = 3",
            logger: self.logger)
        #expect(await self.code { _ = try storage.forgetDaemon(try DaemonName("vault-b")) } == .soleKeyHolder)
        try await a.connection.query(
            "UPDATE casevault_epoch_holders SET destroyed_at = NULL WHERE daemon = 'vault-a' AND epoch = 3",
            logger: self.logger)
        #expect(await self.code { _ = try storage.forgetDaemon(try DaemonName("vault-z")) } == .notFound)
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 0)
        #expect(try self.holdings(clusters, "vault-b") == "1:t:f,2:t:f,3:t:f")

        // Forgotten: its holdings of 1, 2 and 3 count as destroyed, on the operator's word, which the second
        // certificate names (version 3).
        #expect(try await self.blocking { try storage.forgetDaemon(try DaemonName("vault-b")) } == [1, 2, 3])
        #expect(try self.holdings(clusters, "vault-b") == "1:f:t,2:f:t,3:f:t")
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 1)
        let both = try await self.blocking { try vaultA.storage.certificates(caseID: caseID) }
        let second = try #require(
            both.count == 2 ? DestructionCertificate.verify(document: both[1], publicKey: publicKey) : nil)
        #expect(second.erasure?.completes == first.certificateID && second.erasure?.attested == ["vault-b"])
        #expect(second.version == 3 && first.version == 2 && first.erasure?.attested == nil)

        // A mark that is not the vault's (written without the root key) destroys nothing: b's step fails.
        let flip = """
            UPDATE casevault_daemons SET forgotten_tag = set_byte(forgotten_tag, 0, get_byte(forgotten_tag, 0) # 1)
            WHERE daemon = 'vault-b'
            """
        try await a.connection.query(PostgresQuery(unsafeSQL: flip), logger: self.logger)
        await #expect(throws: CaseVaultError.self) { _ = try await sb.step(on: b.connection) }
        #expect(b.exchange.file.keyEpochs() == [1, 2] && b.exchange.file.pairEpochs() == [3])
        try await a.connection.query(PostgresQuery(unsafeSQL: flip), logger: self.logger)

        // b's host was not gone after all: at its next step it destroys every key and pair its file holds up
        // to epoch 3 before anything else, then rejoins as a daemon without the current key does, with a
        // new pair, and is sealed epoch 3.
        let back = try await sb.step(on: b.connection)
        #expect(back.rejoinedForgotten && back.destroyed == [1, 2] && back.publishedFor == 3, "\(back)")
        let newPair = try #require(try b.exchange.file.pair(epoch: 3)).publicKey
        #expect(b.exchange.file.keyEpochs().isEmpty && newPair != oldPair, "a new pair for epoch 3 alone")
        #expect(try await sa.step(on: a.connection).sharedWith == ["vault-b"])
        #expect(try await sb.step(on: b.connection).received == [3])
        #expect(b.exchange.file.keyEpochs() == [3] && b.exchange.file.pairEpochs().isEmpty)
        #expect(try await self.blocking { try vaultB.get(final) }.content == Self.finalAgreement)
        #expect(try self.holdings(clusters, "vault-b") == "1:f:t,2:f:t,3:t:f")
        let mark = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            "SELECT count(*) FROM casevault_daemons WHERE forgotten_at IS NOT NULL OR forgotten_tag IS NOT NULL")
        #expect(mark == "0")
        let again = try await sb.step(on: b.connection)
        #expect(!again.rejoinedForgotten && again.destroyed.isEmpty, "\(again)")
    }

    @Test(
        "a daemon forgotten while it holds the current epoch's key destroys that key too when it comes back, and is sealed it again by a live daemon"
    )
    func forgottenHoldingTheCurrentEpoch() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        // Held to the end: the daemons' epoch key files are in it.
        let keys = try KeyFolder()
        defer { withExtendedLifetime(keys) {} }
        let (a, b, vaultA, _, sa, sb) = try await self.scheduledDaemons(clusters, keys)
        try await self.bothHoldEpochOne(a, sa, b, sb)
        try await self.turnToTwo(a, sa, b)
        #expect(try await b.exchange.receive(on: b.connection) == [2])
        try await self.steady("vault-a", hours: 2, on: a.connection)
        try await self.away("vault-b", hours: 4, on: a.connection)
        let retired = try await sa.step(on: a.connection)
        #expect(retired.retired == ["vault-b"] && retired.destroyed == [1], "\(retired)")
        let storage = vaultA.storage
        #expect(try await self.blocking { try storage.forgetDaemon(try DaemonName("vault-b")) } == [1, 2])

        // Back, b's file holds epoch 2, the current one: it destroys it with 1, and waits for it like a new
        // daemon, with a new pair.
        let back = try await sb.step(on: b.connection)
        #expect(back.rejoinedForgotten && back.destroyed == [1, 2] && back.publishedFor == 2, "\(back)")
        #expect(try b.exchange.file.keyEpochs().isEmpty && self.slotEpochs(b) == [2], "its new pair for epoch 2 alone")
        #expect(try await sa.step(on: a.connection).sharedWith == ["vault-b"])
        #expect(try await sb.step(on: b.connection).received == [2])
        #expect(try self.holdings(clusters, "vault-b") == "1:f:t,2:t:f")
    }

    @Test(
        "forgetting a daemon away but not yet retired marks the epoch of the copy waiting for it destroyed and attested, deletes the copy and its pairs, and makes that epoch ready for wraps"
    )
    func forgottenBeforeRetired() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        // Held to the end: the daemons' epoch key files are in it.
        let keys = try KeyFolder()
        defer { withExtendedLifetime(keys) {} }
        let (a, b, vaultA, _, sa, sb) = try await self.scheduledDaemons(clusters, keys)
        try await self.bothHoldEpochOne(a, sa, b, sb)
        try await self.turnToTwo(a, sa, b)
        try await b.exchange.publishPair(for: 3, on: b.connection)
        // b is away, and a has not stepped steadily long enough to retire it: wraps stay on epoch 1.
        try await self.away("vault-b", hours: 4, on: a.connection)
        #expect(try await sa.step(on: a.connection).retired.isEmpty)
        #expect(try await EpochExchange.wrapEpoch(a.connection, logger: self.logger) == 1)
        let storage = vaultA.storage
        #expect(try await self.blocking { try storage.forgetDaemon(try DaemonName("vault-b")) } == [1, 2])
        #expect(try self.holdings(clusters, "vault-b") == "1:f:t,2:f:t")
        let left = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            """
            SELECT (SELECT count(*) FROM casevault_epoch_copies WHERE daemon = 'vault-b') || ','
                || (SELECT count(*) FROM casevault_epoch_pairs WHERE daemon = 'vault-b')
            """)
        #expect(left == "0,0")
        #expect(try await EpochExchange.wrapEpoch(a.connection, logger: self.logger) == 2)
        #expect(try await sa.step(on: a.connection).destroyed == [1])
    }

    /// Daemons vault-a and vault-b on `clusters`, the schema migrated, each with its vault and its real
    /// schedule (rewraps and all), before any step.
    func scheduledDaemons(_ clusters: PostgresClusters, _ keys: KeyFolder) async throws -> (
        a: Daemon, b: Daemon, vaultA: Vault<PostgresStorage>, vaultB: Vault<PostgresStorage>, sa: EpochSchedule,
        sb: EpochSchedule
    ) {
        let a = try await self.daemon("vault-a", clusters, keys: keys)
        let b = try await self.daemon("vault-b", clusters, keys: keys)
        try await PostgresSchema.migrate(a.connection, logger: self.logger)
        let (vaultA, vaultB) = (try self.vault(a, clusters), try self.vault(b, clusters))
        return (a, b, vaultA, vaultB, vaultA.storage.schedule(a.exchange), vaultB.storage.schedule(b.exchange))
    }

    /// A case opened on `vault` whose final agreement, filed after both agreements and a note, shreds the
    /// note under the current epoch: four live records, the header among them. The case and the final
    /// agreement.
    func caseWithShreddedNote(_ vault: Vault<PostgresStorage>) async throws -> (caseID: CaseID, final: RecordID) {
        let caseID = try await self.blocking {
            try vault.openCase(header: Self.header, mediators: [4001], author: "intake")
        }.id
        for participant in ["p1", "p2"] {
            _ = try await self.blocking {
                try vault.file(
                    NewRecord(caseID: caseID, type: .agreementToMediate, content: Self.agreement(participant)))
            }
        }
        _ = try await self.blocking {
            try vault.file(NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("said in session")))
        }
        let final = try await self.blocking {
            try vault.file(NewRecord(caseID: caseID, type: .finalAgreement, content: Self.finalAgreement))
        }.record.id
        return (caseID, final)
    }

    /// With both daemons on epoch 1: the epoch aged past its turn, b's pair for 2 published by its exchange
    /// alone (b takes no step), and a's step turns to 2, a copy of its key waiting for b.
    func turnToTwo(_ a: Daemon, _ sa: EpochSchedule, _ b: Daemon) async throws {
        try await self.age(a.connection, hours: 12)
        try await b.exchange.publishPair(for: 2, on: b.connection)
        #expect(try await sa.step(on: a.connection).turnedTo == 2)
    }

    /// `daemon`'s rows of `casevault_epoch_holders`: epoch, whether held (not destroyed), whether attested.
    func holdings(_ clusters: PostgresClusters, _ daemon: String) throws -> String {
        try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            """
            SELECT string_agg(epoch || ':' || (CASE WHEN destroyed_at IS NULL THEN 't' ELSE 'f' END) || ':'
                || (CASE WHEN attested THEN 't' ELSE 'f' END), ',' ORDER BY epoch)
            FROM casevault_epoch_holders WHERE daemon = '\(daemon)'
            """)
    }
}

import CaseVaultCore
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Logging
import PostgresNIO
import Testing

/// A daemon's hold on its name in the database (`DaemonPresence`), against the real clusters.
extension EpochExchangeTests {
    @Test(
        "a daemon whose connection closed while the server was still busy with it ends its own stale session and takes its name again at once; another daemon of that name cannot end it, and finds the name taken"
    )
    func presenceEndsItsOwnStaleSession() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let name = try DaemonName("vault-a")
        func presence() throws -> DaemonPresence {
            DaemonPresence(
                daemon: name,
                locator: PrimaryLocator(
                    location: try clusters.location([clusters.primary]), password: clusters.password,
                    logger: self.logger),
                logger: self.logger)
        }
        // Holding its name, a daemon reads the vault's mark of a move: the schema is there first, as a
        // daemon's start migrates it.
        let setup = try await PrimaryLocator(
            location: try clusters.location([clusters.primary]), password: clusters.password, logger: self.logger
        ).connect().connection
        _ = try await PostgresSchema.migrate(setup, logger: self.logger)
        try await setup.close()
        let (own, twin) = (try presence(), try presence())
        let held = try #require(try await own.hold().connection)
        #expect(try await twin.hold().isNameTaken, "the name is held")

        // The server is busy with the holding session when its connection closes here: the session, and the
        // lock, outlive the connection until the server notices.
        let busy = Task { try? await held.query("SELECT pg_sleep(30)", logger: self.logger) }
        try await Task.sleep(for: .milliseconds(300))
        await own.release()
        #expect(try await twin.hold().isNameTaken, "another daemon of this name cannot end the stale session")
        let started = ContinuousClock.now
        let again = try #require(try await own.hold().connection, "the daemon took its own name back")
        #expect(started.duration(to: .now) < .seconds(5), "at once, not once the server noticed by itself")
        #expect(!again.isClosed)
        #expect(try await twin.hold().isNameTaken)
        busy.cancel()
        await own.release()
    }

    @Test(
        "a daemon serves only holding the vault's serving lock shared beside its name: while a move out of the database holds it alone, a daemon of a name the database has never seen takes no name and does not start (exit 3, saying why); once the move lets go it serves, and then no move takes the lock until it stops"
    )
    func servingLockKeepsDaemonsAndMovesApart() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let locator = PrimaryLocator(
            location: try clusters.location([clusters.primary]), password: clusters.password, logger: self.logger)
        // The test's session takes the lock alone, as a move does (`PostgresStorage.writeMigration`).
        let move = try await locator.connect().connection
        defer { Task { try? await move.close() } }
        func takeAlone() async throws -> Bool {
            for try await taken in try await move.query(
                "SELECT pg_try_advisory_lock(\(DaemonPresence.servingLock))", logger: self.logger
            ).decode(Bool.self) {
                return taken
            }
            return false
        }
        #expect(try await takeAlone())
        let newcomer = DaemonPresence(daemon: try DaemonName("newcomer"), locator: locator, logger: self.logger)
        let refused = try await newcomer.hold()
        guard case .refused(let moving) = refused, moving.message == DaemonPresence.moving.message else {
            Issue.record("a daemon took its place while a move held the vault: \(refused)")
            return
        }
        let root = try Self.databaseDaemonRoot(clusters, name: "newcomer")
        let early = try DatabaseDaemon(root: root)
        #expect(await early.exitsByItself(within: 90), "a daemon served while a move held the vault")
        #expect(
            early.process.terminationStatus == 3 && early.notable.contains("a move of the vault out of the database"),
            "\(early.notable)")

        try await move.perform("SELECT pg_advisory_unlock(\(DaemonPresence.servingLock))", logger: self.logger)
        let daemon = try DatabaseDaemon(root: root)
        #expect(await daemon.waitUntilServing(), "\(daemon.notable)")
        #expect(try await !takeAlone(), "a move took the vault while a daemon served it")
        // A filing that comes after a move's mark (one that waited behind the move) is refused: 503
        // vault-moved, nothing filed; with the mark lifted, it files.
        try await PostgresSchema.markMoved(id: "test", at: 0, on: move, logger: self.logger)
        let opening: [String: Any] = ["participants": [["name": "Ada"], ["name": "Bo"]]]
        let refusedFiling = try await daemon.client.request(.POST, "/v1/cases", json: opening)
        #expect(
            refusedFiling.status == 503
                && String(decoding: refusedFiling.body, as: UTF8.self).contains("urn:casevault:problem:vault-moved"),
            "\(refusedFiling.status) \(String(decoding: refusedFiling.body, as: UTF8.self))")
        #expect(try await PostgresSchema.cancelMove(on: move, logger: self.logger))
        #expect(try await daemon.client.request(.POST, "/v1/cases", json: opening).status == 201)
        #expect(daemon.stop() == 0)
        #expect(try await takeAlone(), "the stopped daemon let the lock go")

        // The move's side: a daemon whose name the database does not know yet (its presence held, not yet
        // registered) keeps migrate off, at the serving lock.
        try await move.perform("SELECT pg_advisory_unlock(\(DaemonPresence.servingLock))", logger: self.logger)
        let stranger = DaemonPresence(daemon: try DaemonName("stranger"), locator: locator, logger: self.logger)
        #expect(try await stranger.hold().connection != nil)
        let ctl = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("casevaultctl").path
        let (status, printed) = try PostgresClusters.spawn(
            [ctl, "migrate", "--cancel", "--config", root + "/casevault.toml"],
            environment: ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }, in: root)
        #expect(status == 1 && printed.contains("a daemon serves the vault"), "\(printed)")
        await stranger.release()
        // Once a move has marked the vault, a daemon that takes its place again (after a failover, say) is
        // told so, and keeps neither lock.
        try await PostgresSchema.markMoved(id: "test", at: 0, on: move, logger: self.logger)
        let marked = try await stranger.hold()
        guard case .refused(let error) = marked else {
            Issue.record("a daemon took its place in a moved vault: \(marked)")
            return
        }
        #expect(error.code == .vaultMoved)
        #expect(try await takeAlone(), "the refused daemon kept the serving lock")
    }
}

extension DaemonPresence.Hold {
    /// Refused because another daemon of this name holds it.
    var isNameTaken: Bool {
        if case .refused(let error) = self { error.message.contains("already serves this vault") } else { false }
    }
}

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
        let (own, twin) = (try presence(), try presence())
        let held = try #require(try await own.hold())
        #expect(try await twin.hold() == nil, "the name is held")

        // The server is busy with the holding session when its connection closes here: the session, and the
        // lock, outlive the connection until the server notices.
        let busy = Task { try? await held.query("SELECT pg_sleep(30)", logger: self.logger) }
        try await Task.sleep(for: .milliseconds(300))
        await own.release()
        #expect(try await twin.hold() == nil, "another daemon of this name cannot end the stale session")
        let started = ContinuousClock.now
        let again = try #require(try await own.hold(), "the daemon took its own name back")
        #expect(started.duration(to: .now) < .seconds(5), "at once, not once the server noticed by itself")
        #expect(!again.isClosed)
        #expect(try await twin.hold() == nil)
        busy.cancel()
        await own.release()
    }
}

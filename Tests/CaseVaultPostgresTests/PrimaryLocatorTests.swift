import CaseVaultCore
import CaseVaultPostgres
import Foundation
import Logging
import PostgresNIO
import Testing

/// The vault's way to its database, against real PostgreSQL 15 clusters that each test starts: a primary
/// and a synchronous streaming standby (`PostgresClusters`).
@Suite("Finding the writable primary and checking the database", .serialized)
struct PrimaryLocatorTests {
    let logger = Logger(label: "casevault.test.postgres")

    @Test("the locator finds the primary with the standby listed first, and doctor passes a synchronous standby")
    func findsThePrimary() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let locator = PrimaryLocator(
            location: try clusters.location([clusters.standby, clusters.primary]), password: clusters.password,
            logger: self.logger)
        let (connection, server) = try await locator.connect()
        defer { connection.closeAtExit() }
        #expect(server == clusters.primary)
        let checks = try await DatabaseChecks.run(on: connection, logger: self.logger)
        try await connection.close()
        #expect(checks.map(\.status) == [.pass, .pass, .pass], "\(checks)")
        #expect(checks[2].detail.contains("\(PostgresClusters.standbyName) streaming sync"), "\(checks[2].detail)")

        let survey = await locator.survey()
        #expect(survey.map(\.outcome) == [.standby, .primary])

        // The same server through a connection string, as the configuration gives it.
        let fromString = PrimaryLocator(
            location: try PostgresLocation(
                parsing:
                    "postgresql://\(PostgresClusters.user)@/\(PostgresClusters.database)?host=\(clusters.primarySockets)&port=\(clusters.primaryPort)"
            ),
            password: clusters.password, logger: self.logger)
        let (second, secondServer) = try await fromString.connect()
        defer { second.closeAtExit() }
        #expect(secondServer == clusters.primary)
        try await second.close()
    }

    @Test(
        "a local socket held by a process of an untrusted user is sent nothing: requirepeer names another user, or the socket's directory is root's and open to all (as /tmp) with no requirepeer; requirepeer naming the server's user connects"
    )
    func untrustedSocketHolder() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let serverUser = geteuid() == 0 ? "nobody" : String(cString: getpwuid(geteuid()).pointee.pw_name)
        let otherUser = geteuid() == 0 ? "root" : "nobody"
        func locator(requirePeer: String?) throws -> PrimaryLocator {
            var location = try clusters.location([clusters.standby, clusters.primary])
            location.requirePeer = requirePeer
            return PrimaryLocator(location: location, password: clusters.password, logger: self.logger)
        }
        let wrongPeer = try locator(requirePeer: otherUser)
        let error = await #expect(throws: CaseVaultError.self) {
            // Closed if it is made after all (PostgresNIO traps on a connection released open).
            try await wrongPeer.connect().connection.close()
        }
        #expect(
            error?.message.contains("2 held by a process of an untrusted user") == true,
            "\(String(describing: error?.message))")
        #expect(await wrongPeer.survey().map(\.outcome) == [.untrustedPeer, .untrustedPeer])

        let (connection, server) = try await locator(requirePeer: serverUser).connect()
        defer { connection.closeAtExit() }
        #expect(server == clusters.primary)
        try await connection.close()

        // A directory anyone may write to, owned by root: whoever binds the socket there first is no one the
        // directory vouches for. The server's socket stays as it was.
        guard geteuid() == 0 else { return }
        #expect(chown(clusters.primarySockets, 0, 0) == 0 && chmod(clusters.primarySockets, 0o1777) == 0)
        let untrusted = try locator(requirePeer: nil)
        #expect(await untrusted.survey().map(\.outcome) == [.standby, .untrustedPeer])
        let (named, namedServer) = try await locator(requirePeer: serverUser).connect()
        defer { named.closeAtExit() }
        #expect(namedServer == clusters.primary)
        try await named.close()
    }

    @Test("a wrong password is refused by every server, and the error says so without the password")
    func wrongPassword() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let wrong = "not-" + clusters.password
        let locator = PrimaryLocator(
            location: try clusters.location([clusters.standby, clusters.primary]), password: wrong, logger: self.logger)
        let error = await #expect(throws: CaseVaultError.self) { try await locator.connect() }
        #expect(error?.code == .storageFailure)
        #expect(error?.message.contains("2 refused the credentials") == true, "\(String(describing: error?.message))")
        #expect(error?.message.contains(wrong) == false)
        #expect(error?.message.contains(clusters.password) == false)
    }

    @Test("after the primary dies and the standby is promoted, the same list finds it, with every committed write")
    func failover() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let locator = PrimaryLocator(
            location: try clusters.location([clusters.primary, clusters.standby]), password: clusters.password,
            logger: self.logger)
        let (connection, server) = try await locator.connect()
        defer { connection.closeAtExit() }
        #expect(server == clusters.primary)
        try await connection.query("CREATE TABLE acknowledged (n integer PRIMARY KEY)", logger: self.logger)
        // Each commit returns once the synchronous standby has it.
        for n in 1...100 {
            try await connection.query("INSERT INTO acknowledged (n) VALUES (\(n))", logger: self.logger)
        }
        try clusters.kill(primary: true)
        try? await connection.close()

        // Between the crash and the promotion no server takes writes: the locator says which way each failed.
        let during = await #expect(throws: CaseVaultError.self) { try await locator.connect() }
        #expect(
            during?.message.contains("1 in recovery (a standby), 1 unreachable") == true,
            "\(String(describing: during?.message))")

        try clusters.promoteStandby()
        let (promoted, promotedServer) = try await locator.connect()
        defer { promoted.closeAtExit() }
        #expect(promotedServer == clusters.standby)
        var count = 0
        for try await n in try await promoted.query("SELECT count(*) FROM acknowledged", logger: self.logger).decode(
            Int.self)
        {
            count = n
        }
        #expect(count == 100)
        try await promoted.query("INSERT INTO acknowledged (n) VALUES (101)", logger: self.logger)
        let checks = try await DatabaseChecks.run(on: promoted, logger: self.logger)
        try await promoted.close()
        #expect(checks.map(\.status) == [.pass, .warn, .warn], "\(checks)")
    }
}

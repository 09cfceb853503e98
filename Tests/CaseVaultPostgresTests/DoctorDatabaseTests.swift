import CaseVaultCore
import CaseVaultPostgres
import Foundation
import Logging
import PostgresNIO
import Testing

/// `casevaultctl doctor` with `[storage] backend = "postgresql"`: the real binary, reading a configuration
/// file and a password file as the daemon would, against the real clusters.
@Suite("casevaultctl doctor checks the database", .serialized)
struct DoctorDatabaseTests {
    let logger = Logger(label: "casevault.test.doctor")

    /// The `[store]` and `[server]` tables of a daemon whose files are under `root`.
    static func storeAndServer(_ root: String) -> String {
        """
        [store]
        data_directory = "\(root)/data"
        root_key_file = "\(root)/keys/root.key"
        max_content_bytes = 1048576
        [server]
        socket_path = "\(root)/run/casevault.sock"
        max_body_bytes = 2097152
        """
    }

    /// A configuration under `clusters.root` whose database is the clusters at `servers` (socket directory
    /// and port), tried in that order, the password in a file of mode `mode`.
    static func configure(
        _ clusters: PostgresClusters, servers: [(sockets: String, port: Int)], password: String,
        mode: mode_t = 0o600, window: String = "24 hours"
    ) throws -> String {
        let hosts = servers.map(\.sockets).joined(separator: ",")
        let ports = servers.map { "\($0.port)" }.joined(separator: ",")
        let root = clusters.root + "/doctor-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root + "/data", withIntermediateDirectories: true)
        chmod(root + "/data", 0o700)
        let passwordFile = root + "/db.password"
        #expect(FileManager.default.createFile(atPath: passwordFile, contents: Data((password + "\n").utf8)))
        chmod(passwordFile, mode)
        let text = """
            \(DoctorDatabaseTests.storeAndServer(root))
            [storage]
            backend = "postgresql"
            connection = "postgresql://\(PostgresClusters.user)@/\(PostgresClusters.database)?host=\(hosts)&port=\(ports)&connect_timeout=2"
            password_file = "\(passwordFile)"
            erase_window = "\(window)"

            """
        try text.write(toFile: root + "/casevault.toml", atomically: true, encoding: .utf8)
        return root
    }

    /// Runs `casevaultctl doctor --json` and returns its exit status, each check's status and detail by
    /// name, and everything it printed.
    static func doctor(_ root: String) throws -> (status: Int32, checks: [String: (String, String)], output: String) {
        let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("casevaultctl").path
        let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        let (status, output) = try PostgresClusters.spawn(
            [binary, "doctor", "--json", "--config", root + "/casevault.toml"], environment: environment, in: root)
        let document = (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any] ?? [:]
        var checks: [String: (String, String)] = [:]
        for check in document["checks"] as? [[String: String]] ?? [] {
            checks[check["name"] ?? ""] = (check["status"] ?? "", check["detail"] ?? "")
        }
        return (status, checks, output)
    }

    @Test(
        "a ready database passes: one primary, PostgreSQL 15, a synchronous standby streaming, the schema, the window")
    func readyDatabase() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        // The standby first: doctor finds the primary second in the list, as a daemon would after a failover.
        let root = try Self.configure(
            clusters,
            servers: [
                (clusters.standbySockets, PostgresClusters.standbyPort),
                (clusters.primarySockets, clusters.primaryPort),
            ], password: clusters.password)

        let fresh = try Self.doctor(root)
        #expect(fresh.checks["database password"]?.0 == "pass", "\(fresh.output)")
        #expect(fresh.checks["database servers"]?.0 == "pass", "\(fresh.output)")
        #expect(
            fresh.checks["database servers"]?.1
                == "\(clusters.standby) standby, \(clusters.primary) primary", "\(fresh.output)")
        #expect(fresh.checks["database version"]?.0 == "pass")
        #expect(fresh.checks["synchronous commit"]?.0 == "pass")
        #expect(fresh.checks["replication"]?.1.contains("\(PostgresClusters.standbyName) streaming sync") == true)
        #expect(fresh.checks["database schema"]?.0 == "warn", "no daemon has migrated it yet")
        #expect(fresh.checks["erase window"]?.1.contains("24 h") == true)
        #expect(fresh.checks["erase epochs"] == nil, "no epochs table to read before the schema")
        #expect(!fresh.output.contains(clusters.password))

        let locator = PrimaryLocator(
            location: try clusters.location([clusters.primary]), password: clusters.password, logger: self.logger)
        let (connection, _) = try await locator.connect()
        defer { connection.closeAtExit() }
        try await PostgresSchema.migrate(connection, logger: self.logger)
        try await connection.close()
        let migrated = try Self.doctor(root)
        #expect(migrated.checks["database schema"]?.0 == "pass", "\(migrated.output)")
        #expect(migrated.checks["erase epochs"]?.0 == "pass", "\(migrated.output)")
        // The server's own max_connections (initdb's choice for this host), set against the one daemon counted
        // before any has stepped; the verdict's arithmetic is `connections` in PostgresLocationTests.
        #expect(
            migrated.checks["connections"]?.1.contains("1 daemon(s) open up to about 51") == true, "\(migrated.output)")
        // Exit 0 unless this host fails a check of its own (swap, core dumps), which the output then names.
        let failures = migrated.checks.filter { $0.value.0 == "fail" }.keys
        #expect(migrated.status == (failures.isEmpty ? 0 : 1), "\(migrated.output)")
        #expect(failures.allSatisfy { ["swap", "core dumps"].contains($0) }, "\(migrated.output)")
    }

    @Test("a standby alone, a refused password and a password file others can read each fail, naming why")
    func unreadyDatabase() throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let standby = try Self.doctor(
            try Self.configure(
                clusters, servers: [(clusters.standbySockets, PostgresClusters.standbyPort)],
                password: clusters.password))
        #expect(standby.status == 1)
        #expect(standby.checks["database servers"]?.0 == "fail", "\(standby.output)")
        #expect(standby.checks["database servers"]?.1.contains("no server takes writes") == true)
        #expect(standby.checks["database version"] == nil, "nothing is asked of a server that is not the primary")

        let wrong = "not-" + clusters.password
        let refused = try Self.doctor(
            try Self.configure(
                clusters, servers: [(clusters.primarySockets, clusters.primaryPort)], password: wrong))
        #expect(refused.status == 1)
        #expect(refused.checks["database servers"]?.1.contains("refused the credentials") == true, "\(refused.output)")
        #expect(!refused.output.contains(wrong))

        let exposed = try Self.doctor(
            try Self.configure(
                clusters, servers: [(clusters.primarySockets, clusters.primaryPort)],
                password: clusters.password, mode: 0o644))
        #expect(exposed.status == 1)
        #expect(exposed.checks["database password"]?.0 == "fail", "\(exposed.output)")
        #expect(exposed.checks["database password"]?.1.contains("chmod 0600") == true)
        #expect(exposed.checks["database servers"] == nil, "no connection is tried without a password it may use")
        #expect(!exposed.output.contains(clusters.password))
    }
}

import CaseVaultCore
import CaseVaultPostgres
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("The PostgreSQL connection string and password")
struct PostgresLocationTests {
    @Test("a list of hosts, each with its port or the default, with TLS verified by default")
    func hosts() throws {
        let location = try PostgresLocation(
            parsing: "postgresql://casevault@db1.example.org:5433,db2.example.org,[fd00::2]:6432/vault")
        #expect(
            location.servers == [
                .tcp(host: "db1.example.org", port: 5433), .tcp(host: "db2.example.org", port: 5432),
                .tcp(host: "fd00::2", port: 6432),
            ])
        #expect(location.user == "casevault")
        #expect(location.database == "vault")
        #expect(location.tls == .verifyFull)
        #expect(location.rootCertificatePath == nil)
    }

    @Test("local sockets by directory, with the port, TLS off, a CA file and a timeout given as parameters")
    func parameters() throws {
        let location = try PostgresLocation(
            parsing:
                "postgres://vault%20owner@/case%2Dvault?host=/run/postgresql,/var/run/pg&port=5434&sslmode=disable&connect_timeout=3&target_session_attrs=read-write"
        )
        #expect(
            location.servers == [
                .socket(directory: "/run/postgresql", port: 5434), .socket(directory: "/var/run/pg", port: 5434),
            ])
        #expect(location.user == "vault owner")
        #expect(location.database == "case-vault")
        #expect(location.tls == .disable)
        #expect(location.connectTimeoutSeconds == 3)
        #expect(location.requirePeer == nil)
        let peer = try PostgresLocation(parsing: "postgresql://u@/v?host=/tmp&requirepeer=postgres")
        #expect(peer.requirePeer == "postgres")
        // As libpq takes it, a port for each socket directory.
        let eachItsPort = try PostgresLocation(parsing: "postgresql://u@/v?host=/run/a,/run/b&port=5433,5434")
        #expect(
            eachItsPort.servers == [.socket(directory: "/run/a", port: 5433), .socket(directory: "/run/b", port: 5434)])
        let withCA = try PostgresLocation(parsing: "postgresql://u@db:5432/v?sslrootcert=/etc/casevault/pg-ca.pem")
        #expect(withCA.rootCertificatePath == "/etc/casevault/pg-ca.pem")
    }

    @Test(
        "every malformed string is refused with a stable message that never repeats a password",
        arguments: [
            ("mysql://u@db/v", "must begin with postgresql://"),
            ("postgresql://u:hunter2secret@db/v", "carries a password"),
            ("postgresql://u@/v?host=/tmp&requirepeer=", "takes in requirepeer= a user name"),
            ("postgresql://u@/v?host=/tmp&requirepeer=-o%20x", "takes in requirepeer= a user name"),
            ("postgresql://u@db/v?password=hunter2secret", "carries a password"),
            ("postgresql://u@db/v?passfile=/x", "carries a password"),
            ("postgresql://u@db/v?sslmode=require", "takes sslmode=verify-full"),
            ("postgresql://u@db/v?sslmode=disable", "only a local socket goes without TLS"),
            ("postgresql://u@db:0/v", "port that is not a number"),
            ("postgresql://u@db:70000/v", "port that is not a number"),
            ("postgresql://u@db:x/v", "port that is not a number"),
            ("postgresql://u@db,,db2/v", "empty or malformed host"),
            ("postgresql://u@db;rm/v", "empty or malformed host"),
            ("postgresql://u@[fd00::1/v", "without its ]"),
            ("postgresql://u@/v", "names no server"),
            ("postgresql://db/v", "names no user"),
            ("postgresql://u@db", "names no database"),
            ("postgresql://u@db/v?host=relative/dir", "absolute path"),
            ("postgresql://u@db/v?application_name=x", "does not take: \"application_name\""),
            ("postgresql://u@db/v?port=1&port=2", "names the parameter \"port\" twice"),
            ("postgresql://u@/v?host=/a,/b&port=1,2,3", "one for each socket directory"),
            ("postgresql://u@db/v?host=/a,/b&port=1,2", "one for each socket directory"),
            ("postgresql://u@/v?host=/a,/b&port=1,", "port that is not a number"),
            // A password written after the user name, with a '?' in it, shows none of itself.
            ("postgresql://u:ab?hunter2secret=x@db/v", "(a name libpq does not know)"),
            ("postgresql://u@db/v?connect_timeout=0", "from 1 to 60"),
            ("postgresql://u@db/v?target_session_attrs=any", "read-write only"),
            ("postgresql://u@db/v?sslmode", "parameter without a value"),
            ("postgresql://u@db/v%0A", "malformed database name"),
            ("postgresql://u@db/v?sslrootcert=ca.pem", "absolute path"),
        ])
    func refused(_ text: String, _ expected: String) {
        let error = #expect(throws: CaseVaultError.self) { try PostgresLocation(parsing: text) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains(expected) == true, "\(String(describing: error?.message))")
        #expect(error?.message.contains("hunter2secret") == false)
    }

    @Test("the password comes from a file only its owner reads, on one line")
    func passwordFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("casevault-pgpw-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("password").path
        func write(_ text: String, mode: mode_t) throws {
            unlink(path)
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            chmod(path, mode)
        }
        try write("s3cret pass\n", mode: 0o600)
        #expect(try PostgresPassword.read(file: path) == "s3cret pass")
        try write("s3cret\r\n", mode: 0o400)
        #expect(try PostgresPassword.read(file: path) == "s3cret")

        try write("s3cret\n", mode: 0o640)
        let exposed = #expect(throws: CaseVaultError.self) { try PostgresPassword.read(file: path) }
        #expect(exposed?.code == .insecurePermissions)

        for bad in ["", "\n", "one\ntwo\n", "tab\there"] {
            try write(bad, mode: 0o600)
            let error = #expect(throws: CaseVaultError.self) { try PostgresPassword.read(file: path) }
            #expect(error?.message.contains("on one line") == true, "\(bad.debugDescription)")
        }
        try write(String(repeating: "a", count: 1025), mode: 0o600)
        let long = #expect(throws: CaseVaultError.self) { try PostgresPassword.read(file: path) }
        #expect(long?.message.contains("longer than 1024 bytes") == true)

        // A link to a private file, or a FIFO in its place, is refused without reading (or blocking on) it.
        try write("s3cret\n", mode: 0o600)
        let link = directory.appendingPathComponent("link").path
        #expect(symlink(path, link) == 0)
        let linked = #expect(throws: CaseVaultError.self) { try PostgresPassword.read(file: link) }
        #expect(linked?.code == .insecurePermissions)
        let fifo = directory.appendingPathComponent("fifo").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let piped = #expect(throws: CaseVaultError.self) { try PostgresPassword.read(file: fifo) }
        #expect(piped?.code == .insecurePermissions)

        let missing = #expect(throws: CaseVaultError.self) {
            try PostgresPassword.read(file: directory.appendingPathComponent("absent").path)
        }
        #expect(missing?.code == .invalidConfiguration)
        let noDirectory = #expect(throws: CaseVaultError.self) {
            try PostgresPassword.read(credential: "pg-password", directory: nil)
        }
        #expect(noDirectory?.message.contains("$CREDENTIALS_DIRECTORY") == true)
        try write("from-credential\n", mode: 0o600)
        #expect(try PostgresPassword.read(credential: "password", directory: directory.path) == "from-credential")
        #expect(throws: CaseVaultError.self) {
            try PostgresPassword.read(credential: "../password", directory: directory.path)
        }
    }
}

@Suite("doctor's reading of the database's replication settings")
struct DatabaseCheckTests {
    @Test(
        "how many synchronous standbys a commit waits for",
        arguments: [
            ("standby1", 1), ("*", 1), ("FIRST 2 (s1, s2, s3)", 2), ("ANY 3 (s1, s2, s3)", 3), ("2 (s1, s2)", 2),
            ("first 1 (s1)", 1), ("s1, s2", 1),
        ])
    func requiredStandbys(_ names: String, _ expected: Int) {
        #expect(DatabaseChecks.requiredStandbys(names) == expected)
    }

    @Test("replication fails when fewer standbys stream in sync than the setting asks for, and passes when enough do")
    func replication() {
        let one = [(name: "s1", state: String?("streaming"), syncState: String?("sync"))]
        let two = one + [(name: "s2", state: String?("streaming"), syncState: String?("potential"))]
        #expect(DatabaseChecks.replicationCheck(standbyNames: "FIRST 2 (s1, s2)", standbys: two).status == .fail)
        #expect(DatabaseChecks.replicationCheck(standbyNames: "FIRST 1 (s1, s2)", standbys: two).status == .pass)
        #expect(DatabaseChecks.replicationCheck(standbyNames: "s1", standbys: []).status == .fail)
        #expect(DatabaseChecks.replicationCheck(standbyNames: "", standbys: []).status == .warn)
        let hidden = [(name: "s1", state: String?.none, syncState: String?.none)]
        #expect(DatabaseChecks.replicationCheck(standbyNames: "s1", standbys: hidden).detail.contains("pg_monitor"))
        #expect(DatabaseChecks.commitCheck(synchronousCommit: "off", standbyNames: "s1").status == .fail)
        #expect(DatabaseChecks.commitCheck(synchronousCommit: "local", standbyNames: "s1").status == .warn)
        #expect(DatabaseChecks.commitCheck(synchronousCommit: "on", standbyNames: " ").status == .warn)
        #expect(DatabaseChecks.commitCheck(synchronousCommit: "remote_apply", standbyNames: "s1").status == .pass)
    }

    @Test(
        "the connections check warns when max_connections, less those kept for superusers, cannot take every daemon at its busiest, and names the setting that would"
    )
    func connections() {
        let one = DatabaseChecks.connectionsCheck(maxConnections: 100, reserved: 3, daemons: 1, perDaemon: 51)
        #expect(one.status == .pass && one.name == "connections")
        let two = DatabaseChecks.connectionsCheck(maxConnections: 100, reserved: 3, daemons: 2, perDaemon: 51)
        #expect(two.status == .warn && two.detail.contains("at least 105"), "\(two.detail)")
        let exact = DatabaseChecks.connectionsCheck(maxConnections: 105, reserved: 3, daemons: 2, perDaemon: 51)
        #expect(exact.status == .pass)
    }
}

import CCaseVaultShims
import CaseVaultPostgres
import Foundation
import PostgresNIO

#if canImport(Glibc)
import Glibc
#endif

/// Two real PostgreSQL 15 clusters made for one test: a primary and a streaming standby that the primary's
/// commits wait for (`synchronous_standby_names`), both on Unix sockets in a temporary directory and on no
/// TCP port; or the primary alone, also listening with TLS on a free port of the loopback address
/// (`init(tls:)`). Made with `initdb`, `pg_basebackup` and `pg_ctl`, as `nobody` when the tests run as root
/// (the server refuses to run as root). `make test` installs postgresql-15.
final class PostgresClusters {
    static let bin = "/usr/lib/postgresql/15/bin"
    static let user = "casevault"
    static let database = "vault"
    static let standbyPort = 5434
    /// The standby's name, as the primary's `synchronous_standby_names` lists it.
    static let standbyName = "standby1"

    let root: String
    let password: String
    /// The primary's port: its socket's name, and with TLS its TCP port on 127.0.0.1.
    let primaryPort: Int

    var primaryData: String { self.root + "/primary" }
    var standbyData: String { self.root + "/standby" }
    var primarySockets: String { self.root + "/sock-primary" }
    var standbySockets: String { self.root + "/sock-standby" }
    var primary: PostgresLocation.Server { .socket(directory: self.primarySockets, port: self.primaryPort) }
    var standby: PostgresLocation.Server { .socket(directory: self.standbySockets, port: Self.standbyPort) }

    /// A location listing `servers` in that order (each socket with its own port, which a URI cannot say).
    func location(_ servers: [PostgresLocation.Server]) throws -> PostgresLocation {
        var location = try PostgresLocation(parsing: "postgresql://\(Self.user)@/\(Self.database)?host=/unused")
        location.servers = servers
        location.connectTimeoutSeconds = 2
        return location
    }

    /// Makes and starts both clusters and waits until the standby streams in sync. With `tls`, the
    /// primary alone, which also listens on 127.0.0.1 with TLS on, presenting `tls`'s certificate and key
    /// (files that the server reads again at `reloadTLS`).
    init(tls: (certificate: String, key: String)? = nil) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.bin + "/initdb") else {
            throw Failure("PostgreSQL 15 is not installed at \(Self.bin): `make test` installs postgresql-15")
        }
        var template = Array("/tmp/casevault-pg-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Failure("mkdtemp failed") }
        self.root = String(cString: made)
        self.password = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        self.primaryPort = tls == nil ? 5433 : try Self.freeLoopbackPort()
        do {
            try self.own(self.root)
            for directory in [self.primarySockets, self.standbySockets] {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
                try self.own(directory)
            }
            let passwordFile = self.root + "/initdb-password"
            try Data((self.password + "\n").utf8).write(to: URL(fileURLWithPath: passwordFile))
            try self.own(passwordFile)

            try self.runAsOwner(
                "initdb",
                [
                    "-D", self.primaryData, "-U", Self.user, "--pwfile=\(passwordFile)", "--auth=scram-sha-256",
                    "-E", "UTF8", "--locale=C", "--no-sync",
                ])
            var settings = [
                "unix_socket_directories = '\(self.primarySockets)'", "port = \(self.primaryPort)",
                "synchronous_commit = on", "wal_level = replica", "max_wal_senders = 4",
                // WAL is kept, on the standby too (pg_basebackup copies this file): the residue tests look for a
                // shredded row in it, as in an archive or a standby's pg_wal; a restartpoint must not remove
                // it first.
                "wal_keep_size = '1GB'",
            ]
            if let tls {
                // The key must be the server user's alone; initdb's pg_hba.conf takes scram-sha-256 on 127.0.0.1.
                for path in [tls.certificate, tls.key] { try self.own(path) }
                settings += [
                    "listen_addresses = '127.0.0.1'", "ssl = on", "ssl_cert_file = '\(tls.certificate)'",
                    "ssl_key_file = '\(tls.key)'",
                ]
            } else {
                settings.append("listen_addresses = ''")
            }
            try self.appendSettings(self.primaryData + "/postgresql.conf", settings)
            try self.pgctl(["-D", self.primaryData, "-l", self.root + "/primary.log", "-w", "start"])
            try self.psql(self.primaryPort, self.primarySockets, "postgres", "CREATE DATABASE \(Self.database)")
            guard tls == nil else { return }

            try self.runAsOwner(
                "pg_basebackup",
                [
                    "-D", self.standbyData, "-h", self.primarySockets, "-p", "\(self.primaryPort)", "-U", Self.user,
                    "-X",
                    "stream", "--checkpoint=fast",
                ])
            try self.appendSettings(
                self.standbyData + "/postgresql.conf",
                [
                    "unix_socket_directories = '\(self.standbySockets)'", "port = \(Self.standbyPort)",
                    // Once promoted, the standby has no standby of its own to wait for.
                    "synchronous_standby_names = ''",
                    "primary_conninfo = 'host=\(self.primarySockets) port=\(self.primaryPort) user=\(Self.user) password=\(self.password) application_name=\(Self.standbyName)'",
                ])
            try Data().write(to: URL(fileURLWithPath: self.standbyData + "/standby.signal"))
            try self.own(self.standbyData + "/standby.signal")
            try self.pgctl(["-D", self.standbyData, "-l", self.root + "/standby.log", "-w", "start"])
            // Only now may the primary's commits wait for the standby: before it runs, they would wait forever.
            try self.appendSettings(
                self.primaryData + "/postgresql.conf", ["synchronous_standby_names = '\(Self.standbyName)'"])
            try self.pgctl(["-D", self.primaryData, "reload"])

            let deadline = Date().addingTimeInterval(30)
            while try self.psql(
                self.primaryPort, self.primarySockets, "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'sync'") != "1"
            {
                guard Date() < deadline else { throw Failure("the standby did not stream in sync within 30 s") }
                usleep(100_000)
            }
        } catch {
            // A cluster started before the failure is stopped, and every file removed.
            self.tearDown()
            throw error
        }
    }

    /// Stops a cluster at once, as a crash would (`pg_ctl stop -m immediate`).
    func kill(primary: Bool) throws {
        try self.pgctl(["-D", primary ? self.primaryData : self.standbyData, "-m", "immediate", "-w", "stop"])
    }

    /// Has the primary refuse every write, as a server turned standby does (SQLSTATE 25006,
    /// `read_only_sql_transaction`: `default_transaction_read_only`, which its sessions read again at their
    /// next statement after the reload), or take writes again.
    func refuseWrites(_ refuse: Bool) throws {
        try self.psql(
            self.primaryPort, self.primarySockets, "postgres",
            refuse
                ? "ALTER SYSTEM SET default_transaction_read_only = on"
                : "ALTER SYSTEM RESET default_transaction_read_only")
        try self.psql(self.primaryPort, self.primarySockets, "postgres", "SELECT pg_reload_conf()")
    }

    /// Starts the standby again after `kill(primary: false)`: it streams from the primary once more, and the
    /// commits that waited for it end.
    func restartStandby() throws {
        try self.pgctl(["-D", self.standbyData, "-l", self.root + "/standby.log", "-w", "start"])
    }

    /// Promotes the standby and waits until it takes writes.
    func promoteStandby() throws {
        try self.pgctl(["-D", self.standbyData, "-w", "promote"])
    }

    /// Sets the primary's `ssl` setting and has it read its settings and its certificate and key files again
    /// (`pg_ctl reload`: PostgreSQL reloads its TLS set-up on SIGHUP); returns once a new session reports a
    /// load of the configuration later than the one before (`pg_conf_load_time()`), with the setting.
    func reloadTLS(on: Bool) throws {
        let query = "SELECT pg_conf_load_time()::text || ' ' || current_setting('ssl')"
        let before = try self.psql(self.primaryPort, self.primarySockets, "postgres", query)
        try self.appendSettings(self.primaryData + "/postgresql.conf", ["ssl = \(on ? "on" : "off")"])
        try self.pgctl(["-D", self.primaryData, "reload"])
        let deadline = Date().addingTimeInterval(30)
        while true {
            let now = try self.psql(self.primaryPort, self.primarySockets, "postgres", query)
            if now != before, now.hasSuffix(on ? " on" : " off") { return }
            guard Date() < deadline else { throw Failure("the primary did not reload within 30 s (\(now))") }
            usleep(50_000)
        }
    }

    /// A TCP port on 127.0.0.1 that nothing listens on now: the kernel's choice for a socket bound to port 0.
    private static func freeLoopbackPort() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw Failure("socket: errno \(errno)") }
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                bind(socket, address, length) == 0 && getsockname(socket, address, &length) == 0
            }
        }
        guard bound else { throw Failure("bind to 127.0.0.1:0: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Stops whatever still runs and removes every file.
    func tearDown() {
        for data in [self.primaryData, self.standbyData]
        where FileManager.default.fileExists(atPath: data + "/postmaster.pid") {
            try? self.pgctl(["-D", data, "-m", "immediate", "-w", "stop"])
        }
        try? FileManager.default.removeItem(atPath: self.root)
    }

    /// Runs SQL with psql on a cluster and returns its unaligned output.
    @discardableResult
    func psql(_ port: Int, _ sockets: String, _ database: String, _ sql: String) throws -> String {
        try self.runAsOwner(
            "psql",
            [
                "-h", sockets, "-p", "\(port)", "-U", Self.user, "-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c",
                sql,
            ]
        ).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Waits (at most 30 s) until the standby has received and written to its disk all the WAL the primary
    /// has written so far, so that what a test looks for in the standby's files has reached them: the
    /// primary's first commits may not wait for the standby (its `synchronous_standby_names` is set by a
    /// reload after the standby starts), and a standby starved of CPU lags.
    func waitForStandby() throws {
        let target = try self.psql(self.primaryPort, self.primarySockets, Self.database, "SELECT pg_current_wal_lsn()")
        for _ in 0..<300 {
            let caughtUp = try self.psql(
                Self.standbyPort, self.standbySockets, Self.database,
                "SELECT coalesce(pg_last_wal_receive_lsn() >= '\(target)'::pg_lsn, false)")
            if caughtUp == "t" { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw Failure("the standby did not receive the primary's WAL up to \(target) within 30 s")
    }

    private func pgctl(_ arguments: [String]) throws {
        try self.runAsOwner("pg_ctl", arguments)
    }

    /// Gives `path` to the user the clusters run as.
    func own(_ path: String) throws {
        guard geteuid() == 0 else { return }
        guard chown(path, 65534, 65534) == 0 else { throw Failure("chown \(path): errno \(errno)") }
    }

    private func appendSettings(_ path: String, _ lines: [String]) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(("\n" + lines.joined(separator: "\n") + "\n").utf8))
        try handle.close()
    }

    /// Runs one of PostgreSQL's programs as the clusters' owner (`nobody` under root, else this user) and
    /// returns what it printed. Spawned directly rather than through Foundation's `Process`, which takes a
    /// child for running until every process holding its inherited descriptors is gone: the server that
    /// `pg_ctl start` leaves behind would hold them for the rest of the test. The child inherits no
    /// descriptor but its output file, so no server outlives a test holding another test's pipe.
    @discardableResult
    private func runAsOwner(_ tool: String, _ arguments: [String]) throws -> String {
        let command =
            geteuid() == 0
            ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", Self.bin + "/" + tool]
            : [Self.bin + "/" + tool]
        // No PG* setting of the caller's (PGSSLMODE, PGSERVICE, PGOPTIONS…) reaches the tools.
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        environment["PGPASSWORD"] = self.password
        environment["HOME"] = self.root
        let (status, text) = try Self.spawn(command + arguments, environment: environment, in: self.root)
        guard status == 0 else {
            throw Failure(
                "\(tool) \(status < 0 ? "was killed by signal \(-status)" : "exited with \(status)"): \(text)")
        }
        return text
    }

    /// Runs `command` in `directory`, its standard output and error into one file there, and returns its exit
    /// status (a signal that killed it as its negative) and what it printed.
    static func spawn(_ command: [String], environment: [String: String], in directory: String) throws -> (
        status: Int32, output: String
    ) {
        let outputPath = directory + "/spawned-\(UUID().uuidString).out"
        defer { unlink(outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        guard casevault_spawn_actions_confine(&actions, directory) == 0 else { throw Failure("posix_spawn actions") }
        let argv = command.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, command[0], &actions, nil, argv, envp) == 0 else {
            throw Failure("could not start \(command[0])")
        }
        // pg_ctl waits at most 60 s for a server (-w); anything past two minutes is a hang.
        let deadline = Date().addingTimeInterval(120)
        var status: Int32 = 0
        while true {
            let waited = waitpid(pid, &status, WNOHANG)
            if waited == pid { break }
            guard waited == 0 || errno == EINTR else { throw Failure("waitpid for \(command[0]): errno \(errno)") }
            guard Date() < deadline else {
                Glibc.kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                throw Failure("\(command[0]) did not finish within 120 s")
            }
            usleep(10_000)
        }
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        // The wait status: exited with (status >> 8) & 0xff when its low seven bits are 0, else killed by them.
        let signal = status & 0x7f
        return (signal == 0 ? (status >> 8) & 0xff : -signal, text)
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}

extension PostgresConnection {
    /// Closes the connection, waiting for it, where no `await` can go (a `defer`, a `deinit`): PostgresNIO
    /// traps on a connection released open, which would end the whole test process when a test throws
    /// before its own close. Closing one already closed does nothing.
    func closeAtExit() {
        _ = try? self.close().wait()
    }
}

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

enum UnixAddress {
    /// bind(2) to a Unix socket path; 0 or -1.
    static func bind(_ fd: Int32, to path: String) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }
}

/// The service manager's side of sd_notify(3): a datagram socket the test binds, handed to a real daemon
/// as NOTIFY_SOCKET.
final class NotifySocket {
    let path: String
    let fd: Int32

    init(path: String) throws {
        self.path = path
        self.fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard self.fd >= 0 else { throw POSIXError(.EIO) }
        let bound = UnixAddress.bind(self.fd, to: path)
        guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next message, or nil when none came within 200 ms.
    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
        return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : nil
    }

    /// Messages until one contains `field`, or `seconds` pass.
    func wait(for field: String, seconds: Double) -> [String] {
        var seen: [String] = []
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let message = self.receive() {
                seen.append(message)
                if message.split(separator: "\n").contains(Substring(field)) { return seen }
            }
        }
        return seen
    }

    deinit {
        close(self.fd)
        unlink(self.path)
    }
}

@Suite("systemd integration", .serialized)
struct SystemdTests {
    @Test("READY=1 comes only once the socket answers; the watchdog is fed; SIGTERM says STOPPING=1")
    func notifyProtocol() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let notify = try NotifySocket(path: root + "/notify.sock")
        let daemon = try DaemonProcess(
            roles: #"operator = ["self"]"#, socketGroup: nil, root: root,
            environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"]
        )
        let beforeReady = notify.wait(for: "READY=1", seconds: 30)
        #expect(beforeReady.last?.contains("READY=1") == true, "no READY=1: \(beforeReady) \(daemon.log)")
        // The moment READY=1 arrives, the socket answers.
        let health = try Client.request(daemon, "GET", "/v1/health")
        #expect(health.status == 200)
        #expect(beforeReady.last?.contains("STATUS=serving on ") == true)
        // WATCHDOG_USEC=400000: a ping at least every 200 ms.
        let pings = notify.wait(for: "WATCHDOG=1", seconds: 2)
        #expect(pings.last == "WATCHDOG=1", "no watchdog ping: \(pings)")
        kill(daemon.process.processIdentifier, SIGTERM)
        let stopping = notify.wait(for: "STOPPING=1", seconds: 10)
        #expect(stopping.last?.contains("STOPPING=1") == true, "no STOPPING=1: \(stopping)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test(
        "when standard error is the journal (JOURNAL_STREAM), each line is one entry with a syslog priority and no timestamp"
    )
    func journalLines() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        _ = FileManager.default.createFile(atPath: root + "/daemon.log", contents: nil)
        var info = stat()
        #expect(stat(root + "/daemon.log", &info) == 0)
        let daemon = try DaemonProcess(
            roles: #"operator = ["self"]"#, socketGroup: nil, root: root,
            environment: ["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino)"]
        )
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
        let lines = daemon.log.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("<6>serving socket.path=") }, "\(daemon.log)")
        #expect(lines.allSatisfy { $0.range(of: #"^<[2-7]>"#, options: .regularExpression) != nil }, "\(daemon.log)")
        // A timestamp, not any "T0" (the temporary directory's random name, in the socket path, may hold one).
        let timestamp = daemon.log.range(of: #"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:"#, options: .regularExpression)
        #expect(
            timestamp == nil && !daemon.log.contains(" info "), "no timestamps or level words: journald adds its own")
    }

    @Test("the daemon runs and files, reads and shreds under PR_SET_MDWE, which MemoryDenyWriteExecute= applies")
    func noWritableExecutableMemory() throws {
        let daemon = try DaemonProcess(
            roles: #"director = ["self"]"#, socketGroup: nil,
            wrapper: [DaemonProcess.binary("casevault-torture"), "refuse-exec-gain"]
        )
        // The wrapper execs the daemon only once it has read the flag back (exit 5 otherwise), so a daemon that
        // serves is one running under it.
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try daemon.openCase(by: .root, mediators: [])
        let intake = try daemon.file(caseID, Bodies.intake, as: .root).string("record_id")
        try daemon.call("GET", "/v1/records/\(intake)", expect: 200)
        try daemon.call("DELETE", "/v1/records/\(intake)", body: #"{"reason": "policy"}"#, expect: 200)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("the systemd-credential key source reads the root key from $CREDENTIALS_DIRECTORY, and refuses without it")
    func credentialKeySource() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        mkdir(root + "/credentials", 0o700)
        let key = root + "/credentials/casevault-root-key"
        _ = FileManager.default.createFile(
            atPath: key, contents: Data((0..<32).map { _ in UInt8.random(in: 0...255) }),
            attributes: [.posixPermissions: 0o400])
        let extra = "[keys]\nsource = \"systemd-credential\"\n"
        var recordID = ""
        do {
            let daemon = try DaemonProcess(
                roles: #"director = ["self"]"#, extra: extra, socketGroup: nil, root: root,
                environment: ["CREDENTIALS_DIRECTORY": root + "/credentials"]
            )
            #expect(daemon.waitUntilServing(), "\(daemon.log)")
            let caseID = try daemon.openCase(by: .root, mediators: [])
            recordID = try daemon.file(caseID, Bodies.intake, as: .root).string("record_id")
            #expect(daemon.stop() == 0, "\(daemon.log)")
        }
        #expect(
            !FileManager.default.fileExists(atPath: root + "/keys/root.key"),
            "no key file is made when the key is a credential")
        do {
            // The same credential opens the same records.
            let daemon = try DaemonProcess(
                roles: #"director = ["self"]"#, extra: extra, socketGroup: nil, root: root,
                environment: ["CREDENTIALS_DIRECTORY": root + "/credentials"]
            )
            #expect(daemon.waitUntilServing(), "\(daemon.log)")
            try daemon.call("GET", "/v1/records/\(recordID)", expect: 200)
            #expect(daemon.stop() == 0, "\(daemon.log)")
        }
        // Without $CREDENTIALS_DIRECTORY, or with a key of the wrong length, the daemon does not start.
        let unset = try DaemonProcess(
            roles: #"director = ["self"]"#, extra: extra, socketGroup: nil, environment: ["CREDENTIALS_DIRECTORY": ""])
        unset.process.waitUntilExit()
        #expect(unset.process.terminationStatus == 3 && unset.log.contains("CREDENTIALS_DIRECTORY"), "\(unset.log)")
        chmod(key, 0o600)
        try Data(repeating: 7, count: 16).write(to: URL(fileURLWithPath: key))
        let short = try DaemonProcess(
            roles: #"director = ["self"]"#, extra: extra, socketGroup: nil,
            environment: ["CREDENTIALS_DIRECTORY": root + "/credentials"]
        )
        short.process.waitUntilExit()
        #expect(short.process.terminationStatus == 3 && short.log.contains("exactly 32 bytes"), "\(short.log)")
    }

    @Test("without NOTIFY_SOCKET the daemon sends nothing and serves as usual")
    func noNotifySocket() throws {
        let daemon = try DaemonProcess(
            roles: #"operator = ["self"]"#, socketGroup: nil, environment: ["NOTIFY_SOCKET": ""])
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        #expect(!daemon.log.contains("could not be notified"))
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }
}

/// A daemon started the way systemd starts a socket-activated service: a listening socket the test made,
/// passed as fd 3, with LISTEN_FDS and LISTEN_PID (set by `sh` to its own pid just before it execs the
/// daemon, as systemd sets it after fork).
final class ActivatedDaemon {
    let root: String
    var socket: String { self.root + "/run/casevault.sock" }
    var logPath: String { self.root + "/daemon.log" }
    private(set) var pid: pid_t = 0
    let listener: Int32

    /// Makes the socket (mode `mode`), writes a configuration naming it, and spawns the daemon.
    init(mode: mode_t = 0o660, fds: String = "1") throws {
        self.root = DaemonProcess.temporaryRoot()
        mkdir(self.root + "/run", 0o750)
        self.listener = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        let bound = UnixAddress.bind(self.listener, to: self.socket)
        guard bound == 0, chmod(self.socket, mode) == 0, listen(self.listener, 64) == 0 else {
            throw POSIXError(.EADDRINUSE)
        }
        try DaemonProcess.writeConfiguration(
            root: self.root, socket: self.socket, socketGroup: nil, roles: #"operator = ["self"]"#)

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, self.listener, 3)
        posix_spawn_file_actions_addopen(&actions, 1, self.logPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let arguments = [
            "/bin/sh", "-c", #"LISTEN_PID=$$ LISTEN_FDS=\#(fds) LISTEN_FDNAMES=casevault exec "$0" "$@""#,
            DaemonProcess.binary("casevaultd"), "--config", self.root + "/casevault.toml", "--log-level", "trace",
        ]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let spawned = posix_spawn(&self.pid, "/bin/sh", &actions, nil, &argv, environ)
        guard spawned == 0 else { throw POSIXError(.ECHILD) }
    }

    var log: String { (try? String(contentsOfFile: self.logPath, encoding: .utf8)) ?? "" }

    /// Waits for the daemon to exit by itself; its exit status, or nil if it still runs after `seconds`.
    func exitStatus(within seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        var status: Int32 = 0
        while Date() < deadline {
            if waitpid(self.pid, &status, WNOHANG) == self.pid {
                self.pid = 0
                return (status >> 8) & 0xff
            }
            usleep(20_000)
        }
        return nil
    }

    func stop() -> Int32? {
        guard self.pid > 0 else { return nil }
        kill(self.pid, SIGTERM)
        return self.exitStatus(within: 30)
    }

    deinit {
        if self.pid > 0 {
            kill(self.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(self.pid, &status, 0)
        }
        close(self.listener)
        LeakCheck.record(log: self.log)
        try? FileManager.default.removeItem(atPath: self.root)
    }
}

@Suite("Socket activation", .serialized)
struct SocketActivationTests {
    static func inode(_ path: String) -> ino_t? {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_ino : nil
    }

    @Test("casevaultd serves the listening socket it is given (LISTEN_FDS=1, LISTEN_PID), and leaves its path alone")
    func servesInheritedSocket() throws {
        let daemon = try ActivatedDaemon()
        let inode = Self.inode(daemon.socket)
        #expect(daemon.exitStatus(within: 0.5) == nil, "the daemon refused the socket: \(daemon.log)")
        // The socket already listens: this request waits in the backlog until the daemon accepts it.
        let health = try Client.request(socket: daemon.socket, "GET", "/v1/health")
        #expect(health.status == 200, "\(daemon.log)")
        let whoami = try Client.request(socket: daemon.socket, "GET", "/v1/whoami")
        #expect(whoami.status == 200 && whoami.json["roles"] as? [String] == ["operator"])
        let missing = try Client.request(socket: daemon.socket, "GET", "/v1/nothing")
        #expect(missing.status == 404 && missing.isProblem)
        #expect(Self.inode(daemon.socket) == inode, "the daemon bound a socket of its own")
        #expect(daemon.log.contains("serving on the socket systemd passed"))
        #expect(daemon.stop() == 0, "\(daemon.log)")
        #expect(Self.inode(daemon.socket) == inode, "the socket belongs to systemd: the daemon must not remove it")
    }

    @Test("an inherited socket others can reach, or more than one socket, is refused: exit 3, nothing served")
    func refusesUnsafeSockets() throws {
        let open = try ActivatedDaemon(mode: 0o666)
        #expect(open.exitStatus(within: 30) == 3)
        #expect(open.log.contains("reachable by others"), "\(open.log)")
        let two = try ActivatedDaemon(fds: "2")
        #expect(two.exitStatus(within: 30) == 3)
        #expect(two.log.contains("exactly one"), "\(two.log)")
    }
}

@Suite("casevaultctl doctor")
struct DoctorTests {
    static func doctor(_ root: String) throws -> (status: Int32, checks: [String: String]) {
        let (status, output) = try Peer.root.run(
            DaemonProcess.binary("casevaultctl"), ["doctor", "--json", "--config", root + "/casevault.toml"])
        let document = (try? JSONSerialization.jsonObject(with: output)) as? [String: Any] ?? [:]
        var checks: [String: String] = [:]
        for check in document["checks"] as? [[String: String]] ?? [] {
            checks[check["name"] ?? ""] = check["status"]
        }
        return (status, checks)
    }

    @Test("a data directory with mode 0755 is a failure (exit 1); with 0700 the check passes")
    func dataDirectoryMode() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try DaemonProcess.writeConfiguration(
            root: root, socket: root + "/run/casevault.sock", socketGroup: nil, roles: "")
        mkdir(root + "/data", 0o755)
        chmod(root + "/data", 0o755)
        let open = try Self.doctor(root)
        #expect(open.checks["data directory"] == "fail", "\(open.checks)")
        #expect(open.status == 1)
        chmod(root + "/data", 0o700)
        let closed = try Self.doctor(root)
        #expect(closed.checks["data directory"] == "pass", "\(closed.checks)")
        #expect(
            closed.checks["shred guarantee"] != nil && closed.checks["swap"] != nil
                && closed.checks["core dumps"] != nil)
        // Exit 0 unless this host fails a check of its own (swap, core dumps), which the output then names.
        let hostFailures = closed.checks.filter { $0.value == "fail" }.keys
        #expect(closed.status == (hostFailures.isEmpty ? 0 : 1), "\(closed.checks)")
        let missing = try Peer.root.run(
            DaemonProcess.binary("casevaultctl"), ["doctor", "--config", root + "/nothing.toml"])
        #expect(missing.0 == 78)
    }

    @Test(
        "a root key or backup key file in the same tree as the data directory is a warning; in a tree of its own a pass"
    )
    func keysApartFromTheData() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        for directory in ["/state", "/state/data", "/state/keys", "/keys"] { mkdir(root + directory, 0o700) }
        for file in ["/state/keys/root.key", "/state/keys/backup.keys", "/keys/root.key", "/keys/backup.keys"] {
            _ = FileManager.default.createFile(
                atPath: root + file, contents: Data(count: 32), attributes: [.posixPermissions: 0o600])
        }
        func checks(keys: String) throws -> [String: String] {
            try """
            [store]
            data_directory = "\(root)/state/data"
            root_key_file = "\(root)\(keys)/root.key"
            max_content_bytes = 65536
            [server]
            socket_path = "\(root)/run/casevault.sock"
            max_body_bytes = 131072
            [backup]
            key_file = "\(root)\(keys)/backup.keys"
            """.write(toFile: root + "/casevault.toml", atomically: true, encoding: .utf8)
            return try Self.doctor(root).checks
        }
        let together = try checks(keys: "/state/keys")
        #expect(together["key source"] == "warn" && together["backup keys"] == "warn", "\(together)")
        let apart = try checks(keys: "/keys")
        #expect(apart["key source"] == "pass" && apart["backup keys"] == "pass", "\(apart)")
    }

    @Test(
        "the audit log: missing is a warning, immutable a failure (exit 1), writable a pass",
        .enabled(if: isRoot, "chattr needs root"))
    func auditLogWritable() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try DaemonProcess.writeConfiguration(
            root: root, socket: root + "/run/casevault.sock", socketGroup: nil, roles: "")
        #expect(try Self.doctor(root).checks["audit log writable"] == "warn")
        let log = root + "/data/audit/log"
        mkdir(root + "/data", 0o700)
        mkdir(root + "/data/audit", 0o700)
        _ = FileManager.default.createFile(atPath: log, contents: nil, attributes: [.posixPermissions: 0o600])
        #expect(try Self.doctor(root).checks["audit log writable"] == "pass")
        guard try AuditOverSocketTests.chattr("+i", log) else {
            Issue.record("this filesystem does not take the immutable flag")
            return
        }
        defer { _ = try? AuditOverSocketTests.chattr("-i", log) }
        let immutable = try Self.doctor(root)
        #expect(immutable.checks["audit log writable"] == "fail" && immutable.status == 1, "\(immutable.checks)")
    }
}

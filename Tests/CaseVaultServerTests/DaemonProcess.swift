import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// How many times slower than a debug build the processes under test run: `CASEVAULT_SLOWDOWN`, which
/// `make test-tsan` sets (ThreadSanitizer); tests that measure time within a window skip that part, or
/// widen it, by this.
enum SlowBuild {
    static let factor = max(1, Int(ProcessInfo.processInfo.environment["CASEVAULT_SLOWDOWN"] ?? "") ?? 1)
    /// The sanitizer the processes are built with (`CASEVAULT_SANITIZER`: address or thread), if any.
    static let sanitizer = ProcessInfo.processInfo.environment["CASEVAULT_SANITIZER"]
}

/// A real `casevaultd` process on a temporary socket, configured by the test.
final class DaemonProcess {
    static let clientsGroup: UInt32 = 3000
    let root: String
    let process = Process()
    let ownsRoot: Bool
    var socket: String { self.root + "/run/casevault.sock" }
    var logPath: String { self.root + "/daemon.log" }

    /// Writes a configuration with `roles` (TOML lines) and `extra` (more TOML, in which `$ROOT` stands for
    /// the daemon's directory) and starts the daemon.
    init(
        roles: String,
        extra: String = "",
        socketGroup: UInt32? = DaemonProcess.clientsGroup,
        root existing: String? = nil,
        environment: [String: String] = [:],
        wrapper: [String] = [],
        configurationFile: String? = nil,
        arguments: [String] = [],
        prepare: (String) throws -> Void = { _ in }
    ) throws {
        if let existing {
            self.root = existing
            self.ownsRoot = false
        } else {
            self.root = Self.temporaryRoot()
            self.ownsRoot = true
        }
        if configurationFile == nil {
            try Self.writeConfiguration(
                root: self.root, socket: self.socket, socketGroup: socketGroup, roles: roles, extra: extra)
        }
        try prepare(self.root)
        // Trace level: the log-leak check then reads everything the daemon can say.
        let command =
            [
                Self.binary("casevaultd"), "--config", configurationFile ?? self.root + "/casevault.toml",
                "--log-level", "trace",
            ] + arguments
        let invocation = wrapper + command
        self.process.executableURL = URL(fileURLWithPath: invocation[0])
        self.process.arguments = Array(invocation.dropFirst())
        self.process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        if !FileManager.default.fileExists(atPath: self.logPath) {
            _ = FileManager.default.createFile(atPath: self.logPath, contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: self.logPath))
        log.seekToEndOfFile()
        self.process.standardOutput = log
        self.process.standardError = log
        try self.process.run()
    }

    /// Writes `root/casevault.toml`: data and key under `root`, the socket at `socket`, `roles` (TOML lines)
    /// and `extra` (more TOML, in which `$ROOT` stands for `root`).
    static func writeConfiguration(
        root: String, socket: String, socketGroup: UInt32?, roles: String, extra: String = ""
    ) throws {
        let group = socketGroup.map { "socket_group = \"gid:\($0)\"" } ?? ""
        let configuration = """
            [store]
            data_directory = "\(root)/data"
            root_key_file = "\(root)/keys/root.key"
            max_content_bytes = 65536
            [server]
            socket_path = "\(socket)"
            max_body_bytes = 131072
            \(group)
            [roles]
            \(roles)
            \(extra.replacingOccurrences(of: "$ROOT", with: root))
            """
        try configuration.write(toFile: root + "/casevault.toml", atomically: true, encoding: .utf8)
    }

    /// Waits until the socket accepts connections; false if the daemon exited or 30 s passed.
    func waitUntilServing() -> Bool {
        for _ in 0..<300 {
            if !self.process.isRunning { return false }
            if (try? Client.request(self, "GET", "/v1/health"))?.status == 200 { return true }
            usleep(100_000)
        }
        return false
    }

    /// SIGTERM, then the exit status.
    func stop() -> Int32 {
        if self.process.isRunning {
            kill(self.process.processIdentifier, SIGTERM)
        }
        self.process.waitUntilExit()
        return self.process.terminationStatus
    }

    var log: String {
        (try? String(contentsOfFile: self.logPath, encoding: .utf8)) ?? ""
    }

    /// A new directory for a daemon's files, world-traversable so that other uids reach the socket.
    static func temporaryRoot() -> String {
        var template = Array((NSTemporaryDirectory() + "/casevault-daemon-XXXXXX").utf8CString)
        let path = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        let root = String(cString: path!)
        chmod(root, 0o755)
        return root
    }

    /// SIGKILL, as a crash would.
    func crash() {
        if self.process.isRunning {
            kill(self.process.processIdentifier, SIGKILL)
        }
        self.process.waitUntilExit()
    }

    deinit {
        self.crash()
        // Every test that starts a daemon sends the marker in its content and names; none may be logged.
        LeakCheck.record(log: self.log)
        // Nor may the audit log, which records every request.
        if let audit = try? String(contentsOfFile: self.root + "/data/audit/log", encoding: .utf8),
            audit.contains(LeakCheck.marker)
        {
            Issue.record("the audit log contains content or a participant's name")
        }
        if self.ownsRoot {
            try? FileManager.default.removeItem(atPath: self.root)
        }
    }

    static func binary(_ name: String) -> String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent(name).path
    }
}

/// Who a request runs as: a uid, a primary gid and supplementary groups, set with setpriv (root only).
struct Peer {
    var uid: UInt32
    var gid: UInt32 = DaemonProcess.clientsGroup
    var groups: [UInt32] = []

    static let root = Peer(uid: 0, gid: 0)

    /// The process that runs `executable` as this peer (through setpriv unless the peer is plain root).
    func process(_ executable: String, _ arguments: [String]) -> Process {
        let process = Process()
        if self.uid == 0 && self.gid == 0 && self.groups.isEmpty {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            let groups =
                self.groups.isEmpty
                ? ["--clear-groups"] : ["--groups", self.groups.map(String.init).joined(separator: ",")]
            process.arguments =
                ["--reuid", "\(self.uid)", "--regid", "\(self.gid)"] + groups + [executable] + arguments
        }
        return process
    }

    /// Runs `executable` as this peer (in `environment`, when given); its exit status and standard output.
    func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> (Int32, Data)
    {
        let process = self.process(executable, arguments)
        if let environment { process.environment = environment }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    /// Runs `executable` as this peer with `input` (if any) on standard input (in `environment`, when
    /// given); its exit status, standard output and standard error (gathered in a file, so that neither pipe can fill while the other is read).
    func run(_ executable: String, _ arguments: [String], input: String?, environment: [String: String]? = nil)
        throws -> (Int32, String, String)
    {
        let process = self.process(executable, arguments)
        if let environment { process.environment = environment }
        let output = Pipe()
        let stdin = Pipe()
        let errorsPath = NSTemporaryDirectory() + "/casevault-stderr-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: errorsPath, contents: nil)
        defer { unlink(errorsPath) }
        let errors = try FileHandle(forWritingTo: URL(fileURLWithPath: errorsPath))
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = stdin
        try process.run()
        try errors.close()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let err = FileManager.default.contents(atPath: errorsPath) ?? Data()
        return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }
}

/// curl over the Unix socket, run as a given peer: the same client an operator uses.
enum Client {
    struct Reply {
        var status: Int
        var contentType: String
        var body: Data
        /// The Retry-After header, when there was one.
        var retryAfter: String? = nil
        /// The CaseVault-Media-Type header (an attachment's), when there was one.
        var mediaType: String? = nil

        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: self.body)) as? [String: Any] ?? [:]
        }
    }

    static func request(
        _ daemon: DaemonProcess,
        _ method: String,
        _ path: String,
        as peer: Peer = .root,
        body: String? = nil,
        contentType: String = "application/json"
    ) throws -> Reply {
        try Self.request(socket: daemon.socket, method, path, as: peer, body: body, contentType: contentType)
    }

    static func request(
        socket: String,
        _ method: String,
        _ path: String,
        as peer: Peer = .root,
        body: String? = nil,
        contentType: String = "application/json"
    ) throws -> Reply {
        // A bound time: a socket that listens but is never served (a daemon that died) must fail the test, not hang it.
        var arguments = [
            "-s", "--max-time", "120", "--path-as-is", "-o", "-", "-w",
            "\n%{http_code}\t%header{retry-after}\t%{content_type}\t%header{casevault-media-type}", "--unix-socket",
            socket, "-X", method,
        ]
        var bodyFile: String?
        defer { bodyFile.map { _ = unlink($0) } }
        if let body {
            if body.utf8.count > 32_768 {
                // Too long for an argument: hand it to curl in a file the peer can read.
                let path = NSTemporaryDirectory() + "/casevault-body-\(UUID().uuidString)"
                try body.write(toFile: path, atomically: false, encoding: .utf8)
                chmod(path, 0o644)
                bodyFile = path
                arguments += ["-H", "Content-Type: \(contentType)", "--data-binary", "@" + path]
            } else {
                arguments += ["-H", "Content-Type: \(contentType)", "--data-binary", body]
            }
        }
        arguments.append("http://casevault" + path)
        let (_, output) = try peer.run("/usr/bin/curl", arguments)
        guard let newline = output.lastIndex(of: UInt8(ascii: "\n")) else {
            return Reply(status: 0, contentType: "", body: Data())
        }
        let trailer = String(decoding: output[(newline + 1)...], as: UTF8.self).split(
            separator: "\t", omittingEmptySubsequences: false)
        return Reply(
            status: Int(trailer.first ?? "") ?? 0,
            contentType: trailer.count > 2 ? String(trailer[2]) : "",
            body: Data(output[..<newline]),
            retryAfter: trailer.count > 1 && !trailer[1].isEmpty ? String(trailer[1]) : nil,
            mediaType: trailer.count > 3 && !trailer[3].isEmpty ? String(trailer[3]) : nil
        )
    }
}

/// The marker the tests put in every record's content and every participant's name and contact: the daemon's
/// log must never contain it. Each daemon's log is searched when the daemon is dropped.
enum LeakCheck {
    static let marker = "QX7MARKERZK"

    static func record(log: String) {
        if log.contains(Self.marker) {
            Issue.record("the daemon's log contains content or a participant's name:\n\(log)")
        }
    }
}

/// A raw connection to the socket, as the root test process: for what curl cannot do (hold a connection
/// open, send a request by hand).
final class UnixConnection {
    let fd: Int32

    init(path: String) throws {
        self.fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(self.fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            close(self.fd)
            throw CocoaError(.fileReadNoPermission)
        }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends `request` and reads until the peer closes, 5 s pass, or a whole response with a body arrived.
    func exchange(_ request: String) throws -> String {
        _ = Array(request.utf8).withUnsafeBytes { send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var received = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(self.fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received += buffer[..<count]
            let text = String(decoding: received, as: UTF8.self)
            if let end = text.range(of: "\r\n\r\n"), let length = Self.contentLength(text[..<end.lowerBound]),
                received.count >= text.utf8.distance(from: text.startIndex, to: end.upperBound) + length
            {
                break
            }
        }
        return String(decoding: received, as: UTF8.self)
    }

    static func contentLength(_ head: Substring) -> Int? {
        for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
            return Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    deinit {
        close(self.fd)
    }
}

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real `casevaultd` process on a temporary socket, configured by the test.
final class DaemonProcess {
    static let clientsGroup: UInt32 = 3000
    let root: String
    let process = Process()
    var socket: String { self.root + "/run/casevault.sock" }
    var logPath: String { self.root + "/daemon.log" }

    /// Writes a configuration with `roles` (TOML lines) and starts the daemon; waits until the socket answers.
    init(roles: String, socketGroup: UInt32? = DaemonProcess.clientsGroup, prepare: (String) throws -> Void = { _ in }) throws {
        var template = Array((NSTemporaryDirectory() + "/casevault-daemon-XXXXXX").utf8CString)
        let path = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        self.root = String(cString: path!)
        chmod(self.root, 0o755)
        let group = socketGroup.map { "socket_group = \"gid:\($0)\"" } ?? ""
        let configuration = """
            [store]
            data_directory = "\(self.root)/data"
            root_key_file = "\(self.root)/keys/root.key"
            max_content_bytes = 65536
            [server]
            socket_path = "\(self.socket)"
            max_body_bytes = 131072
            \(group)
            [roles]
            \(roles)
            """
        try configuration.write(toFile: self.root + "/casevault.toml", atomically: true, encoding: .utf8)
        try prepare(self.root)
        self.process.executableURL = URL(fileURLWithPath: Self.binary("casevaultd"))
        self.process.arguments = ["--config", self.root + "/casevault.toml"]
        FileManager.default.createFile(atPath: self.logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: self.logPath))
        self.process.standardOutput = log
        self.process.standardError = log
        try self.process.run()
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

    deinit {
        if self.process.isRunning {
            kill(self.process.processIdentifier, SIGKILL)
            self.process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: self.root)
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
}

/// curl over the Unix socket, run as a given peer: the same client an operator uses.
enum Client {
    struct Reply {
        var status: Int
        var contentType: String
        var body: Data

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
        var arguments = ["-s", "-o", "-", "-w", "\n%{http_code} %{content_type}", "--unix-socket", daemon.socket, "-X", method]
        if let body {
            arguments += ["-H", "Content-Type: \(contentType)", "--data-binary", body]
        }
        arguments.append("http://casevault" + path)
        let process = Process()
        if peer.uid == 0 && peer.gid == 0 && peer.groups.isEmpty {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            let groups = peer.groups.isEmpty ? ["--clear-groups"] : ["--groups", peer.groups.map(String.init).joined(separator: ",")]
            process.arguments = ["--reuid", "\(peer.uid)", "--regid", "\(peer.gid)"] + groups + ["/usr/bin/curl"] + arguments
        }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard let newline = output.lastIndex(of: UInt8(ascii: "\n")) else {
            return Reply(status: 0, contentType: "", body: Data())
        }
        let trailer = String(decoding: output[(newline + 1)...], as: UTF8.self).split(separator: " ", maxSplits: 1)
        return Reply(
            status: Int(trailer.first ?? "") ?? 0,
            contentType: trailer.count > 1 ? String(trailer[1]) : "",
            body: Data(output[..<newline])
        )
    }
}

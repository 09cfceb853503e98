import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// One daemon per data directory: a second one, even on a socket of its own, is refused before it opens the
/// store or the audit log, so that its crash recovery cannot scrub what the first has not committed yet.
@Suite("One daemon per data directory", .enabled(if: isRoot, "the clients' group needs root"), .serialized)
struct OneDaemonTests {
    @Test("a second daemon on the same data directory exits 3 and changes nothing; the first serves on")
    func secondDaemonRefused() throws {
        let first = try LifecycleOverSocketTests.start()
        defer { _ = first.stop() }
        let caseID = try LifecycleOverSocketTests.agreedCase(first)
        let data = first.root + "/data"
        let before = try Self.stillFiles(data)

        // The first daemon's configuration, on another socket: only the data directory is shared.
        let configuration = try String(contentsOfFile: first.root + "/casevault.toml", encoding: .utf8)
            .replacingOccurrences(of: first.socket, with: first.root + "/second/casevault.sock")
        try configuration.write(toFile: first.root + "/second.toml", atomically: true, encoding: .utf8)
        let second = Process()
        second.executableURL = URL(fileURLWithPath: DaemonProcess.binary("casevaultd"))
        second.arguments = ["--config", first.root + "/second.toml"]
        let logPath = first.root + "/second.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        second.standardOutput = log
        second.standardError = log
        try second.run()
        // A second daemon that is not refused serves on: it is stopped after a while, and the test fails.
        for _ in 0..<(300 * SlowBuild.factor) where second.isRunning {
            usleep(100_000)
        }
        let refused = !second.isRunning
        if second.isRunning { kill(second.processIdentifier, SIGTERM) }
        second.waitUntilExit()
        let said = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        #expect(refused, "the second daemon was not refused: \(said)")
        #expect(second.terminationStatus == 3, "\(said)")
        #expect(said.contains("another casevaultd is serving the data directory"), "\(said)")
        #expect(!FileManager.default.fileExists(atPath: first.root + "/second"), "the second daemon made its socket")
        let after = try Self.files(data)
        let changed = Set(before.keys).union(after.keys).filter { before[$0] != after[$0] }.sorted()
        #expect(changed.isEmpty, "the second daemon changed the data directory: \(changed)")

        // The first goes on: it files, reads, and its audit log checks out.
        let note = try first.file(caseID, Bodies.note, as: LifecycleOverSocketTests.mediator).string("record_id")
        try first.call("GET", "/v1/records/\(note)", as: LifecycleOverSocketTests.mediator, expect: 200)
        let verified = try first.call("GET", "/v1/audit/verify", as: .root, expect: 200).json
        #expect(verified["ok"] as? Bool == true, "\(verified)")
        #expect(first.process.isRunning)
    }

    /// `files(directory)` once the first daemon has stopped changing them: its audit anchor follows its last
    /// entries by up to `AuditLog.defaultAnchorInterval` (1 s), and a second daemon slow to start would see
    /// that write land while it runs. Still for 1.5 s, or whatever they are after 30 s (times the slowdown).
    static func stillFiles(_ directory: String) throws -> [String: String] {
        var last = try Self.files(directory)
        var still = 0
        for _ in 0..<(120 * SlowBuild.factor) where still < 6 {
            usleep(250_000)
            let now = try Self.files(directory)
            still = now == last ? still + 1 : 0
            last = now
        }
        return last
    }

    /// Every file under `directory` with its size and modification time.
    static func files(_ directory: String) throws -> [String: String] {
        var found: [String: String] = [:]
        let manager = FileManager.default
        for case let name as String in manager.enumerator(atPath: directory) ?? NSEnumerator() {
            var info = stat()
            guard lstat(directory + "/" + name, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
            found[name] = "\(info.st_size) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
        }
        return found
    }
}

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `casevaultctl attachment put` and `get` with a 1 GiB attachment: both stream, so casevaultctl's memory
/// stays flat whatever the size.
@Suite("Attachments from the command line", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct AttachmentCLITests {
    /// The most casevaultctl may hold resident while it moves 1 GiB: what it needs to run (about 35 MiB)
    /// and its pieces in flight; far less than the attachment. More under a sanitizer, whose shadow
    /// memory counts.
    static let flatBytes = (SlowBuild.sanitizer == nil ? 128 : 512) << 20

    /// Runs casevaultctl as `peer` with standard output to /dev/null, and reads its peak resident memory
    /// (VmHWM) every 10 ms while it runs, the last reading just before it ends; its exit status and that
    /// peak. (wait4's ru_maxrss would not do: a child spawned with a shared address space is charged the
    /// test runner's own peak when it execs.) The transfers run for seconds, so many readings are taken.
    static func peakMemory(_ peer: Peer, _ arguments: [String]) throws -> (Int32, Int) {
        let process = peer.process(DaemonProcess.binary("casevaultctl"), arguments)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var peak = 0
        while process.isRunning {
            // setpriv execs casevaultctl in the same process: one pid throughout.
            if let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
                status.contains("casevaultctl"),
                let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
                let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
            {
                peak = max(peak, kilobytes << 10)
            }
            usleep(10_000)
        }
        process.waitUntilExit()
        return (process.terminationStatus, peak)
    }

    static let director = Peer(uid: 4001)

    /// A serving daemon (this director only) and an agreement filed in a new case, to attach to.
    static func agreementToAttachTo() throws -> (DaemonProcess, String) {
        let daemon = try DaemonProcess(roles: #"director = ["uid:4001"]"#)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try daemon.call(
            "POST", "/v1/cases", as: Self.director, body: Bodies.openCase(mediators: []), expect: 201
        ).string("case_id")
        let recordID = try daemon.call(
            "POST", "/v1/cases/\(caseID)/records", as: Self.director, body: Bodies.agreement("p1"), expect: 201
        ).string("record_id")
        return (daemon, recordID)
    }

    @Test("a 1 GiB attachment goes up and comes back through casevaultctl in flat memory")
    func oneGibibyte() throws {
        let (daemon, recordID) = try Self.agreementToAttachTo()
        let director = Self.director
        let socket = ["--socket", daemon.socket]
        let work = DaemonProcess.temporaryRoot()
        chmod(work, 0o777)
        // A sparse file: 1 GiB that reads back as zeros and takes no disk.
        let path = work + "/scan.pdf"
        let descriptor = open(path, O_WRONLY | O_CREAT, 0o644)
        #expect(descriptor >= 0 && ftruncate(descriptor, 1 << 30) == 0)
        close(descriptor)
        defer { unlink(path) }
        let (put, putPeak) = try Self.peakMemory(director, ["attachment", "put", recordID, path] + socket)
        #expect(put == 0, "\(daemon.log)")
        let out = work + "/downloaded.pdf"
        let (get, getPeak) = try Self.peakMemory(director, ["attachment", "get", recordID, "--out", out] + socket)
        defer { unlink(out) }
        #expect(get == 0)
        var info = stat()
        #expect(stat(out, &info) == 0 && info.st_size == 1 << 30, "the attachment did not come back whole")
        print("casevaultctl peak resident memory moving 1 GiB: put \(putPeak >> 20) MiB, get \(getPeak >> 20) MiB")
        #expect(putPeak > 0 && putPeak < Self.flatBytes, "put: \(putPeak >> 20) MiB")
        #expect(getPeak > 0 && getPeak < Self.flatBytes, "get: \(getPeak >> 20) MiB")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    /// How the file changes under an upload under way.
    enum Change: String, CaseIterable, Sendable {
        case shrinks, grows
    }

    @Test(
        "a file that shrinks or grows while casevaultctl uploads it fails the upload, and the daemon stores nothing of it",
        arguments: Change.allCases)
    func changedWhileSent(_ change: Change) throws {
        let (daemon, recordID) = try Self.agreementToAttachTo()
        let director = Self.director
        let work = DaemonProcess.temporaryRoot()
        let path = work + "/scan.pdf"
        let descriptor = open(path, O_WRONLY | O_CREAT, 0o644)
        #expect(descriptor >= 0 && ftruncate(descriptor, 1 << 30) == 0)
        defer {
            close(descriptor)
            unlink(path)
        }
        let process = director.process(
            DaemonProcess.binary("casevaultctl"), ["attachment", "put", recordID, path, "--socket", daemon.socket])
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        // Once casevaultctl has read 16 MiB of it (its rchar), the file changes under it.
        var changed = false
        while process.isRunning && !changed {
            let io = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/io", encoding: .utf8)) ?? ""
            let read = io.split(separator: "\n").first { $0.hasPrefix("rchar:") }.flatMap {
                Int($0.split(separator: " ").last ?? "")
            }
            if let read, read > 16 << 20 {
                switch change {
                case .shrinks: #expect(ftruncate(descriptor, 1 << 20) == 0)
                case .grows: #expect(ftruncate(descriptor, (1 << 30) + 4096) == 0)
                }
                changed = true
            }
            usleep(1000)
        }
        let said = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(changed, "the upload ended before the file could be changed")
        #expect(process.terminationStatus == 1, "\(said)")
        #expect(said.contains(change == .shrinks ? "was it changed while it was sent" : "grew past"), "\(said)")
        // The daemon saw its connection close part way: it stores nothing (it stored what came, before).
        try daemon.call("GET", "/v1/records/\(recordID)/attachment", as: director, expect: 404)
        #expect(!daemon.log.contains("attachment stored"), "the daemon stored the cut-short body")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }
}

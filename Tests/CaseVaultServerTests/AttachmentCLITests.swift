import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `casevaultctl attachment put` and `get` with a 1 GiB attachment: both stream, so casevaultctl's memory
/// stays flat whatever the size.
@Suite("Attachments from the command line", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct AttachmentCLITests {
    /// How much more casevaultctl may hold resident moving 1 GiB than moving 1 MiB: its pieces in flight.
    static let flatBytes = 48 << 20

    /// Runs casevaultctl as `peer` with standard output to /dev/null, and reads its peak resident memory
    /// (VmHWM) while it runs, the last reading just before it ends; its exit status and that peak.
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
            usleep(20_000)
        }
        process.waitUntilExit()
        return (process.terminationStatus, peak)
    }

    @Test("a 1 GiB attachment goes up and comes back through casevaultctl in flat memory")
    func oneGibibyte() throws {
        let daemon = try DaemonProcess(roles: #"director = ["uid:4001"]"#)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let director = Peer(uid: 4001)
        let caseID = try daemon.call(
            "POST", "/v1/cases", as: director, body: Bodies.openCase(mediators: []), expect: 201
        ).string("case_id")
        func agreement(_ participant: String) throws -> String {
            try daemon.call(
                "POST", "/v1/cases/\(caseID)/records", as: director, body: Bodies.agreement(participant), expect: 201
            ).string("record_id")
        }
        let socket = ["--socket", daemon.socket]
        let work = DaemonProcess.temporaryRoot()
        // Sparse files: they read back as zeros and take no disk.
        var peaks: [Int: (put: Int, get: Int)] = [:]
        for (size, participant) in [(1 << 20, "p1"), (1 << 30, "p2")] {
            let recordID = try agreement(participant)
            let path = work + "/scan-\(size).pdf"
            let descriptor = open(path, O_WRONLY | O_CREAT, 0o644)
            #expect(descriptor >= 0 && ftruncate(descriptor, off_t(size)) == 0)
            close(descriptor)
            let (put, putPeak) = try Self.peakMemory(director, ["attachment", "put", recordID, path] + socket)
            #expect(put == 0, "\(daemon.log)")
            let (get, getPeak) = try Self.peakMemory(
                director, ["attachment", "get", recordID, "--out", "-"] + socket)
            #expect(get == 0)
            unlink(path)
            peaks[size] = (putPeak, getPeak)
        }
        let small = try #require(peaks[1 << 20])
        let large = try #require(peaks[1 << 30])
        print(
            "casevaultctl peak resident memory, 1 MiB → 1 GiB: put \(small.put >> 20) → \(large.put >> 20) MiB, "
                + "get \(small.get >> 20) → \(large.get >> 20) MiB")
        #expect(
            small.put > 0 && large.put - small.put < Self.flatBytes, "put grew \((large.put - small.put) >> 20) MiB")
        #expect(
            small.get > 0 && large.get - small.get < Self.flatBytes, "get grew \((large.get - small.get) >> 20) MiB")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }
}

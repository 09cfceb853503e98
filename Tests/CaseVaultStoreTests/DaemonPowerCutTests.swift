import CaseVaultCore
import Foundation
import GRDB
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real casevaultd with its data directory, key files and audit log on powercutfs, worked over its socket
/// by `casevault-torture socket-load` (16 clients filing notes, shredding some, filing final agreements or
/// closing cases, filing evaluations; an operator sweeping, rotating, backing up and verifying the audit log).
/// The daemon is killed and the power cut at a random moment; then the daemon starts again on what the disk
/// kept, with no operator, and every promise is checked through the socket and on the files.
@Suite(
    "Power cuts under the daemon", .serialized,
    .enabled(if: geteuid() == 0, "mounting FUSE and acting as another uid need root"))
struct DaemonPowerCutTests {
    /// How many cuts `make test` makes; `make soak` sets more.
    static let cycles = Int(ProcessInfo.processInfo.environment["CASEVAULT_DAEMON_POWERCUT_CYCLES"] ?? "") ?? 30
    /// The clients' uid (director, mediator and operator at once) and group (the socket's).
    static let uid: UInt32 = 4101
    static let gid: UInt32 = 3000

    @Test(
        "power cuts while 16 clients and an operator work the daemon: nothing acknowledged is lost or comes back, the audit log verifies, certificates match the shreds"
    )
    func cutsUnderTheDaemon() throws {
        let seed = Int.random(in: 0..<1_000_000)
        let fs = try PowerCutFS()
        try fs.mount()
        // The clients reach the socket under the test's folder; the vault's own folder is made durable here.
        chmod(fs.root, 0o755)
        let vault = fs.newVault()
        let daemon = try VaultDaemon(folder: fs.root, vault: vault)
        var ledger = Acknowledged()
        var evidence = ShredWitness()
        var summaries: [String] = []
        var unknownCertified = 0
        defer { daemon.kill() }

        for cycle in 0...Self.cycles {
            guard try daemon.start() else {
                Issue.record("cycle \(cycle): the daemon did not start on what the disk kept:\n\(daemon.log)")
                break
            }
            var touched: Set<RecordID> = []
            if cycle < Self.cycles {
                // Evaluations still live: the first sweep of this run disposes of them, and says so.
                let evaluations = ledger.live.filter { $0.value.contains("-e") }.map(\.key.rawValue)
                try (evaluations.joined(separator: "\n") + "\n").write(
                    toFile: fs.root + "/evaluations", atomically: true, encoding: .utf8)
                chmod(fs.root + "/evaluations", 0o644)
                // And a few notes whose bytes were captured while they lived, shredded by request at once.
                let victims = ledger.live.keys.filter { evidence.holds($0) && ledger.live[$0]?.contains("-n") == true }
                    .prefix(8)
                try (victims.map(\.rawValue).joined(separator: "\n") + "\n").write(
                    toFile: fs.root + "/shred", atomically: true, encoding: .utf8)
                chmod(fs.root + "/shred", 0o644)
                let (driver, reader) = try Helper.start(
                    [
                        "socket-load", "--socket", daemon.socket, "--tag", "cut\(cycle)", "--evaluations",
                        fs.root + "/evaluations",
                        "--shred", fs.root + "/shred", "--first", "\(cycle % 4)",
                    ],
                    as: (Self.uid, Self.gid)
                )
                // Longer in a sanitizer build (`CASEVAULT_SLOWDOWN`), so that as much gets done before the cut.
                let slowdown = UInt32(VaultDaemon.slowdown)
                // A backup streams the whole vault: the runs that begin with one (every fourth) get 0.5 to 3 s
                // (with the whole suite beside it, 0.1 to 2 s once saw no backup finish in 30 cycles).
                let span: ClosedRange<UInt32> = cycle % 4 == 2 ? 500_000...3_000_000 : 100_000...700_000
                usleep(UInt32.random(in: span) * slowdown)
                // The power cut: the daemon dies where it stands, then the disk loses what was not flushed.
                daemon.kill()
                kill(driver.processIdentifier, SIGKILL)
                driver.waitUntilExit()
                touched = ledger.absorb(reader, cycle: cycle).touched
                summaries.append(try fs.cut())
                try fs.mount(keep: PowerCutTests.reorder && cycle % 2 == 0 ? 0.5 : 0, seed: seed + cycle)
                guard try daemon.start() else {
                    Issue.record(
                        "cycle \(cycle): the daemon did not start without an operator after the cut:\n\(daemon.log)")
                    break
                }
            }
            // After the last cut, everything; before, what this cycle touched.
            let only: Set<RecordID>? = cycle < Self.cycles ? touched : nil
            let check = try SocketCheckRun(
                socket: daemon.socket, ledger: ledger, only: only, uid: Self.uid, gid: Self.gid)
            for problem in check.problems { Issue.record("cycle \(cycle): \(problem)") }
            #expect(check.auditOK, "cycle \(cycle): the audit log does not verify after the cut:\n\(daemon.log)")
            ledger.settle(kept: check.kept, shredded: check.shredded)
            // Each shred acknowledged has its certificate, and no record that reads back has one. A record
            // whose put was never acknowledged may have been swept after a cut: certified, and unknown here.
            let missing = ledger.shredded.subtracting(check.certified)
            #expect(
                missing.isEmpty,
                "cycle \(cycle): \(missing.count) acknowledged shreds have no certificate, e.g. \(missing.first?.rawValue ?? "")"
            )
            let certifiedLive = check.certified.filter { ledger.live[$0] != nil }
            #expect(
                certifiedLive.isEmpty,
                "cycle \(cycle): \(certifiedLive.count) records that read back have a shred certificate")
            unknownCertified = check.certified.subtracting(ledger.shredded).count
            #expect(daemon.stop() == 0, "cycle \(cycle): the daemon did not stop cleanly:\n\(daemon.log)")

            // On the files: no shredded record's wrapped key or ciphertext, and evidence of what lives now.
            let shreddedNow = only.map { ledger.shredded.intersection($0) } ?? ledger.shredded
            let findings = try evidence.search(for: shreddedNow, vault: vault, under: fs.mountpoint)
            for finding in findings { Issue.record("cycle \(cycle): \(finding)") }
            let liveNow = only.map { touched in ledger.live.keys.filter { touched.contains($0) } } ?? []
            try evidence.capture(Array(liveNow), vault: vault)
        }
        try fs.cut()
        let lost = summaries.map { $0.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0 }.reduce(0, +)
        #expect(
            ledger.puts > Self.cycles && ledger.shreds > Self.cycles,
            "\(ledger.puts) puts and \(ledger.shreds) shreds acknowledged: the load hardly ran")
        for action in ["sweep", "rotate", "backup", "audit-verify"] {
            #expect(ledger.actions[action, default: 0] > 0, "no \(action) was acknowledged in any cycle")
        }
        #expect(
            evidence.searched > 0,
            "no shredded record's ciphertext was captured while it lived: the file check did nothing")
        let tornEnds = daemon.log.components(separatedBy: "set aside the audit log's torn end").count - 1
        let actions = ledger.actions.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        print(
            "power cuts under the daemon: \(Self.cycles) cuts (seed \(seed)), \(ledger.puts) records and \(ledger.shreds) shreds acknowledged, "
                + "\(actions); \(evidence.searched) shredded records' ciphertext and wrapped keys searched for in every file, \(unknownCertified) "
                + "certificates of records never acknowledged; \(lost) unsynced blocks thrown away, \(tornEnds) torn audit ends set aside; 0 lost, 0 resurrected unless reported above"
        )
    }
}

/// casevaultd as the power-cut test runs it: vault files on the power-cut filesystem, configuration, socket and
/// log in `folder`, which is not.
final class VaultDaemon {
    let folder: String
    private var process: Process?
    var socket: String { self.folder + "/run/casevault.sock" }
    var logPath: String { self.folder + "/daemon.log" }
    var log: String { (try? String(contentsOfFile: self.logPath, encoding: .utf8)) ?? "" }

    init(folder: String, vault: TestVault) throws {
        self.folder = folder
        let configuration = """
            [store]
            data_directory = "\(vault.data)"
            root_key_file = "\(vault.key)"
            max_content_bytes = 65536
            [server]
            socket_path = "\(self.socket)"
            max_body_bytes = 131072
            socket_group = "gid:\(DaemonPowerCutTests.gid)"
            [roles]
            director = ["uid:\(DaemonPowerCutTests.uid)"]
            mediator = ["uid:\(DaemonPowerCutTests.uid)"]
            operator = ["uid:\(DaemonPowerCutTests.uid)"]
            [retention]
            evaluation = "0 days after filed"
            """
        try configuration.write(toFile: folder + "/casevault.toml", atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: self.logPath, contents: nil)
    }

    /// Starts it and waits until its socket answers; false if it exited or 30 s passed.
    func start() throws -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Helper.path).deletingLastPathComponent().appendingPathComponent(
            "casevaultd")
        process.arguments = ["--config", self.folder + "/casevault.toml"]
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: self.logPath))
        log.seekToEndOfFile()
        (process.standardOutput, process.standardError) = (log, log)
        try process.run()
        self.process = process
        for _ in 0..<300 {
            guard process.isRunning else { return false }
            if let connection = try? SocketClientProbe(path: self.socket), connection.healthy { return true }
            usleep(100_000)
        }
        return false
    }

    /// How much slower a sanitizer build runs (`CASEVAULT_SLOWDOWN`, at least 1): waits and windows scale by it.
    static let slowdown = max(1, Int(ProcessInfo.processInfo.environment["CASEVAULT_SLOWDOWN"] ?? "") ?? 1)

    /// Whether it runs.
    var isRunning: Bool { self.process?.isRunning ?? false }

    /// SIGKILL, as a power cut would.
    func kill() {
        guard let process = self.process else { return }
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        self.process = nil
    }

    /// SIGTERM, then its exit status; SIGKILL (status 137) if it has not stopped within a minute.
    func stop() -> Int32 {
        guard let process = self.process else { return -1 }
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(60 * Double(Self.slowdown))
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            self.process = nil
            return 137
        }
        process.waitUntilExit()
        self.process = nil
        return process.terminationStatus
    }
}

/// A health request on a fresh connection: whether the daemon answers 200.
struct SocketClientProbe {
    let healthy: Bool

    init(path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else { throw CocoaError(.fileReadNoPermission) }
        let request = Array("GET /v1/health HTTP/1.1\r\nHost: casevault\r\nConnection: close\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = recv(fd, &buffer, buffer.count, 0)
        self.healthy = count > 12 && String(decoding: buffer[..<12], as: UTF8.self) == "HTTP/1.1 200"
    }
}

/// One run of `casevault-torture socket-check` over the ledger's records (those of `only`, or all).
struct SocketCheckRun {
    var problems: [String] = []
    var kept: Set<RecordID> = []
    var shredded: Set<RecordID> = []
    var certified: Set<RecordID> = []
    var auditOK = false

    init(socket: String, ledger: Acknowledged, only: Set<RecordID>?, uid: UInt32, gid: UInt32) throws {
        let keep = { (id: RecordID) in only?.contains(id) ?? true }
        var input = ""
        for (id, text) in ledger.live where keep(id) { input += "live \(id) \(text)\n" }
        for id in ledger.shredded where keep(id) { input += "gone \(id)\n" }
        for (id, text) in ledger.undecided where keep(id) { input += "either \(id) \(text)\n" }
        let output = try Helper.run(["socket-check", "--socket", socket], as: (uid, gid), input: input)
        var done = false
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ").map(String.init)
            guard let verb = parts.first else { continue }
            switch verb {
            case "kept", "shredded", "certificate":
                guard parts.count == 2, let id = try? RecordID(parts[1]) else { continue }
                if verb == "kept" {
                    self.kept.insert(id)
                } else if verb == "shredded" {
                    self.shredded.insert(id)
                } else {
                    self.certified.insert(id)
                }
            case "audit": self.auditOK = parts.count == 3 && parts[1] == "true"
            case "done": done = true
            case "lost": self.problems.append("acknowledged record \(parts.dropFirst().joined(separator: " ")) is lost")
            case "changed": self.problems.append("acknowledged record \(parts[1]) came back with other content")
            case "resurrected":
                self.problems.append("shredded record \(parts.dropFirst().joined(separator: " ")) reads back")
            default: self.problems.append("socket-check: \(line)")
            }
        }
        if !done { self.problems.append("socket-check did not finish: \(output.suffix(500))") }
    }
}

extension Acknowledged {
    /// Settles shreds under way from what the daemon answered for them.
    mutating func settle(kept: Set<RecordID>, shredded: Set<RecordID>) {
        for (id, text) in self.undecided {
            if kept.contains(id) { self.live[id] = text } else if shredded.contains(id) { self.shredded.insert(id) }
        }
        self.undecided = self.undecided.filter { !kept.contains($0.key) && !shredded.contains($0.key) }
    }
}

/// The wrapped keys and sealed blobs of live records, read from the vault's files, and the search for them in
/// every file once the records are shredded (docs/ARCHITECTURE.md: no file keeps either).
struct ShredWitness {
    /// Per record: its wrapped key and its sealed blob.
    private var captured: [RecordID: [[UInt8]]] = [:]

    /// Whether the bytes of `id` were captured (and not yet searched for).
    func holds(_ id: RecordID) -> Bool { self.captured[id] != nil }
    /// How many shredded records' bytes were searched for.
    private(set) var searched = 0

    /// Reads the wrapped key and sealed blob of each of `ids` (live, daemon stopped).
    mutating func capture(_ ids: [RecordID], vault: TestVault) throws {
        guard !ids.isEmpty else { return }
        let slots = FileManager.default.contents(atPath: vault.data + "/keyslots").map { [UInt8]($0) } ?? []
        var configuration = GRDB.Configuration()
        configuration.readonly = true
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite", configuration: configuration)
        defer { try? index.close() }
        var segments: [Int: [UInt8]] = [:]
        for id in ids {
            guard
                let row = try index.read({
                    try Row.fetchOne(
                        $0, sql: "SELECT segment, offset, sealed_size FROM records WHERE id = ?",
                        arguments: [id.rawValue])
                }),
                let slot = SlotFinder.slot(of: id, in: slots)
            else { continue }
            let (segment, offset, length): (Int, Int, Int) = (row[0], row[1], row[2])
            if segments[segment] == nil {
                segments[segment] =
                    FileManager.default.contents(atPath: vault.data + "/segments/" + String(format: "%08d", segment))
                    .map { [UInt8]($0) } ?? []
            }
            guard let bytes = segments[segment], offset + length <= bytes.count else { continue }
            self.captured[id] = [
                Array(slots[(slot * 128 + 24)..<(slot * 128 + 96)]), Array(bytes[offset..<(offset + length)]),
            ]
        }
    }

    /// Searches every file under `folder` for any 16-byte window of the captured bytes of `ids`; returns what it
    /// found, and forgets them.
    mutating func search(for ids: Set<RecordID>, vault: TestVault, under folder: String) throws -> [String] {
        let wanted = ids.compactMap { id in self.captured.removeValue(forKey: id).map { (id, $0) } }
        guard !wanted.isEmpty else { return [] }
        self.searched += wanted.count
        // Every 8-byte word of every piece, by value: a 16-byte window anywhere in a file holds a whole word
        // at a file offset that is a multiple of 8, so the files are read 8 bytes at a time.
        var words: [UInt64: [(piece: Int, at: Int)]] = [:]
        let pieces = wanted.flatMap { id, pieces in pieces.map { (id, $0) } }
        for (number, piece) in pieces.enumerated() where piece.1.count >= 16 {
            for start in 0...(piece.1.count - 8) {
                words[ShredEvidence.word(piece.1, at: start), default: []].append((number, start))
            }
        }
        var findings: [String] = []
        let enumerator = FileManager.default.enumerator(atPath: folder)
        while let relative = enumerator?.nextObject() as? String {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: folder + "/" + relative, isDirectory: &isDirectory),
                !isDirectory.boolValue,
                let data = FileManager.default.contents(atPath: folder + "/" + relative), data.count >= 16
            else { continue }
            let bytes = [UInt8](data)
            var offset = 0
            while offset + 8 <= bytes.count {
                for candidate in words[ShredEvidence.word(bytes, at: offset)] ?? [] {
                    let piece = pieces[candidate.piece].1
                    // How far the match runs on either side of the word.
                    var before = 0
                    while before < candidate.at, before < offset,
                        piece[candidate.at - before - 1] == bytes[offset - before - 1]
                    { before += 1 }
                    var after = 0
                    while candidate.at + 8 + after < piece.count, offset + 8 + after < bytes.count,
                        piece[candidate.at + 8 + after] == bytes[offset + 8 + after]
                    {
                        after += 1
                    }
                    if before + 8 + after >= 16 {
                        let what = candidate.piece % 2 == 0 ? "wrapped key" : "ciphertext"
                        findings.append("\(relative) holds 16 bytes of shredded \(pieces[candidate.piece].0)'s \(what)")
                    }
                }
                offset += 8
            }
        }
        return Array(Set(findings)).sorted()
    }
}

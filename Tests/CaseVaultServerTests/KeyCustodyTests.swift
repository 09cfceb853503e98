import CaseVaultCore
import CaseVaultCrypto
import CaseVaultServer
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The passphrase key source through a real daemon and `casevaultctl`: sealed start, init with recovery
/// shares, seal, refused and throttled unseals, and unseal by shares after a SIGKILL.
@Suite(
    "Key custody: sealed start, init, unseal, seal", .enabled(if: isRoot, "acting as other uids needs root"),
    .serialized)
struct KeyCustodyTests {
    static let director = LifecycleOverSocketTests.director
    static let mediator = LifecycleOverSocketTests.mediator
    static let roles = """
        director = ["uid:4001"]
        mediator = ["uid:4002"]
        operator = ["uid:0"]
        """
    /// Argon2id at its cheapest, so the suite stays quick; `make bench` times the shipped cost.
    static let passphraseSource = """
        [keys]
        source = "passphrase"
        argon2_operations = 2
        argon2_memory_mib = 64
        """
    static let passphrase = "correct horse battery staple"

    static func ctl(_ arguments: [String], _ daemon: DaemonProcess, input: String? = nil) throws -> (
        Int32, String, String
    ) {
        try Peer.root.run(DaemonProcess.binary("casevaultctl"), arguments + ["--socket", daemon.socket], input: input)
    }

    /// Every route a sealed daemon must refuse, with made-up ids.
    static func guardedRoutes() -> [(String, String)] {
        let id = String(repeating: "ab", count: 16)
        let open: Set<String> = [
            "GET /v1/health", "GET /v1/admin/status", "GET /v1/metrics", "POST /v1/admin/init",
            "POST /v1/admin/unseal", "POST /v1/admin/seal",
        ]
        return API.routes.filter { !open.contains($0.description) }.map { route in
            let path = route.path
                .replacingOccurrences(of: "{case_id}", with: id).replacingOccurrences(of: "{record_id}", with: id)
                .replacingOccurrences(of: "{hold_id}", with: id).replacingOccurrences(of: "{certificate_id}", with: id)
                .replacingOccurrences(of: "{user}", with: "uid:4002")
            return (route.method.rawValue, path)
        }
    }

    static func expectSealed(_ daemon: DaemonProcess, sourceLocation: SourceLocation = #_sourceLocation) throws {
        for (method, path) in Self.guardedRoutes() {
            let reply = try Client.request(
                daemon, method, path, as: Self.director, body: method == "GET" || method == "DELETE" ? nil : "{}")
            #expect(
                reply.status == 503 && reply.problemType == "sealed", "\(method) \(path): \(reply.status)",
                sourceLocation: sourceLocation)
        }
    }

    @Test("sealed until init; seal, a refused and throttled passphrase, the right one; after SIGKILL, unseal by shares")
    func sealedLifecycle() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        var shares: [String] = []
        var caseID = ""
        var note = ""
        do {
            let daemon = try DaemonProcess(roles: Self.roles, extra: Self.passphraseSource, root: root)
            #expect(daemon.waitUntilServing(), "\(daemon.log)")
            let health = try daemon.call("GET", "/v1/health", expect: 200)
            #expect(health.json["sealed"] as? Bool == true)
            #expect(try daemon.call("GET", "/v1/admin/status", expect: 200).json["state"] as? String == "uninitialised")
            try Self.expectSealed(daemon)
            // The operator's metrics answer while sealed, and say so; the store's figures are left out, not
            // shown as zeros. Their unsigned entries must leave the audit chain intact (verified below).
            let metrics = String(decoding: try daemon.call("GET", "/v1/metrics", expect: 200).body, as: UTF8.self)
            #expect(
                metrics.contains("\ncasevault_sealed 1") && !metrics.contains("casevault_live_records"), "\(metrics)")
            // Nothing to unseal yet; a passphrase too short; too few shares.
            #expect(
                try daemon.call(
                    "POST", "/v1/admin/unseal", body: #"{"passphrase": "\#(Self.passphrase)"}"#, expect: 409
                ).problemType == "wrong-key-source")
            #expect(
                try daemon.call("POST", "/v1/admin/init", body: #"{"passphrase": "short"}"#, expect: 400).problemType
                    == "invalid-field")
            #expect(
                try daemon.call(
                    "POST", "/v1/admin/init", body: #"{"passphrase": "\#(Self.passphrase)", "shares": 1}"#, expect: 400
                ).problemType == "invalid-field")
            #expect(
                try daemon.call(
                    "POST", "/v1/admin/init", as: Self.director, body: #"{"passphrase": "\#(Self.passphrase)"}"#,
                    expect: 403
                ).problemType == "forbidden")
            #expect(!FileManager.default.fileExists(atPath: root + "/keys/root.key"), "a refused init made a key")

            let (code, output, errors) = try Self.ctl(
                ["init", "--stdin", "--shares", "5", "--threshold", "3"], daemon, input: Self.passphrase + "\n")
            #expect(code == 0, "\(errors)")
            shares = output.split(separator: "\n").map(String.init).filter { $0.hasPrefix("cvshare1-") }
            #expect(shares.count == 5, "\(output)")
            #expect(
                try daemon.call("POST", "/v1/admin/init", body: #"{"passphrase": "\#(Self.passphrase)"}"#, expect: 409)
                    .problemType == "already-initialised")
            // The wrapped key holds no root key in clear, and is no 32-byte key file.
            let wrapped = try Data(contentsOf: URL(fileURLWithPath: root + "/keys/root.key"))
            #expect(wrapped.count > 32 && wrapped.prefix(6) == Data("CVWK1\n".utf8))

            caseID = try LifecycleOverSocketTests.agreedCase(daemon)
            note = try daemon.file(caseID, Bodies.note, as: Self.mediator).string("record_id")
            let before = try daemon.call("GET", "/v1/records/\(note)", as: Self.mediator, expect: 200).body

            #expect(try Self.ctl(["seal"], daemon).0 == 0)
            try Self.expectSealed(daemon)
            #expect(try daemon.call("GET", "/v1/health", expect: 200).json["sealed"] as? Bool == true)

            // A wrong passphrase: refused after Argon2id, saying nothing else; at once again: throttled. (Not
            // "at once" in a sanitizer build, whose processes start slower than the throttle's window.)
            let wrong = try Self.ctl(["unseal", "--stdin"], daemon, input: "not the passphrase at all\n")
            #expect(wrong.0 == 1 && wrong.2.contains("does not open the root key"), "\(wrong)")
            if SlowBuild.factor == 1 {
                let hurried = try Self.ctl(["unseal", "--stdin"], daemon, input: Self.passphrase + "\n")
                #expect(hurried.0 == 1 && hurried.2.contains("unseal-throttled"), "\(hurried)")
                let again = try daemon.call(
                    "POST", "/v1/admin/unseal", body: #"{"passphrase": "not the passphrase either"}"#, expect: 429)
                #expect(again.problemType == "unseal-throttled")
                #expect(
                    again.retryAfter.flatMap(Int.init).map { (1...2).contains($0) } == true,
                    "Retry-After: \(String(describing: again.retryAfter))")
            }
            usleep(1_200_000)
            let right = try Self.ctl(["unseal", "--stdin"], daemon, input: Self.passphrase + "\n")
            #expect(right.0 == 0, "\(right)")
            #expect(try daemon.call("GET", "/v1/records/\(note)", as: Self.mediator, expect: 200).body == before)
            #expect(
                try Self.ctl(["unseal", "--stdin"], daemon, input: "whatever it is now\n").0 == 0,
                "unsealing an unsealed vault is a no-op")
            daemon.crash()
        }
        // After a crash: sealed again; shares one at a time, a damaged one refused without losing count.
        let daemon = try DaemonProcess(roles: Self.roles, extra: Self.passphraseSource, root: root)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        try Self.expectSealed(daemon)
        let two = try Self.ctl(["unseal", "--share", "--stdin"], daemon, input: shares[4] + "\n" + shares[1] + "\n")
        #expect(two.0 == 2 && two.1.contains("2 of 3") && two.1.contains("still sealed"), "\(two)")
        #expect(
            (try daemon.call("GET", "/v1/admin/status", expect: 200).json["keys"] as? [String: Any])?["shares"] as? Int
                == 2)
        var damaged = Array(shares[2].utf8)
        damaged[20] = damaged[20] == UInt8(ascii: "a") ? UInt8(ascii: "b") : UInt8(ascii: "a")
        let bad = try Self.ctl(
            ["unseal", "--share", "--stdin"], daemon, input: String(decoding: damaged, as: UTF8.self) + "\n")
        #expect(bad.0 == 1 && bad.2.contains("damaged"), "\(bad)")
        try Self.expectSealed(daemon)
        let third = try Self.ctl(["unseal", "--share", "--stdin"], daemon, input: shares[2] + "\n")
        #expect(third.0 == 0 && third.1.contains("unsealed"), "\(third)")
        try daemon.call("GET", "/v1/records/\(note)", as: Self.mediator, expect: 200)
        try daemon.file(caseID, Bodies.note, as: Self.mediator)
        let verify = try CLITests.ctl(["audit", "verify", "--socket", daemon.socket], as: .root)
        #expect(verify.0 == 0 && verify.1.contains("intact"), "\(verify.1)")
    }

    @Test("shares of another vault do not open this one, and count as a refusal")
    func foreignShares() throws {
        let other = try DaemonProcess(roles: Self.roles, extra: Self.passphraseSource)
        #expect(other.waitUntilServing(), "\(other.log)")
        let made = try Self.ctl(
            ["init", "--stdin", "--shares", "2", "--threshold", "2"], other, input: Self.passphrase + "\n")
        let foreign = made.1.split(separator: "\n").map(String.init).filter { $0.hasPrefix("cvshare1-") }
        #expect(foreign.count == 2)

        let daemon = try DaemonProcess(roles: Self.roles, extra: Self.passphraseSource)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        #expect(try Self.ctl(["init", "--stdin"], daemon, input: Self.passphrase + "\n").0 == 0)
        #expect(try Self.ctl(["seal"], daemon).0 == 0)
        let refused = try Self.ctl(
            ["unseal", "--share", "--stdin"], daemon, input: foreign.joined(separator: "\n") + "\n")
        #expect(refused.0 == 1 && refused.2.contains("does not open this data directory"), "\(refused)")
        // Counted as a refusal: the right passphrase at once is throttled (not "at once" in a sanitizer build).
        if SlowBuild.factor == 1 {
            #expect(
                try daemon.call(
                    "POST", "/v1/admin/unseal", body: #"{"passphrase": "\#(Self.passphrase)"}"#, expect: 429
                ).problemType == "unseal-throttled")
        }
        try Self.expectSealed(daemon)
    }

    @Test(
        "a passphrase with quotes, backslashes, a tab and letters beyond ASCII goes through casevaultctl whole: init, seal, unseal"
    )
    func passphraseEscaping() throws {
        let daemon = try DaemonProcess(roles: Self.roles, extra: Self.passphraseSource)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let passphrase = "say \"open\" \\ sésame\tnow\r"
        let made = try Self.ctl(
            ["init", "--stdin", "--shares", "2", "--threshold", "2"], daemon, input: passphrase + "\n")
        #expect(made.0 == 0, "\(made)")
        let shares = made.1.split(separator: "\n").map(String.init).filter { $0.hasPrefix("cvshare1-") }
        #expect(try Self.ctl(["seal"], daemon).0 == 0)
        // The same text over the socket's JSON, escaped by hand: the carriage return at the end of a line is
        // the line's, not the passphrase's.
        let json = #"{"passphrase": "say \"open\" \\ sésame\tnow"}"#
        try daemon.call("POST", "/v1/admin/unseal", body: json, expect: 200)
        #expect(try Self.ctl(["seal"], daemon).0 == 0)
        // Shares typed with spaces and blank lines between them.
        let spaced = try Self.ctl(
            ["unseal", "--share", "--stdin"], daemon,
            input: "\n  " + shares[0].prefix(30) + " " + shares[0].dropFirst(30) + "\n\n" + shares[1] + "\n")
        #expect(spaced.0 == 0 && spaced.1.contains("unsealed"), "\(spaced)")
        #expect(try Self.ctl(["seal"], daemon).0 == 0)
        let unsealed = try Self.ctl(["unseal", "--stdin"], daemon, input: passphrase + "\n")
        #expect(unsealed.0 == 0, "\(unsealed)")
        let empty = try Self.ctl(["unseal", "--stdin"], daemon, input: "\n")
        #expect(empty.0 != 0 && empty.2.contains("empty"), "\(empty)")
        // A member name spelt with an escape is refused before its value is parsed.
        try daemon.call("POST", "/v1/admin/seal", expect: 200)
        let escaped = #"{"pass\u0070hrase": "say \"open\" \\ sésame\tnow"}"#
        #expect(
            try daemon.call("POST", "/v1/admin/unseal", body: escaped, expect: 400).problemType == "malformed-content")
        // Bytes that are not UTF-8 cannot be sent as a JSON string: casevaultctl says so and sends nothing.
        let latin = try Peer.root.run(
            "/bin/sh",
            [
                "-c",
                "printf 'caf\\351 au lait ok\\n' | \(DaemonProcess.binary("casevaultctl")) unseal --stdin --socket \(daemon.socket)",
            ], input: nil
        )
        #expect(latin.0 == 64 && latin.2.contains("not valid UTF-8"), "\(latin)")
    }

    /// How many times each of `needles` lies in the readable memory of process `pid` outside the regions
    /// the kernel reports as locked (libsodium's `sodium_malloc` regions are mlock'ed), from /proc/PID/smaps
    /// and mem; each region is read once.
    static func unlockedCopies(of needles: [[UInt8]], in pid: Int32) throws -> [Int] {
        // Read to its end: a /proc file reports no size, so a reader that trusts the size stops short.
        let handle = try #require(FileHandle(forReadingAtPath: "/proc/\(pid)/smaps"))
        let smaps = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        try handle.close()
        var regions: [(start: UInt64, end: UInt64, readable: Bool, locked: Bool)] = []
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), fields.count >= 2, fields[1].count == 4 {
                let bounds = range.split(separator: "-")
                regions.append(
                    (
                        UInt64(bounds[0], radix: 16) ?? 0, UInt64(bounds[1], radix: 16) ?? 0, fields[1].hasPrefix("r"),
                        false
                    ))
            } else if line.hasPrefix("Locked:"), fields.count >= 2, (Int(fields[1]) ?? 0) > 0, !regions.isEmpty {
                regions[regions.count - 1].locked = true
            }
        }
        let memory = open("/proc/\(pid)/mem", O_RDONLY)
        guard memory >= 0 else { throw CocoaError(.fileReadNoPermission) }
        defer { close(memory) }
        var found = [Int](repeating: 0, count: needles.count)
        // A region is read in pieces that overlap by a needle's length, so that a build with
        // AddressSanitizer (whose shadow reservations are terabytes, nearly all of it never touched) is
        // scanned too; a region past 64 GiB is such a reservation, not the daemon's memory, and is skipped.
        let piece: UInt64 = 64 << 20
        let overlap = UInt64(needles.map(\.count).max() ?? 1) - 1
        var pieces: [(start: UInt64, length: Int)] = []
        for region in regions where region.readable && !region.locked && region.end - region.start <= 64 << 30 {
            var start = region.start
            while start < region.end {
                let end = min(region.end, start + piece + overlap)
                pieces.append((start, Int(end - start)))
                start += piece
            }
        }
        var bytes = [UInt8](repeating: 0, count: Int(piece + overlap))
        for region in pieces {
            let count = bytes.withUnsafeMutableBytes {
                pread(memory, $0.baseAddress, region.length, off_t(Int64(bitPattern: region.start)))
            }
            guard count > 0 else { continue }
            bytes.withUnsafeBytes { haystack in
                for (number, needle) in needles.enumerated() {
                    needle.withUnsafeBytes { wanted in
                        // memchr for the first byte, memcmp for the rest: C's speed, not a debug build's.
                        var offset = 0
                        while offset + wanted.count <= count,
                            let hit = memchr(
                                haystack.baseAddress! + offset, Int32(wanted[0]), count - offset - wanted.count + 1)
                        {
                            if memcmp(hit, wanted.baseAddress!, wanted.count) == 0 { found[number] += 1 }
                            offset = UnsafeRawPointer(hit) - haystack.baseAddress! + 1
                        }
                    }
                }
            }
        }
        return found
    }

    @Test(
        "after init, seal, unseal by shares and unseal by passphrase, no copy of the passphrase or of any share lies in the daemon's memory outside locked memory"
    )
    func secretsLeaveNoCopy() throws {
        let daemon = try DaemonProcess(roles: Self.roles, extra: Self.passphraseSource)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let passphrase = "scan for me " + Hex.encode(Random.bytes(count: 8))
        let made = try Self.ctl(
            ["init", "--stdin", "--shares", "3", "--threshold", "2"], daemon, input: passphrase + "\n")
        let shares = made.1.split(separator: "\n").map(String.init).filter { $0.hasPrefix("cvshare1-") }
        #expect(shares.count == 3, "\(made)")
        #expect(try Self.ctl(["seal"], daemon).0 == 0)
        #expect(
            try Self.ctl(["unseal", "--share", "--stdin"], daemon, input: shares[0] + "\n" + shares[2] + "\n").0 == 0)
        #expect(try Self.ctl(["seal"], daemon).0 == 0)
        #expect(try Self.ctl(["unseal", "--stdin"], daemon, input: passphrase + "\n").0 == 0)
        let pid = daemon.process.processIdentifier
        var needles: [(String, [UInt8])] = [
            ("the socket's path", Array(daemon.socket.utf8)), ("the passphrase", Array(passphrase.utf8)),
        ]
        for (number, share) in shares.enumerated() {
            needles.append(("share \(number + 1)'s text", Array(share.utf8)))
            needles.append(
                ("share \(number + 1)'s values", try #require(Hex.decode(String(share.split(separator: "-")[3])))))
        }
        let copies = try Self.unlockedCopies(of: needles.map(\.1), in: pid)
        // The scan sees the daemon's memory: the socket's path is there.
        #expect(copies[0] > 0, "the scan found not even the socket's path")
        for (index, (name, _)) in needles.enumerated().dropFirst() {
            #expect(copies[index] == 0, "\(name): \(copies[index]) copies outside locked memory")
        }
    }

    @Test("the unseal throttle outlives a restart: refused three times, killed, restarted, still throttled")
    func throttleSurvivesRestart() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            let daemon = try DaemonProcess(roles: Self.roles, extra: Self.passphraseSource, root: root)
            #expect(daemon.waitUntilServing(), "\(daemon.log)")
            #expect(try Self.ctl(["init", "--stdin"], daemon, input: Self.passphrase + "\n").0 == 0)
            #expect(try Self.ctl(["seal"], daemon).0 == 0)
            // Three refusals, each after the last one's delay (1 s, then 2 s): the next waits 4 s.
            for wait: UInt32 in [0, 1_100_000, 2_100_000] {
                usleep(wait)
                let wrong = try daemon.call(
                    "POST", "/v1/admin/unseal", body: #"{"passphrase": "not the passphrase at all"}"#, expect: 403)
                #expect(wrong.problemType == "unseal-refused")
            }
            daemon.crash()
        }
        let restarted = try DaemonProcess(roles: Self.roles, extra: Self.passphraseSource, root: root)
        #expect(restarted.waitUntilServing(), "\(restarted.log)")
        let hurried = try restarted.call(
            "POST", "/v1/admin/unseal", body: #"{"passphrase": "\#(Self.passphrase)"}"#, expect: 429)
        #expect(hurried.problemType == "unseal-throttled")
        let wait = hurried.retryAfter.flatMap(Int.init) ?? 0
        #expect((1...4).contains(wait), "Retry-After: \(String(describing: hurried.retryAfter))")
        usleep(UInt32(wait) * 1_000_000 + 200_000)
        #expect(try Self.ctl(["unseal", "--stdin"], restarted, input: Self.passphrase + "\n").0 == 0)
        #expect(
            !FileManager.default.fileExists(atPath: root + "/keys/root.key.throttle"), "an unseal clears the throttle")
    }

    @Test("casevaultctl sends a passphrase only to root or the socket directory's owner, never to a stranger's socket")
    func secretsGoOnlyToTheDaemon() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let stranger: UInt32 = 65534
        // A stranger listens in a directory of its own; the socket is then moved into a directory only root
        // may write, as if the stranger had got it there: its peer is still the stranger.
        let own = root + "/stranger"
        let trusted = root + "/run"
        try FileManager.default.createDirectory(
            atPath: own, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        try FileManager.default.createDirectory(
            atPath: trusted, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        #expect(chown(own, stranger, stranger) == 0 && chmod(root, 0o755) == 0)
        let listener = Peer(uid: stranger, gid: stranger).process(
            DaemonProcess.binary("casevault-torture"), ["listen", own + "/s.sock", "--record", own + "/received"]
        )
        try listener.run()
        defer { if listener.isRunning { listener.terminate() } }
        var waited = 0
        while !FileManager.default.fileExists(atPath: own + "/received") && waited < 100 {
            usleep(50_000)
            waited += 1
        }
        #expect(rename(own + "/s.sock", trusted + "/casevault.sock") == 0)

        let refused = try Peer.root.run(
            DaemonProcess.binary("casevaultctl"), ["unseal", "--stdin", "--socket", trusted + "/casevault.sock"],
            input: Self.passphrase + "\n"
        )
        #expect(
            refused.0 == 69 && refused.2.contains("held by uid \(stranger)") && refused.2.contains("not sent"),
            "\(refused)")
        let shared = root + "/shared"
        try FileManager.default.createDirectory(
            atPath: shared, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o777])
        #expect(chmod(shared, 0o1777) == 0 && rename(trusted + "/casevault.sock", shared + "/casevault.sock") == 0)
        let open = try Peer.root.run(
            DaemonProcess.binary("casevaultctl"), ["init", "--stdin", "--socket", shared + "/casevault.sock"],
            input: Self.passphrase + "\n"
        )
        #expect(open.0 == 69 && open.2.contains("may be written by its group or others"), "\(open)")
        listener.waitUntilExit()
        let received = FileManager.default.contents(atPath: own + "/received") ?? Data("missing".utf8)
        #expect(received.isEmpty, "the stranger received \(received.count) bytes")
    }

    @Test(
        "a passphrase written with JSON escapes is the same passphrase: init with escapes, unseal with the plain characters"
    )
    func escapedPassphrase() throws {
        let daemon = try DaemonProcess(roles: Self.roles, extra: Self.passphraseSource)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let escaped = #"{"passphrase": "caf\u00e9 \"horse\" \ud83d\ude00 battery\tstaple"}"#
        try daemon.call("POST", "/v1/admin/init", body: escaped, expect: 201)
        #expect(try Self.ctl(["seal"], daemon).0 == 0)
        // Not a string, or too short: refused as before.
        #expect(
            try daemon.call("POST", "/v1/admin/unseal", body: #"{"passphrase": 12}"#, expect: 400).problemType
                == "invalid-field")
        #expect(
            try daemon.call("POST", "/v1/admin/unseal", body: #"{"passphrase": "caf\u00e9"}"#, expect: 400).problemType
                == "invalid-field")
        let plain = try Self.ctl(["unseal", "--stdin"], daemon, input: "café \"horse\" 😀 battery\tstaple\n")
        #expect(plain.0 == 0, "\(plain)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("unsealed keys sit in locked memory in a process that cannot dump core; a fixed key source cannot be sealed")
    func lockedMemoryAndFixedSource() throws {
        let daemon = try DaemonProcess(roles: Self.roles, extra: Self.passphraseSource)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        #expect(try Self.ctl(["init", "--stdin"], daemon, input: Self.passphrase + "\n").0 == 0)
        let status = try String(contentsOfFile: "/proc/\(daemon.process.processIdentifier)/status", encoding: .utf8)
        let locked = status.split(separator: "\n").first { $0.hasPrefix("VmLck:") }.flatMap { line in
            line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }
        }
        // The sanitizers' runtimes make mlock a no-op (their shadow memory would be locked too).
        if SlowBuild.sanitizer == nil {
            #expect((locked ?? 0) > 0, "the daemon locks no memory: \(String(describing: locked))")
        }
        // No core file can carry them: the core size limit is 0, soft and hard.
        let limits = try String(contentsOfFile: "/proc/\(daemon.process.processIdentifier)/limits", encoding: .utf8)
        let core = limits.split(separator: "\n").first { $0.hasPrefix("Max core file size") }.map {
            $0.dropFirst("Max core file size".count).split(separator: " ", omittingEmptySubsequences: true).prefix(2)
                .map(String.init)
        }
        #expect(core == ["0", "0"], "the daemon may dump core: \(String(describing: core))")

        let fixed = try DaemonProcess(roles: Self.roles)
        #expect(fixed.waitUntilServing(), "\(fixed.log)")
        #expect(try fixed.call("POST", "/v1/admin/seal", expect: 409).problemType == "wrong-key-source")
        #expect(try fixed.call("GET", "/v1/health", expect: 200).json["sealed"] as? Bool == false)
        // The refused seal took nothing away: the audit signer stays, and the shutdown is signed.
        _ = fixed.stop()
        let entries = AuditOverSocketTests.entries(fixed)
        let refusal = entries.lastIndex { $0["kind"] as? String == "result" && $0["status"] as? Int == 409 }
        #expect(refusal != nil)
        #expect(
            !entries.contains { $0["kind"] as? String == "checkpoint" && $0["reason"] as? String == "seal" },
            "a refused seal signed a last checkpoint and dropped the signer")
        #expect(entries.last?["kind"] as? String == "checkpoint" && entries.last?["reason"] as? String == "shutdown")
    }

    @Test(
        "casevaultctl rotate: every slot under a new epoch in steps, the old one retired, records intact; refused to others"
    )
    func rotateOverTheSocket() throws {
        let daemon = try DaemonProcess(roles: Self.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let notes = try (0..<5).map { _ in try daemon.file(caseID, Bodies.note, as: Self.mediator).string("record_id") }
        let before = try notes.map { try daemon.call("GET", "/v1/records/\($0)", as: Self.mediator, expect: 200).body }
        let first = try Self.ctl(["rotate"], daemon)
        #expect(first.0 == 0 && first.1.contains("epoch      2") && first.1.contains("retired    1"), "\(first)")
        let (code, output, errors) = try Self.ctl(["rotate", "--json", "--step", "3"], daemon)
        #expect(code == 0, "\(errors)")
        let report = (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any]
        #expect(report?["epoch"] as? Int == 3 && report?["retired"] as? [Int] == [2], "\(output)")
        let status = try daemon.call("GET", "/v1/admin/status", expect: 200).json["keys"] as? [String: Any]
        #expect(
            status?["epoch"] as? Int == 3 && status?["active_epochs"] as? [Int] == [3], "\(String(describing: status))")
        for (note, body) in zip(notes, before) {
            #expect(try daemon.call("GET", "/v1/records/\(note)", as: Self.mediator, expect: 200).body == body)
        }
        #expect(
            try daemon.call("POST", "/v1/admin/rotate", as: Self.director, body: "{}", expect: 403).problemType
                == "forbidden")
        #expect(
            try daemon.call("POST", "/v1/admin/rotate", body: #"{"limit": 0}"#, expect: 400).problemType
                == "invalid-field")
    }
}

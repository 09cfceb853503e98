import CaseVaultCore
import CaseVaultCrypto
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The audit log of a real daemon: what it records, how it fails closed, and `casevaultctl audit verify`
/// online and offline.
@Suite("Audit over the socket", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct AuditOverSocketTests {
    static let director = LifecycleOverSocketTests.director
    static let mediator = LifecycleOverSocketTests.mediator
    static let roles = """
        director = ["uid:4001"]
        mediator = ["uid:4002"]
        operator = ["uid:0"]
        """

    static func entries(_ daemon: DaemonProcess) -> [[String: Any]] {
        let text = (try? String(contentsOfFile: daemon.root + "/data/audit/log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard let json = line.firstIndex(of: "{") else { return nil }
            return (try? JSONSerialization.jsonObject(with: Data(line[json...].utf8))) as? [String: Any]
        }
    }

    static func chattr(_ flag: String, _ path: String) throws -> Bool {
        try Peer.root.run("/usr/bin/chattr", [flag, path]).0 == 0
    }

    @Test("allowed and refused requests are recorded with uid, roles, route, ids and result, never content")
    func entriesSayWhoDidWhat() throws {
        let daemon = try DaemonProcess(roles: Self.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let note = try daemon.file(caseID, Bodies.note, as: Self.mediator).string("record_id")
        try daemon.call("GET", "/v1/records/\(note)", as: Self.director, expect: 403)
        try daemon.call("GET", "/v1/no-such-route", as: Self.director, expect: 404)
        _ = daemon.stop()

        let entries = Self.entries(daemon)
        let requests = entries.filter { $0["kind"] as? String == "request" }
        let results = Dictionary(
            entries.filter { $0["kind"] as? String == "result" }.map { ($0["request"] as? Int ?? -1, $0) },
            uniquingKeysWith: { first, _ in first }
        )
        // The note's filing: who, what, where, and the id it created.
        let filing = try #require(
            requests.last { ($0["action"] as? String) == "POST /v1/cases/{case_id}/records" }
        )
        #expect(filing["uid"] as? Int == 4002 && filing["roles"] as? [String] == ["mediator"])
        #expect((filing["ids"] as? [String: String])?["case_id"] == caseID)
        let filed = try #require(results[filing["request"] as? Int ?? -2])
        #expect(filed["status"] as? Int == 201)
        #expect((filed["ids"] as? [String: String])?["record_id"] == note)
        // The director may not read a session note: refused, and recorded as refused.
        let read = try #require(requests.last { ($0["action"] as? String) == "GET /v1/records/{record_id}" })
        #expect(read["uid"] as? Int == 4001 && (read["ids"] as? [String: String])?["record_id"] == note)
        let refusal = try #require(results[read["request"] as? Int ?? -2])
        #expect(refusal["status"] as? Int == 403 && refusal["problem"] as? String == "forbidden")
        // No route: one entry, without the path the client typed.
        let unrouted = try #require(entries.last { $0["kind"] as? String == "refused" })
        #expect(unrouted["status"] as? Int == 404 && unrouted["action"] as? String == "unrouted")
        // Every request has its result, the shutdown was signed, and nothing of the content is there.
        #expect(requests.allSatisfy { results[$0["request"] as? Int ?? -1] != nil })
        #expect(entries.last?["kind"] as? String == "checkpoint" && entries.last?["reason"] as? String == "shutdown")
        let raw = try String(contentsOfFile: daemon.root + "/data/audit/log", encoding: .utf8)
        #expect(!raw.contains(LeakCheck.marker) && !raw.contains("no-such-route"))
    }

    @Test(
        "an unwritable audit log: writes fail with 503 in under a second and change nothing; health and status say why")
    func unwritableLogFailsClosed() throws {
        let daemon = try DaemonProcess(roles: Self.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let path = daemon.root + "/data/audit/log"
        guard try Self.chattr("+i", path) else {
            Issue.record(
                "this filesystem does not take the immutable flag; the test cannot make the audit log unwritable")
            return
        }
        defer { _ = try? Self.chattr("-i", path) }

        let start = ContinuousClock.now
        let refused = try daemon.file(caseID, Bodies.note, as: Self.mediator, expect: 503)
        let elapsed = ContinuousClock.now - start
        #expect(refused.problemType == "audit-unavailable", "\(String(decoding: refused.body, as: UTF8.self))")
        #expect(elapsed < .seconds(1), "the refusal took \(elapsed)")
        #expect(refused.retryAfter == "1", "a client may try again shortly")
        try daemon.call("POST", "/v1/cases", as: Self.director, body: Bodies.openCase(mediators: [4002]), expect: 503)

        let health = try daemon.call("GET", "/v1/health", expect: 503)
        #expect(health.json["status"] as? String == "audit-unavailable")
        #expect((health.json["reason"] as? String)?.contains("audit log cannot be written") == true, "\(health.json)")
        let status = try daemon.call("GET", "/v1/admin/status", expect: 200)
        #expect(status.json["state"] as? String == "audit-unavailable")
        #expect((status.json["audit"] as? [String: Any])?["writable"] as? Bool == false)

        // Writable again: the note was never filed, and the daemon serves and audits as before.
        #expect(try Self.chattr("-i", path))
        try daemon.call("GET", "/v1/health", expect: 200)
        #expect(try daemon.records(caseID, type: "session_note", as: Self.mediator).isEmpty, "the refused note exists")
        try daemon.file(caseID, Bodies.note, as: Self.mediator)
        let (code, text) = try CLITests.ctl(["audit", "verify", "--socket", daemon.socket], as: .root)
        #expect(code == 0 && text.contains("intact"), "\(text)")
    }

    @Test(
        "audit verify offline on a copy: intact after a restart and a SIGKILL; a changed byte is named; the key is pinned"
    )
    func verifyOffline() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        var publicKey = ""
        do {
            let daemon = try DaemonProcess(roles: Self.roles, root: root)
            #expect(daemon.waitUntilServing(), "\(daemon.log)")
            _ = try LifecycleOverSocketTests.agreedCase(daemon)
            let (code, text) = try CLITests.ctl(["audit", "verify", "--json", "--socket", daemon.socket], as: .root)
            #expect(code == 0, "\(text)")
            let report = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
            publicKey = report?["public_key"] as? String ?? ""
            #expect(publicKey.count == 64)
            #expect(try CLITests.ctl(["audit", "verify", "--socket", daemon.socket], as: Self.mediator).0 == 77)
            _ = daemon.stop()
        }
        do {
            // A crash: no shutdown checkpoint; the restarted daemon carries the chain on.
            let daemon = try DaemonProcess(roles: Self.roles, root: root)
            #expect(daemon.waitUntilServing(), "\(daemon.log)")
            _ = try daemon.openCase(by: Self.director, mediators: [])
            daemon.crash()
        }
        let data = root + "/data"
        let (code, text) = try CLITests.ctl(
            ["audit", "verify", "--offline", "--data-dir", data, "--pubkey", publicKey], as: .root)
        #expect(code == 0 && text.contains("intact"), "\(text)")

        let copy = root + "/copy"
        try FileManager.default.createDirectory(atPath: copy + "/audit", withIntermediateDirectories: true)
        var log = try [UInt8](Data(contentsOf: URL(fileURLWithPath: data + "/audit/log")))
        try FileManager.default.copyItem(atPath: data + "/audit/head", toPath: copy + "/audit/head")
        // Change one byte in the fifth entry: it is the first bad one.
        let lineStarts = [0] + log.indices.filter { log[$0] == UInt8(ascii: "\n") }.map { $0 + 1 }
        log[lineStarts[4] + 80] ^= 0x20
        try Data(log).write(to: URL(fileURLWithPath: copy + "/audit/log"))
        let (badCode, badText) = try CLITests.ctl(
            ["audit", "verify", "--offline", "--data-dir", copy, "--config", root + "/casevault.toml"], as: .root)
        #expect(
            badCode == 1 && badText.contains("BROKEN") && badText.contains("first bad entry  5 (log, line 5"),
            "\(badText)")

        // The intact log against another key: refused.
        let otherKey = String(repeating: "ab", count: 32)
        #expect(
            try CLITests.ctl(["audit", "verify", "--offline", "--data-dir", data, "--pubkey", otherKey], as: .root).0
                == 1)
        #expect(try CLITests.ctl(["audit", "verify", "--offline", "--data-dir", root + "/nowhere"], as: .root).0 == 66)
        #expect(try CLITests.ctl(["audit", "verify", "--pubkey", "zz"], as: .root).0 == 64)
    }

    @Test("audit tail: the newest entries, oldest first, online and offline; never content; bad counts refused")
    func tail() throws {
        // Root holds three roles here, so that its roles column is wider than a fixed one would be.
        let daemon = try DaemonProcess(roles: Self.roles + "\nintake = [\"uid:0\"]\nstatistician = [\"uid:0\"]")
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try daemon.openCase(by: Self.director, mediators: [])
        let reply = try daemon.call("GET", "/v1/audit/entries?last=4", as: Self.director, expect: 200)
        let entries = reply.json["entries"] as? [[String: Any]] ?? []
        #expect(entries.count == 4, "\(reply.json)")
        let seqs = entries.compactMap { $0["seq"] as? Int }
        #expect(seqs == Array(seqs.sorted()) && Set(seqs).count == 4, "oldest first: \(seqs)")
        // The newest is this very request, written before its route ran; the case it follows was opened.
        #expect(
            entries.last?["kind"] as? String == "request"
                && entries.last?["action"] as? String == "GET /v1/audit/entries")
        #expect(
            entries.contains {
                ($0["ids"] as? [String: String])?["case_id"] == caseID && $0["kind"] as? String == "result"
            })
        #expect(!String(decoding: reply.body, as: UTF8.self).contains(LeakCheck.marker), "an audit entry holds content")

        let (code, text) = try CLITests.ctl(["audit", "tail", "-n", "3", "--socket", daemon.socket], as: .root)
        #expect(
            code == 0 && text.split(separator: "\n").count == 3 && text.contains("GET /v1/audit/entries"), "\(text)")
        // Columns as wide as their widest cell: the caller's roles are never cut short.
        let roles = (try daemon.call("GET", "/v1/whoami", as: .root, expect: 200).json["roles"] as? [String] ?? [])
            .joined(separator: ",")
        #expect(!roles.isEmpty && text.contains("uid 0 (\(roles))"), "\(text)")
        #expect(try CLITests.ctl(["audit", "tail", "--socket", daemon.socket], as: Self.mediator).0 == 77)
        #expect(try CLITests.ctl(["audit", "tail", "-n", "0", "--socket", daemon.socket], as: .root).0 == 64)
        for query in ["last=0", "last=1001", "last=ten", "first=3"] {
            #expect(
                try daemon.call("GET", "/v1/audit/entries?\(query)", as: Self.director, expect: 400).problemType
                    == "invalid-field")
        }
        _ = daemon.stop()

        // Offline, after the daemon stopped: its last entry is the shutdown checkpoint.
        let (offlineCode, offline) = try CLITests.ctl(
            ["audit", "tail", "--offline", "--json", "-n", "2", "--data-dir", daemon.root + "/data"], as: .root)
        let document = (try? JSONSerialization.jsonObject(with: Data(offline.utf8))) as? [String: Any]
        let last = (document?["entries"] as? [[String: Any]])?.last
        #expect(
            offlineCode == 0 && last?["kind"] as? String == "checkpoint" && last?["reason"] as? String == "shutdown",
            "\(offline)")
        #expect(
            try CLITests.ctl(["audit", "tail", "--offline", "--data-dir", daemon.root + "/nowhere"], as: .root).0 == 66)
    }

    /// The log's entries as lines, each with its newline, and where they end (zero fill follows).
    static func lines(_ path: String) throws -> (lines: [[UInt8]], end: Int) {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let end = bytes.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0
        let lines = bytes[..<end].split(separator: UInt8(ascii: "\n")).map { Array($0) + [UInt8(ascii: "\n")] }
        return (lines, end)
    }

    /// An entry after `previous` (a line of the log) with a correctly computed hash: what anyone who can
    /// write the file can make. `mac` is what goes in the MAC's place.
    static func forged(after previous: [UInt8], json: String, mac: String) -> [UInt8] {
        let previousHash = Hex.decode(String(decoding: previous.prefix(64), as: UTF8.self))!
        let hash = Hash.blake2b(previousHash + Array(json.utf8), length: 32)
        return Array((Hex.encode(hash) + " " + mac + " " + json + "\n").utf8)
    }

    /// A daemon on `root`, serving, with one agreed case filed.
    static func servingWithCase(_ root: String) throws -> DaemonProcess {
        let daemon = try DaemonProcess(roles: Self.roles, root: root)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        _ = try LifecycleOverSocketTests.agreedCase(daemon)
        return daemon
    }

    /// Starts a daemon on `root` that must refuse to start: its exit status and log.
    static func refusedStart(_ root: String) throws -> (Int32, String) {
        try? FileManager.default.removeItem(atPath: root + "/daemon.log")
        let daemon = try DaemonProcess(roles: Self.roles, root: root)
        for _ in 0..<300 where daemon.process.isRunning {
            usleep(100_000)
        }
        daemon.crash()
        return (daemon.process.terminationStatus, daemon.log)
    }

    @Test(
        "a log forged, cut or deleted while the daemon was stopped stops the next start (exit 4) until a break is accepted, which the log records"
    )
    func tamperedLogIsRefused() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            let daemon = try Self.servingWithCase(root)
            #expect(daemon.stop() == 0, "\(daemon.log)")
        }
        let path = root + "/data/audit/log"
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        let (lines, end) = try Self.lines(path)
        let last = try #require(lines.last)
        let seq = lines.count
        func write(_ bytes: [UInt8]) throws {
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        }

        // Appended after a clean stop: a deletion by an invented uid, with a success, hashes all correct.
        let request =
            #"{"action":"DELETE /v1/records/{record_id}","kind":"request","request":7,"roles":["director"],"seq":\#(seq + 1),"time":1,"uid":4242}"#
        let first = Self.forged(after: last, json: request, mac: "-")
        let result = #"{"kind":"result","request":7,"seq":\#(seq + 2),"status":200,"time":2}"#
        try write(Array(original.prefix(end)) + first + Self.forged(after: first, json: result, mac: "-"))
        let (unkeyedStatus, unkeyedLog) = try Self.refusedStart(root)
        #expect(unkeyedStatus == 4 && unkeyedLog.contains("does not match what the index remembers"), "\(unkeyedLog)")
        #expect(unkeyedLog.contains("entry \(seq + 2)") && unkeyedLog.contains("forged"), "\(unkeyedLog)")
        // Without a MAC, a result naming no request, or a refusal naming a route, is a forgery too.
        for json in [
            #"{"kind":"result","seq":\#(seq + 1),"status":200,"time":2}"#,
            #"{"action":"DELETE /v1/records/{record_id}","kind":"refused","seq":\#(seq + 1),"status":200,"time":2,"uid":4242}"#,
            #"{"kind":"result","request":1,"seq":\#(seq + 1),"status":200,"time":2}"#,
        ] {
            try write(Array(original.prefix(end)) + Self.forged(after: last, json: json, mac: "-"))
            let (status, log) = try Self.refusedStart(root)
            #expect(status == 4 && log.contains("forged"), "\(json): \(log)")
        }
        // The same with a made-up MAC.
        try write(
            Array(original.prefix(end))
                + Self.forged(after: last, json: request, mac: String(repeating: "5a", count: 32)))
        let (macStatus, macLog) = try Self.refusedStart(root)
        #expect(macStatus == 4 && macLog.contains("MAC does not verify"), "\(macLog)")
        // The offline check (with the root key) names the forged entry too.
        let (code, text) = try CLITests.ctl(
            ["audit", "verify", "--offline", "--config", root + "/casevault.toml"], as: .root)
        #expect(code == 1 && text.contains("first bad entry  \(seq + 1)") && text.contains("MAC"), "\(text)")

        // Cut short: the last two entries gone (the file as it was, zero fill and all, minus them).
        let cut = Array(lines.dropLast(2).joined())
        try write(cut + [UInt8](repeating: 0, count: original.count - cut.count))
        let (cutStatus, cutLog) = try Self.refusedStart(root)
        #expect(
            cutStatus == 4 && cutLog.contains("the log ends at entry \(seq - 2)") && cutLog.contains("cut away"),
            "\(cutLog)")

        // Deleted: the daemon would make a fresh log, and finds the index remembers more.
        try FileManager.default.removeItem(atPath: root + "/data/audit")
        let (deletedStatus, deletedLog) = try Self.refusedStart(root)
        #expect(deletedStatus == 4 && deletedLog.contains("the log ends at entry 0"), "\(deletedLog)")
        let (doctorCode, doctor) = try CLITests.ctl(["doctor", "--config", root + "/casevault.toml"], as: .root)
        #expect(doctorCode == 1 && doctor.contains("--accept-audit-break"), "\(doctor)")

        // The operator accepts the break: the daemon starts, and the log says what was found.
        let accepted = try DaemonProcess(roles: Self.roles, root: root, arguments: ["--accept-audit-break"])
        #expect(accepted.waitUntilServing(), "\(accepted.log)")
        let report = try accepted.call("GET", "/v1/audit/verify", as: Self.director, expect: 200).json
        #expect(report["ok"] as? Bool == true && report["macs_checked"] as? Bool == true, "\(report)")
        let breaks = report["breaks"] as? [Int] ?? []
        #expect(breaks.count == 1, "\(report)")
        let entries = Self.entries(accepted)
        #expect(
            entries.contains { ($0["reason"] as? String)?.hasPrefix("break: the log ends at entry 0") == true },
            "\(entries.prefix(3))")
        #expect(accepted.stop() == 0)
        // Accepted once: the next start needs nothing.
        let again = try DaemonProcess(roles: Self.roles, root: root)
        #expect(again.waitUntilServing(), "\(again.log)")
        #expect(again.stop() == 0)

        // A forged entry accepted as a break is moved aside, so the log verifies from end to end again.
        let (now, nowEnd) = try Self.lines(path)
        let intact = try Data(contentsOf: URL(fileURLWithPath: path))
        let forgedLine = Self.forged(
            after: try #require(now.last),
            json: request.replacingOccurrences(of: "\"seq\":\(seq + 1)", with: "\"seq\":\(now.count + 1)"),
            mac: String(repeating: "5a", count: 32)
        )
        var tampered = Array(intact)
        tampered.replaceSubrange(nowEnd..<(nowEnd + forgedLine.count), with: forgedLine)
        try write(tampered)
        let (forgedStatus, _) = try Self.refusedStart(root)
        #expect(forgedStatus == 4)
        let mended = try DaemonProcess(roles: Self.roles, root: root, arguments: ["--accept-audit-break"])
        #expect(mended.waitUntilServing(), "\(mended.log)")
        let mendedReport = try mended.call("GET", "/v1/audit/verify", as: Self.director, expect: 200).json
        #expect(
            mendedReport["ok"] as? Bool == true && (mendedReport["breaks"] as? [Int] ?? []).count == 2,
            "\(mendedReport)")
        #expect(mended.stop() == 0)
        let aside = try FileManager.default.contentsOfDirectory(atPath: root + "/data/audit").filter {
            $0.hasPrefix("log.broken-")
        }
        #expect(aside.count == 1, "\(aside)")
        let kept = aside.first.flatMap { FileManager.default.contents(atPath: root + "/data/audit/" + $0) } ?? Data()
        #expect(kept.range(of: Data(forgedLine)) != nil, "the forged entry is kept aside for investigation")
        let (verifyCode, verifyText) = try CLITests.ctl(
            ["audit", "verify", "--offline", "--config", root + "/casevault.toml"], as: .root)
        #expect(verifyCode == 0 && verifyText.contains("accepted breaks"), "\(verifyText)")
    }

    @Test(
        "the log rotates while the daemon serves; verify online and offline proves every file; a rotated file removed stops the next start"
    )
    func rotationOverTheSocket() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let audit = root + "/data/audit"
        func rotated() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: audit).filter {
                $0.hasPrefix("log.0") && !$0.contains("broken")
            }.sorted()
        }
        do {
            let daemon = try DaemonProcess(
                roles: Self.roles, extra: "[audit]\nrotate_mib = 1\nkeep_files = 1", root: root)
            #expect(daemon.waitUntilServing(), "\(daemon.log)")
            // Two entries a request, some 400 bytes: 6,000 requests fill two files and more.
            let connection = try UnixConnection(path: daemon.socket)
            for _ in 0..<6000 {
                let reply = try connection.exchange("GET /v1/whoami HTTP/1.1\r\nHost: casevault\r\n\r\n")
                guard reply.hasPrefix("HTTP/1.1 200") else {
                    Issue.record("whoami: \(reply.prefix(200))")
                    break
                }
            }
            let names = try rotated()
            #expect(names.count == 1, "the retention keeps one rotated file: \(names)")
            let report = try daemon.call("GET", "/v1/audit/verify", as: Self.director, expect: 200).json
            #expect(report["ok"] as? Bool == true && report["files"] as? Int == 2, "\(report)")
            #expect((report["first_entry"] as? Int ?? 0) > 1 && (report["entries"] as? Int ?? 0) > 12_000, "\(report)")
            #expect(daemon.stop() == 0, "\(daemon.log)")
        }
        let (code, text) = try CLITests.ctl(
            ["audit", "verify", "--offline", "--config", root + "/casevault.toml"], as: .root)
        #expect(
            code == 0 && text.contains("older files removed by the retention")
                && text.range(of: #"files +2\n"#, options: .regularExpression) != nil, "\(text)")

        // The rotated file removed while the daemon was stopped: the log begins after what it says it keeps.
        let removed = try #require(try rotated().first)
        let saved = try Data(contentsOf: URL(fileURLWithPath: audit + "/" + removed))
        try FileManager.default.removeItem(atPath: audit + "/" + removed)
        let (status, log) = try Self.refusedStart(root)
        #expect(status == 4 && log.contains("oldest files were removed"), "\(log)")
        let (doctorCode, doctor) = try CLITests.ctl(["doctor", "--config", root + "/casevault.toml"], as: .root)
        #expect(
            doctorCode == 1 && doctor.contains("oldest files were removed") && doctor.contains("--accept-audit-break"),
            "\(doctor)")
        let (offlineCode, offline) = try CLITests.ctl(
            ["audit", "verify", "--offline", "--config", root + "/casevault.toml"], as: .root)
        #expect(offlineCode == 1 && offline.contains("are missing"), "\(offline)")
        // Put back, the log is whole again.
        try saved.write(to: URL(fileURLWithPath: audit + "/" + removed))
        chmod(audit + "/" + removed, 0o600)
        let again = try DaemonProcess(roles: Self.roles, root: root)
        #expect(again.waitUntilServing(), "\(again.log)")
        #expect(again.stop() == 0)
    }

    @Test("after a SIGKILL, entries the anchor covered cannot be cut away: the anchor follows the log within a second")
    func anchorFollowsTheLog() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            let daemon = try Self.servingWithCase(root)
            usleep(1_200_000)
            // A second on: this request's flush moves the anchor to its entries.
            try daemon.call("GET", "/v1/whoami", as: Self.director, expect: 200)
            usleep(300_000)
            daemon.crash()
        }
        let path = root + "/data/audit/log"
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        let (lines, _) = try Self.lines(path)
        // The whoami's request and result, and the key entry's neighbour before them: gone.
        let cut = Array(lines.dropLast(3).joined())
        try Data(cut + [UInt8](repeating: 0, count: original.count - cut.count)).write(to: URL(fileURLWithPath: path))
        let (status, log) = try Self.refusedStart(root)
        #expect(status == 4 && log.contains("cut away"), "\(log)")
        // The log as the crash left it starts, and verifies.
        try original.write(to: URL(fileURLWithPath: path))
        let daemon = try DaemonProcess(roles: Self.roles, root: root)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let report = try daemon.call("GET", "/v1/audit/verify", as: Self.director, expect: 200).json
        #expect(report["ok"] as? Bool == true && (report["anchor"] as? Int ?? 0) > 0, "\(report)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test(
        "a peer with no role cannot flood the log: past its budget its requests are answered and counted, then summarised"
    )
    func rolelessPeersAreRateLimited() throws {
        let daemon = try DaemonProcess(roles: Self.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let count = 60
        let urls = (0..<count).map { _ in "http://casevault/v1/whoami" }
        let (status, _) = try Peer(uid: 4999).run(
            "/usr/bin/curl", ["-s", "-o", "/dev/null", "--unix-socket", daemon.socket] + urls)
        #expect(status == 0)
        usleep(1_200_000)
        // Anyone's next entry a second later brings the summary with it.
        try daemon.call("GET", "/v1/whoami", as: Self.director, expect: 200)
        let summarised = Self.entries(daemon).filter { $0["uid"] as? Int == 4999 }.compactMap {
            $0["suppressed"] as? Int
        }
        #expect(!summarised.isEmpty, "no summary a second after the flood")
        // A second flood, then the daemon stops at once: its summary is written before the log closes.
        #expect(
            try Peer(uid: 4999).run("/usr/bin/curl", ["-s", "-o", "/dev/null", "--unix-socket", daemon.socket] + urls).0
                == 0)
        #expect(daemon.stop() == 0, "\(daemon.log)")
        let entries = Self.entries(daemon).filter { $0["uid"] as? Int == 4999 }
        let written = entries.filter { $0["kind"] as? String == "request" }.count
        let suppressed = entries.compactMap { $0["suppressed"] as? Int }.reduce(0, +)
        #expect(written + suppressed == 2 * count, "\(written) written, \(suppressed) counted")
        #expect(written <= 40 && suppressed > 0, "\(written) written, \(suppressed) counted")
        let report = AuditVerifierReport.offline(daemon)
        #expect(report.contains("intact"), "\(report)")
    }
}

enum AuditVerifierReport {
    /// `casevaultctl audit verify --offline` on the daemon's data, with its root key.
    static func offline(_ daemon: DaemonProcess) -> String {
        (try? CLITests.ctl(["audit", "verify", "--offline", "--config", daemon.root + "/casevault.toml"], as: .root).1)
            ?? ""
    }
}

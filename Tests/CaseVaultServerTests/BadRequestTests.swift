import Foundation
import Testing

/// Bad requests get a 4xx problem and change nothing: the data directory is byte for byte the same after
/// all of them (SQLite's shared-memory index aside, which readers write by design, and the audit log,
/// which records every request by design: AuditOverSocketTests checks what it holds).
@Suite("Bad requests", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct BadRequestTests {
    static let director = Peer(uid: 4001)
    static let mediator = Peer(uid: 4002)

    static func snapshot(_ directory: String) -> [String: Data] {
        var files: [String: Data] = [:]
        let enumerator = FileManager.default.enumerator(atPath: directory)
        while let name = enumerator?.nextObject() as? String {
            let path = directory + "/" + name
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
                // The index also keeps the audit log's anchor, which every request's entries move: what
                // a request may not change there is checked through the API.
                !name.hasSuffix("-shm"), !name.hasPrefix("audit/"), !name.hasPrefix("index.sqlite")
            else { continue }
            files[name] = FileManager.default.contents(atPath: path)
        }
        return files
    }

    @Test(
        "malformed, mistyped, oversized, too deep, bad ids, unknown routes, wrong methods: 4xx problems, nothing changed"
    )
    func badRequestsChangeNothing() throws {
        let daemon = try DaemonProcess(roles: LifecycleOverSocketTests.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let note = try daemon.file(caseID, Bodies.note, as: Self.mediator).string("record_id")
        let records = "/v1/cases/\(caseID)/records"
        let before = Self.snapshot(daemon.root + "/data")
        #expect(!before.isEmpty)
        let caseBefore = try daemon.call("GET", "/v1/cases/\(caseID)", as: Self.director, expect: 200).body
        let rosterBefore = try daemon.call("GET", "/v1/roster/mediators", as: Self.director, expect: 200).body

        let deep = String(repeating: "[", count: 40) + String(repeating: "]", count: 40)
        let big = #"{"type": "session_note", "content": {"text": ""# + String(repeating: "a", count: 200_000) + #""}}"#
        let cases: [(String, String, String, String?, String, Int, String)] = [
            (
                "malformed JSON", "POST", records, #"{"type": "session_note", "content": "#, "application/json", 400,
                "malformed-content"
            ),
            ("not an object", "POST", records, "[1, 2]", "application/json", 400, "malformed-content"),
            ("wrong content type", "POST", records, Bodies.note, "text/plain", 415, "unsupported-media-type"),
            // The media type is compared byte by byte (`Request.isJSON`): only the whole of it, in any case.
            (
                "a longer media type", "POST", records, Bodies.note, "application/jsonx", 415,
                "unsupported-media-type"
            ),
            ("a shorter media type", "POST", records, Bodies.note, "application/jso", 415, "unsupported-media-type"),
            (
                "a media type after another", "POST", records, Bodies.note, "xapplication/json", 415,
                "unsupported-media-type"
            ),
            (
                "a space in the media type", "POST", records, Bodies.note, "application/ json", 415,
                "unsupported-media-type"
            ),
            (
                "form content type", "POST", "/v1/cases", Bodies.openCase(mediators: []),
                "application/x-www-form-urlencoded", 415, "unsupported-media-type"
            ),
            (
                "unknown record type", "POST", records, #"{"type": "memo", "content": {"text": "x"}}"#,
                "application/json", 400, "unknown-record-type"
            ),
            (
                "recording", "POST", records, #"{"type": "recording", "content": {"text": "x"}}"#, "application/json",
                422, "forbidden-record-type"
            ),
            ("missing type", "POST", records, #"{"content": {"text": "x"}}"#, "application/json", 400, "missing-field"),
            (
                "missing content", "POST", records, #"{"type": "session_note"}"#, "application/json", 400,
                "missing-field"
            ),
            (
                "missing content field", "POST", records, #"{"type": "session_note", "content": {}}"#,
                "application/json", 400, "missing-field"
            ),
            // Two members named content: the first is the one stored, so it is the one checked (the parser
            // keeps the last), whether the second's name is written plainly or with escapes. A name after a
            // byte-order mark is another name (the parser keeps the mark), which the route does not take.
            (
                "content twice, the stored one empty", "POST", records,
                #"{"type": "session_note", "content": {}, "content": {"text": "x"}}"#, "application/json", 400,
                "missing-field"
            ),
            (
                "content twice, the second escaped", "POST", records,
                #"{"type": "session_note", "content": {}, "con\u0074ent": {"text": "x"}}"#, "application/json",
                400, "missing-field"
            ),
            (
                "content twice, the second after a byte-order mark", "POST", records,
                #"{"type": "session_note", "content": {}, "\#u{FEFF}content": {"text": "x"}}"#, "application/json",
                400, "invalid-field"
            ),
            (
                "unknown body field", "POST", records,
                #"{"type": "session_note", "content": {"text": "x"}, "extra": 1}"#, "application/json", 400,
                "invalid-field"
            ),
            (
                "missing participants", "POST", "/v1/cases", #"{"mediators": []}"#, "application/json", 400,
                "missing-field"
            ),
            (
                "one participant", "POST", "/v1/cases", Bodies.openCase(participants: 1, mediators: []),
                "application/json", 400, "invalid-field"
            ),
            ("oversized body", "POST", records, big, "application/json", 413, "content-too-large"),
            (
                "deep nesting", "POST", records, #"{"type": "session_note", "content": {"text": \#(deep)}}"#,
                "application/json", 400, "nesting-too-deep"
            ),
            ("dot-dot id", "GET", "/v1/records/..%2F..%2Fetc%2Fpasswd", nil, "", 400, "invalid-identifier"),
            ("dot-dot path", "GET", "/v1/records/../../etc/passwd", nil, "", 404, "route-not-found"),
            (
                "NUL in id", "GET", "/v1/records/\(note.prefix(16))%00\(note.prefix(15))", nil, "", 400,
                "invalid-identifier"
            ),
            (
                "dot-dot case id", "POST", "/v1/cases/..%2F\(caseID.prefix(29))/records", Bodies.note,
                "application/json", 400, "invalid-identifier"
            ),
            (
                "dot-dot supersedes", "POST", records,
                #"{"type": "session_note", "supersedes": "../../x", "content": {"text": "x"}}"#, "application/json",
                400, "invalid-identifier"
            ),
            (
                "unknown case", "POST", "/v1/cases/\(String(repeating: "0", count: 32))/records", Bodies.note,
                "application/json", 404, "not-found"
            ),
            ("unknown record", "GET", "/v1/records/\(String(repeating: "a", count: 32))", nil, "", 404, "not-found"),
            ("unknown route", "GET", "/v1/nothing/here", nil, "", 404, "route-not-found"),
            ("wrong method", "PATCH", records, Bodies.note, "application/json", 405, "method-not-allowed"),
            (
                "wrong method on a record", "PUT", "/v1/records/\(note)", Bodies.note, "application/json", 405,
                "method-not-allowed"
            ),
            // Found by make check-api: TRACE and QUERY on a known path answered 404, a contact of another type was filed.
            ("TRACE", "TRACE", "/v1/records/\(note)", nil, "", 405, "method-not-allowed"),
            ("QUERY", "QUERY", records, nil, "", 405, "method-not-allowed"),
            (
                "null supersedes", "POST", records,
                #"{"type": "session_note", "supersedes": null, "content": {"text": "x"}}"#, "application/json", 400,
                "invalid-field"
            ),
            (
                "contact not text", "POST", "/v1/cases",
                #"{"participants": [{"name": "a", "contact": {}}, {"name": "b"}]}"#, "application/json", 400,
                "invalid-field"
            ),
            (
                "bad shred reason", "DELETE", "/v1/records/\(note)", #"{"reason": "because"}"#, "application/json", 400,
                "invalid-field"
            ),
            // Found by make check-api: a well-formed name no user has is not found, not malformed.
            ("unknown user", "PUT", "/v1/roster/mediators/no-such-user-here", nil, "", 404, "unknown-user"),
            (
                "unknown mediator", "POST", "/v1/cases",
                #"{"participants": [{"name": "a"}, {"name": "b"}], "mediators": ["no-such-user-here"]}"#,
                "application/json", 404, "unknown-user"
            ),
            // Found by make check-api: UInt32 parses "+5" and "-0"; only digits name a uid.
            ("signed uid", "PUT", "/v1/roster/mediators/uid:+4002", nil, "", 400, "invalid-identifier"),
            ("bad escape", "PUT", "/v1/roster/mediators/uid%3", nil, "", 400, "invalid-identifier"),
        ]
        for (name, method, path, body, type, status, problem) in cases {
            let peer = path.contains("roster") || path == "/v1/cases" ? Self.director : Self.mediator
            let reply = try Client.request(daemon, method, path, as: peer, body: body, contentType: type)
            let text = String(decoding: reply.body, as: UTF8.self)
            #expect(reply.status == status, "\(name): \(reply.status) \(text)")
            #expect(reply.isProblem && reply.problemType == problem, "\(name): \(text)")
            #expect(!text.contains(LeakCheck.marker), "\(name): the problem repeats content")
        }
        #expect(Self.snapshot(daemon.root + "/data") == before, "a bad request changed the data directory")
        #expect(try daemon.call("GET", "/v1/cases/\(caseID)", as: Self.director, expect: 200).body == caseBefore)
        #expect(try daemon.call("GET", "/v1/roster/mediators", as: Self.director, expect: 200).body == rosterBefore)
        #expect(try daemon.records(caseID, type: "session_note", as: Self.mediator) == [note])
        // The media type in any case, with spaces around it and a parameter after it, is JSON.
        let filed = try Client.request(
            daemon, "POST", records, as: Self.mediator, body: Bodies.note,
            contentType: " Application/JSON ;charset=utf-8")
        #expect(filed.status == 201, "\(String(decoding: filed.body, as: UTF8.self))")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("limits: a head over max_header_bytes gets 431, a stalled body 408, a connection past max_connections 503")
    func limits() throws {
        let daemon = try Self.daemon(
            roles: #"director = ["uid:0"]"#,
            settings:
                "max_connections = 2\nmax_connections_per_user = 2\nmax_header_bytes = 2048\nread_timeout_seconds = 1"
        )
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        // A head over max_header_bytes: 431, as a problem.
        let big = try UnixConnection(path: daemon.socket)
        let refused = try big.exchange(
            "GET /v1/health HTTP/1.1\r\nHost: casevault\r\nX-Big: \(String(repeating: "a", count: 4000))\r\n\r\n")
        #expect(refused.hasPrefix("HTTP/1.1 431"), "\(refused)")
        #expect(refused.contains("urn:casevault:problem:header-too-large"))
        // A body that stops arriving: 408 once the read time has passed.
        let slow = try UnixConnection(path: daemon.socket)
        let timedOut = try slow.exchange(
            "POST /v1/cases HTTP/1.1\r\nHost: casevault\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partic"
        )
        #expect(timedOut.hasPrefix("HTTP/1.1 408"), "\(timedOut)")
        #expect(timedOut.contains("urn:casevault:problem:request-timeout"))
        // Two kept-alive connections take both places; the third is answered 503 at once.
        let holders = try (0..<2).map { _ in try UnixConnection(path: daemon.socket) }
        for holder in holders {
            #expect(try holder.exchange("GET /v1/health HTTP/1.1\r\nHost: casevault\r\n\r\n").hasPrefix("HTTP/1.1 200"))
        }
        let third = try UnixConnection(path: daemon.socket)
        let reply = try third.exchange("GET /v1/health HTTP/1.1\r\nHost: casevault\r\n\r\n")
        #expect(reply.hasPrefix("HTTP/1.1 503"), "\(reply)")
        #expect(reply.contains("urn:casevault:problem:overloaded"))
        _ = holders
        #expect(daemon.stop() == 0, "\(daemon.log)")
        // Each refusal left one truthful entry: the 431 and the 503 as refusals before any route, the 408 as
        // the result of the request its route was reading (not the 400 the broken body would have made).
        let entries = AuditOverSocketTests.entries(daemon)
        let refusals = entries.filter { $0["kind"] as? String == "refused" }.compactMap { $0["status"] as? Int }
        #expect(refusals.contains(431) && refusals.contains(503), "\(refusals)")
        let results = entries.filter { $0["kind"] as? String == "result" }
        #expect(
            results.contains { $0["status"] as? Int == 408 && $0["problem"] as? String == "request-timeout" },
            "\(results)")
        #expect(!results.contains { $0["status"] as? Int == 400 }, "\(results)")
    }

    /// A daemon whose `[server]` table has `settings` (newline-separated) besides the test's own.
    static func daemon(roles: String, settings: String) throws -> DaemonProcess {
        try DaemonProcess(
            roles: roles, extra: "",
            prepare: { root in
                var text = try String(contentsOfFile: root + "/casevault.toml", encoding: .utf8)
                text = text.replacingOccurrences(
                    of: "max_body_bytes = 131072", with: "max_body_bytes = 131072\n" + settings)
                try text.write(toFile: root + "/casevault.toml", atomically: true, encoding: .utf8)
            }
        )
    }

    /// Sends `head` then a byte of a header's value every 0.3 s, never silent long enough for the idle
    /// timer; returns after how many seconds the daemon closed the connection (nil: not within 12 s).
    static func trickledHeadCut(_ connection: UnixConnection) -> Double? {
        let start = Date()
        _ = Array("GET /v1/health HTTP/1.1\r\nX-Slow: ".utf8).withUnsafeBytes {
            send(connection.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
        }
        var byte = UInt8(ascii: "a")
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date().timeIntervalSince(start) < 12 {
            if send(connection.fd, &byte, 1, Int32(MSG_NOSIGNAL)) < 0 { return Date().timeIntervalSince(start) }
            usleep(300_000)
            let count = recv(connection.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if count == 0 || (count < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                return Date().timeIntervalSince(start)
            }
            if count > 0 {
                Issue.record("a trickled head was answered: \(String(decoding: buffer[..<count], as: UTF8.self))")
                return nil
            }
        }
        return nil
    }

    /// A head that never ends holds a place: it is cut at the read time, by the idle timer (which sees no
    /// part of a request until its head is whole) or the head's deadline (`ConnectionLimitHandler`),
    /// whichever comes first; a trickled body, whose parts the idle timer sees, is the deadline's alone
    /// (`slowPeersCannotLockOthersOut`, which hangs when the deadline is not set again once it has moved).
    @Test("a head trickled a byte at a time loses its connection at the read time: the first, and one after an answer")
    func trickledHeads() throws {
        let daemon = try Self.daemon(roles: #"director = ["uid:0"]"#, settings: "read_timeout_seconds = 2")
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let first = try UnixConnection(path: daemon.socket)
        let firstCut = Self.trickledHeadCut(first)
        #expect(firstCut.map { $0 >= 1.5 && $0 < 6 } == true, "cut after \(String(describing: firstCut)) s")
        // Kept alive after an answer, whose end sets the next head's deadline.
        let kept = try UnixConnection(path: daemon.socket)
        for _ in 0..<3 {
            #expect(try kept.exchange("GET /v1/health HTTP/1.1\r\nHost: casevault\r\n\r\n").hasPrefix("HTTP/1.1 200"))
            usleep(400_000)
        }
        let keptCut = Self.trickledHeadCut(kept)
        #expect(keptCut.map { $0 >= 1.5 && $0 < 6 } == true, "cut after \(String(describing: keptCut)) s")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    /// Starts `casevault-torture trickle` as `peer` against `daemon`; its output goes to a file read later.
    static func trickle(_ daemon: DaemonProcess, as peer: Peer, _ arguments: [String] = []) throws -> (Process, String)
    {
        let output = daemon.root + "/trickle-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        chmod(output, 0o666)
        let process = peer.process(DaemonProcess.binary("casevault-torture"), ["trickle", daemon.socket] + arguments)
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        try process.run()
        return (process, output)
    }

    @Test(
        "one user cannot hold every connection: a trickled body gets 408 at the read time, a user's places are capped, a peer with no role is closed after its answer"
    )
    func slowPeersCannotLockOthersOut() throws {
        let daemon = try Self.daemon(
            roles: #"director = ["uid:4001", "uid:4003"]"#,
            settings: "max_connections = 4\nmax_connections_per_user = 2\nread_timeout_seconds = 2")
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        // Four trickling bodies from one user (who may open cases, so the route waits for the body), a byte
        // every 0.5 s: never silent long enough for the read timer, and as many as there are places.
        let started = Date()
        let attackers = try (0..<4).map { _ in try Self.trickle(daemon, as: Peer(uid: 4003)) }
        usleep(500_000)
        // The director still gets in: the stranger holds at most its two places.
        try daemon.call("GET", "/v1/whoami", as: Self.director, expect: 200)
        for (process, _) in attackers { process.waitUntilExit() }
        let answers = attackers.map { (try? String(contentsOfFile: $0.1, encoding: .utf8)) ?? "" }
        #expect(answers.filter { $0.hasPrefix("HTTP/1.1 503") && $0.contains("overloaded") }.count == 2, "\(answers)")
        #expect(
            answers.filter { $0.hasPrefix("HTTP/1.1 408") && $0.contains("request-timeout") }.count == 2, "\(answers)")
        #expect(
            Date().timeIntervalSince(started) < 15,
            "the trickles were cut off only after \(Date().timeIntervalSince(started)) s")

        // A peer with no role trickling a body gets its answer, and the connection is closed after it.
        let (refused, output) = try Self.trickle(daemon, as: Peer(uid: 4999))
        refused.waitUntilExit()
        let answer = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        #expect(answer.hasPrefix("HTTP/1.1 403") && answer.lowercased().contains("connection: close"), "\(answer)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }
}

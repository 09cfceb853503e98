import Foundation
import Testing

/// Holds, the sweep and statistics against a real daemon whose clock reads a file the test writes
/// (`[testing] clock_file`), so that years pass without sleeping.
@Suite(
    "Retention, holds and statistics over the socket", .enabled(if: isRoot, "acting as other uids needs root"),
    .serialized)
struct RetentionOverSocketTests {
    static let director = Peer(uid: 4001)
    static let statistician = Peer(uid: 4008)
    static let `operator` = Peer(uid: 4009)

    static let roles = """
        director = ["uid:4001"]
        mediator = ["uid:4002"]
        statistician = ["uid:4008"]
        operator = ["uid:4009"]
        """

    /// 2026-01-15T00:00:00Z
    static let start: Int64 = 1_768_435_200_000
    static let year: Int64 = 365 * 86_400_000

    static func daemon(k: Int = 11) throws -> DaemonProcess {
        let daemon = try DaemonProcess(
            roles: Self.roles,
            extra: "[statistics]\nk = \(k)\n[testing]\nclock_file = \"$ROOT/clock\"\n",
            prepare: { root in try "\(Self.start)".write(toFile: root + "/clock", atomically: true, encoding: .utf8) }
        )
        return daemon
    }

    static func setClock(_ daemon: DaemonProcess, _ time: Int64) throws {
        try "\(time)".write(toFile: daemon.root + "/clock", atomically: true, encoding: .utf8)
    }

    static func counts(_ reply: Client.Reply, _ type: String) -> [String: Int] {
        (reply.json["by_type"] as? [String: [String: Int]])?[type] ?? [:]
    }

    @Test("a held case's records survive every sweep until the hold is released; the next sweep then disposes them")
    func holdsOverTheSocket() throws {
        let daemon = try Self.daemon()
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let free = try daemon.openCase(by: Self.director, mediators: [])
        let held = try daemon.openCase(by: Self.director, mediators: [])
        let freeIntake = try daemon.file(free, Bodies.intake, as: Self.director).string("record_id")
        let heldIntake = try daemon.file(held, Bodies.intake, as: Self.director).string("record_id")
        let hold = try daemon.call(
            "POST", "/v1/holds", as: Self.director,
            body: #"{"case_id": "\#(held)", "reason": "litigation \#(LeakCheck.marker)"}"#,
            expect: 201
        )
        let holdID = hold.string("hold_id")
        let listed =
            try daemon.call("GET", "/v1/holds", as: Self.director, expect: 200).json["holds"] as? [[String: Any]] ?? []
        #expect(listed.count == 1 && listed.first?["reason"] as? String == "litigation \(LeakCheck.marker)")
        // A shred on request of a held record is refused, and changes nothing.
        let refused = try daemon.call(
            "DELETE", "/v1/records/\(heldIntake)", as: Self.director, body: #"{"reason": "policy"}"#, expect: 409)
        #expect(refused.problemType == "held")

        // A day before the intake forms are due (3 years after filing), nothing goes.
        try Self.setClock(daemon, Self.start + 3 * Self.year)
        var sweep = try daemon.call("POST", "/v1/admin/sweep", as: Self.operator, expect: 200)
        #expect(Self.counts(sweep, "intake_form")["disposed"] == 0)
        for years in [4, 6, 9] as [Int64] {
            try Self.setClock(daemon, Self.start + years * Self.year)
            sweep = try daemon.call("POST", "/v1/admin/sweep", as: Self.operator, body: "{}", expect: 200)
            #expect(Self.counts(sweep, "intake_form")["held_back"] == 1, "year \(years)")
            try daemon.call("GET", "/v1/records/\(heldIntake)", as: Self.director, expect: 200)
        }
        try daemon.call("GET", "/v1/records/\(freeIntake)", as: Self.director, expect: 410)
        try daemon.call("DELETE", "/v1/holds/\(holdID)", as: Self.director, expect: 200)
        let plan = try daemon.call(
            "POST", "/v1/admin/sweep", as: Self.operator, body: #"{"dry_run": true}"#, expect: 200)
        #expect(Self.counts(plan, "intake_form")["disposed"] == 1 && plan.json["dry_run"] as? Bool == true)
        try daemon.call("GET", "/v1/records/\(heldIntake)", as: Self.director, expect: 200)
        sweep = try daemon.call("POST", "/v1/admin/sweep", as: Self.operator, expect: 200)
        #expect(Self.counts(sweep, "intake_form")["disposed"] == 1)
        try daemon.call("GET", "/v1/records/\(heldIntake)", as: Self.director, expect: 410)
        // The disposal's certificate says it was the sweep, authorised by the operator.
        let certificates = try daemon.call("GET", "/v1/certificates?case_id=\(held)", as: Self.director, expect: 200)
        let certificate =
            (certificates.json["certificates"] as? [[String: Any]])?.last?["certificate"] as? [String: Any] ?? [:]
        #expect(certificate["method"] as? String == "retention_sweep")
        #expect((certificate["authorised_by"] as? [String: Any])?["uid"] as? Int == 4009)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("bad holds, releases, stats groupings and sweeps get a clear problem and change nothing")
    func badInputChangesNothing() throws {
        let daemon = try Self.daemon()
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try daemon.openCase(by: Self.director, mediators: [])
        try daemon.file(caseID, Bodies.intake, as: Self.director)
        let unknownCase = String(repeating: "a", count: 32)
        let before = BadRequestTests.snapshot(daemon.root + "/data")
        let cases: [(Peer, String, String, String?, Int, String)] = [
            (Self.director, "POST", "/v1/holds", #"{"case_id": "\#(unknownCase)", "reason": "r"}"#, 404, "not-found"),
            (Self.director, "POST", "/v1/holds", #"{"case_id": "\#(caseID)"}"#, 400, "missing-field"),
            (Self.director, "POST", "/v1/holds", #"{"reason": "r"}"#, 400, "missing-field"),
            (Self.director, "POST", "/v1/holds", #"{"case_id": "\#(caseID)", "reason": "   "}"#, 400, "invalid-field"),
            (
                Self.director, "POST", "/v1/holds",
                #"{"case_id": "\#(caseID)", "reason": "\#(String(repeating: "x", count: 1001))"}"#, 400, "invalid-field"
            ),
            (Self.director, "POST", "/v1/holds", #"{"case_id": "../x", "reason": "r"}"#, 400, "invalid-identifier"),
            (
                Self.director, "POST", "/v1/holds", #"{"case_id": "\#(caseID)", "reason": "r", "until": 1}"#, 400,
                "invalid-field"
            ),
            (Self.director, "DELETE", "/v1/holds/\(unknownCase)", nil, 404, "not-found"),
            (Self.director, "DELETE", "/v1/holds/not-an-id", nil, 400, "invalid-identifier"),
            (Self.statistician, "GET", "/v1/stats?period=week", nil, 400, "invalid-field"),
            (Self.statistician, "GET", "/v1/stats?by=participant", nil, 400, "invalid-field"),
            (Self.statistician, "GET", "/v1/stats?case_id=\(caseID)", nil, 400, "invalid-field"),
            (Self.director, "POST", "/v1/admin/sweep", nil, 403, "forbidden"),
            (Self.statistician, "POST", "/v1/admin/sweep", nil, 403, "forbidden"),
            (Self.operator, "POST", "/v1/admin/sweep", #"{"dry_run": "yes"}"#, 400, "invalid-field"),
            (Self.operator, "POST", "/v1/admin/sweep", #"{"limit": 0}"#, 400, "invalid-field"),
            (Self.operator, "POST", "/v1/admin/sweep", #"{"force": true}"#, 400, "invalid-field"),
            (Self.operator, "POST", "/v1/holds", #"{"case_id": "\#(caseID)", "reason": "r"}"#, 403, "forbidden"),
        ]
        for (peer, method, path, body, status, type) in cases {
            let reply = try daemon.call(method, path, as: peer, body: body)
            #expect(
                reply.status == status && reply.problemType == type,
                "\(method) \(path): \(reply.status) \(reply.problemType)")
            #expect(reply.isProblem)
        }
        // The sweep's refusal and the stats' refusals wrote nothing: no hold, no shred, no certificate.
        #expect(BadRequestTests.snapshot(daemon.root + "/data") == before, "a bad request changed the data directory")
        let holds = try daemon.call("GET", "/v1/holds", as: Self.director, expect: 200).json["holds"] as? [Any]
        #expect(holds?.isEmpty == true)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("statistics: aggregates only, counts under k suppressed with their complements, rare categories unnamed")
    func statisticsOverTheSocket() throws {
        let daemon = try Self.daemon(k: 3)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        // 2026: 4 roommate cases, 1 noise case, 1 "rare" case; 2027: 5 roommate cases, 4 noise cases. Each is
        // closed at once: a period is published once it has ended and every case opened in it is closed.
        func open(_ category: String, evaluations: Int = 0) throws {
            let caseID = try daemon.openCase(by: Self.director, mediators: [])
            try daemon.file(
                caseID, #"{"type": "intake_form", "content": {"dispute_category": "\#(category)"}}"#, as: Self.director)
            for _ in 0..<evaluations {
                try daemon.file(caseID, Bodies.evaluation, as: Self.director)
            }
            try daemon.call(
                "POST", "/v1/cases/\(caseID)/close", as: Self.director, body: #"{"outcome": "withdrawn"}"#, expect: 200)
        }
        for _ in 0..<4 { try open("roommate", evaluations: 1) }
        try open("noise")
        try open("rare \(LeakCheck.marker)")
        try Self.setClock(daemon, Self.start + Self.year)
        for _ in 0..<5 { try open("roommate") }
        for _ in 0..<4 { try open("noise") }
        // 2027 has not ended: only 2026 is published.
        let early = try daemon.call(
            "GET", "/v1/stats?period=year&by=dispute_category", as: Self.statistician, expect: 200)
        #expect((early.json["rows"] as? [[String: Any]] ?? []).map { $0["period"] as? String } == ["2026"])
        try Self.setClock(daemon, Self.start + 2 * Self.year)
        let reply = try daemon.call(
            "GET", "/v1/stats?period=year&by=dispute_category", as: Self.statistician, expect: 200)
        let columns = reply.json["columns"] as? [String] ?? []
        #expect(!columns.contains { $0.contains(LeakCheck.marker) }, "a category under k cases is not named")
        #expect(columns.contains("roommate") && columns.contains("other"))
        let rows = reply.json["rows"] as? [[String: Any]] ?? []
        #expect(rows.map { $0["period"] as? String } == ["2026", "2027"])
        var published: [Int] = []
        for row in rows {
            for value in row["counts"] as? [Any] ?? [] {
                if let count = value as? Int { published.append(count) }
            }
        }
        #expect(published.allSatisfy { $0 == 0 || $0 >= 3 }, "\(published)")
        #expect(reply.json["total"] as? Int == 15)
        #expect(rows.first?["satisfaction_mean"] as? Double == 4.0, "four evaluated cases in 2026, k = 3")
        // The reply holds no case or record id.
        let text = String(decoding: reply.body, as: UTF8.self)
        #expect(text.range(of: "[0-9a-f]{32}", options: .regularExpression) == nil)
        try daemon.call("GET", "/v1/stats?period=month&by=outcome", as: Self.director, expect: 200)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("casevaultctl sweep, hold and stats: tables, JSON, and the sweep's exit codes (0 done, 2 nothing to do)")
    func cli() throws {
        let daemon = try Self.daemon()
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let socket = ["--socket", daemon.socket]
        let caseID = try daemon.openCase(by: Self.director, mediators: [])
        try daemon.file(caseID, Bodies.intake, as: Self.director)
        let other = try daemon.openCase(by: Self.director, mediators: [])
        try daemon.file(other, Bodies.evaluation, as: Self.director)

        #expect(try CLITests.ctl(["sweep"] + socket, as: Self.director).0 == 77, "only an operator sweeps")
        let (added, addedText) = try CLITests.ctl(
            ["hold", "add", caseID, "--reason", "audit", "--json"] + socket, as: Self.director)
        #expect(added == 0)
        let holdID =
            (try? JSONSerialization.jsonObject(with: Data(addedText.utf8)) as? [String: Any])?["hold_id"] as? String
            ?? ""
        #expect(try CLITests.ctl(["hold", "list"] + socket, as: Self.director).1.contains(holdID))
        #expect(try CLITests.ctl(["hold", "add", "nope", "--reason", "r"] + socket, as: Self.director).0 == 64)
        #expect(try CLITests.ctl(["hold", "add", caseID] + socket, as: Self.director).0 == 64, "no reason")
        // The reason off the command line, from standard input; sealed, and read back by the director.
        let (fromInput, placed, _) = try Self.director.run(
            DaemonProcess.binary("casevaultctl"), ["hold", "add", caseID, "--reason-from", "-", "--json"] + socket,
            input: "subpoena \(LeakCheck.marker)\n")
        #expect(fromInput == 0, "\(placed)")
        let secondHold = try #require(
            ((try? JSONSerialization.jsonObject(with: Data(placed.utf8))) as? [String: Any])?["hold_id"] as? String)
        let listed = try daemon.call("GET", "/v1/holds", as: Self.director, expect: 200)
        let reasons = (listed.json["holds"] as? [[String: Any]] ?? []).filter { $0["hold_id"] as? String == secondHold }
        #expect(reasons.first?["reason"] as? String == "subpoena \(LeakCheck.marker)", "\(reasons)")
        #expect(try CLITests.ctl(["hold", "release", secondHold] + socket, as: Self.director).0 == 0)

        try Self.setClock(daemon, Self.start + 4 * Self.year)
        let (dry, dryText) = try CLITests.ctl(["sweep", "--dry-run"] + socket, as: Self.operator)
        #expect(dry == 0, "the evaluation is due: \(dryText)")
        #expect(dryText.contains("would dispose"))
        let (swept, sweptText) = try CLITests.ctl(["sweep", "--json"] + socket, as: Self.operator)
        #expect(swept == 0)
        let report = (try? JSONSerialization.jsonObject(with: Data(sweptText.utf8)) as? [String: Any]) ?? [:]
        let byType = report["by_type"] as? [String: [String: Int]] ?? [:]
        #expect(byType["evaluation"]?["disposed"] == 1 && byType["intake_form"]?["held_back"] == 1, "\(sweptText)")
        #expect(try CLITests.ctl(["sweep"] + socket, as: Self.operator).0 == 2, "nothing left to do")

        #expect(try CLITests.ctl(["hold", "release", holdID] + socket, as: Self.director).0 == 0)
        #expect(try CLITests.ctl(["hold", "release", holdID] + socket, as: Self.director).0 == 1, "already released")
        let (last, lastText) = try CLITests.ctl(["sweep"] + socket, as: Self.operator)
        #expect(last == 0 && lastText.contains("intake_form"), "\(lastText)")

        let (stats, statsText) = try CLITests.ctl(["stats", "--period", "quarter"] + socket, as: Self.statistician)
        #expect(stats == 0 && statsText.contains("k = 11"), "\(statsText)")
        #expect(try CLITests.ctl(["stats", "--by", "participant"] + socket, as: Self.statistician).0 == 64)
        #expect(try CLITests.ctl(["stats"] + socket, as: Self.operator).0 == 77)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }
}

import Foundation
import Testing

/// The case list and a case's record list, as each kind of caller sees them: exactly the rows and the
/// record types docs/API.md gives them, page by page, with no name or content, and a 400 that names the
/// parameter for every query it cannot read. In process, and over the socket as real uids.
@Suite("Listing cases and records", .serialized)
struct ListingTests {
    typealias Who = AuthorizationMatrixTests.Who
    static let peers = AuthorizationMatrixTests.peers
    /// Callers with two roles: intake staff who also mediate (assigned to D), and a mediator who is also an
    /// office (assigned to A).
    static let intakeMediator = Peer(uid: 4011)
    static let officeMediator = Peer(uid: 4012)

    static let roles = """
        director = ["uid:4001"]
        mediator = ["uid:4002", "uid:4003", "uid:4004", "uid:4011", "uid:4012"]
        intake = ["uid:4005", "uid:4011"]
        submitter = ["uid:4006"]
        "office:title-ix" = ["gid:5002", "uid:4012"]
        "office:equity" = ["gid:5003"]
        statistician = ["uid:4008"]
        operator = ["uid:4009"]
        """

    /// Case A: mediators 4002, 4004 (then taken off the roster) and 4012, an intake form, both agreements, a
    /// note and a disclosure. B: mediator 4003, nothing filed. C: opened by intake, no mediator. D: mediators
    /// 4002 and 4011, closed.
    struct Cases {
        var a: String
        var b: String
        var c: String
        var d: String
        var all: [String] { [self.a, self.b, self.c, self.d] }
    }

    static func fixture(_ vault: some VaultTransport) async throws -> Cases {
        let director = Self.peers[.director]!
        let mediator = Self.peers[.mediator]!
        for uid in [4002, 4003, 4004, 4011, 4012] {
            try await vault.call("PUT", "/v1/roster/mediators/uid:\(uid)", as: director, expect: 201)
        }
        let a = try await vault.openCase(by: director, mediators: [4002, 4004, 4012])
        try await vault.file(a, Bodies.intake, as: director)
        try await vault.file(a, Bodies.agreement("p1"), as: mediator)
        try await vault.file(a, Bodies.agreement("p2"), as: mediator)
        try await vault.file(a, Bodies.note, as: mediator)
        try await vault.file(a, Bodies.disclosure("sexual_harassment"), as: mediator)
        let b = try await vault.openCase(by: director, mediators: [4003])
        let c = try await vault.call(
            "POST", "/v1/cases", as: Self.peers[.intake]!, body: Bodies.openCase(mediators: []), expect: 201
        ).string("case_id")
        let d = try await vault.openCase(by: director, mediators: [4002, 4011])
        try await vault.call(
            "POST", "/v1/cases/\(d)/close", as: director, body: #"{"outcome": "withdrawn"}"#, expect: 200)
        try await vault.call("DELETE", "/v1/roster/mediators/uid:4004", as: director, expect: 204)
        return Cases(a: a, b: b, c: c, d: d)
    }

    /// The rows of one page (the answer must hold its list, even empty), and its `next_cursor`.
    static func page(
        _ vault: some VaultTransport, _ path: String, as who: Who, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> (rows: [[String: Any]], next: String?) {
        try await Self.page(vault, path, as: Self.peers[who]!, sourceLocation: sourceLocation)
    }

    static func page(
        _ vault: some VaultTransport, _ path: String, as peer: Peer, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> (rows: [[String: Any]], next: String?) {
        let reply = try await vault.call("GET", path, as: peer, expect: 200, sourceLocation: sourceLocation)
        let text = String(decoding: reply.body, as: UTF8.self)
        #expect(
            !text.contains(LeakCheck.marker), "a list shows a name or content: \(text)", sourceLocation: sourceLocation)
        let key = path.hasPrefix("/v1/cases?") || path == "/v1/cases" ? "cases" : "records"
        let rows = try #require(reply.json[key] as? [[String: Any]], "\(path): \(text)", sourceLocation: sourceLocation)
        return (rows, reply.json["next_cursor"] as? String)
    }

    /// The case or record ids of one page.
    static func ids(
        _ vault: some VaultTransport, _ path: String, as who: Who, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> [String] {
        try await Self.ids(vault, path, as: Self.peers[who]!, sourceLocation: sourceLocation)
    }

    static func ids(
        _ vault: some VaultTransport, _ path: String, as peer: Peer, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> [String] {
        try await Self.page(vault, path, as: peer, sourceLocation: sourceLocation).rows.compactMap {
            ($0["case_id"] ?? $0["record_id"]) as? String
        }
    }

    @discardableResult
    static func scenario(_ vault: some VaultTransport) async throws -> Cases {
        let cases = try await Self.fixture(vault)
        let everyCase = try await Self.page(vault, "/v1/cases", as: .director).rows
        let states = Dictionary(
            uniqueKeysWithValues: everyCase.map { ($0["case_id"] as? String ?? "", $0["state"] as? String ?? "") })
        #expect(Set(states.keys) == Set(cases.all))
        #expect(states[cases.d] == "closed" && states[cases.b] == "intake" && states[cases.c] == "intake")
        #expect(states[cases.a] != "intake", "case A has its agreements on file")

        // Each role sees exactly its rows; those with no grant are refused outright.
        let newestFirst = try await Self.ids(vault, "/v1/cases", as: .director)
        #expect(newestFirst == [cases.d, cases.c, cases.b, cases.a])
        #expect(try await Self.ids(vault, "/v1/cases", as: .intake) == [cases.c, cases.b])
        #expect(try await Self.ids(vault, "/v1/cases", as: .mediator) == [cases.d, cases.a])
        #expect(try await Self.ids(vault, "/v1/cases", as: .otherCaseMediator) == [cases.b])
        #expect(try await Self.ids(vault, "/v1/cases", as: .removedMediator) == [], "off the roster, nothing")
        // Two roles: what either may list, each row decided alone.
        #expect(try await Self.ids(vault, "/v1/cases", as: Self.intakeMediator) == [cases.d, cases.c, cases.b])
        #expect(try await Self.ids(vault, "/v1/cases?mine=true", as: Self.intakeMediator) == [cases.d])
        #expect(try await Self.ids(vault, "/v1/cases?state=intake", as: Self.intakeMediator) == [cases.c, cases.b])
        #expect(try await Self.ids(vault, "/v1/cases", as: Self.officeMediator) == [cases.a])
        for who in [Who.submitter, .statistician, .operator, .titleIX, .nobody] {
            let refused = try await vault.call("GET", "/v1/cases", as: Self.peers[who]!, expect: 403)
            #expect(refused.problemType == "forbidden", "\(who)")
        }

        // Filters.
        #expect(try await Self.ids(vault, "/v1/cases?mine=true", as: .director) == [], "the director mediates none")
        #expect(try await Self.ids(vault, "/v1/cases?mine=true", as: .mediator) == [cases.d, cases.a])
        #expect(try await Self.ids(vault, "/v1/cases?state=closed", as: .director) == [cases.d])
        #expect(try await Self.ids(vault, "/v1/cases?state=closed", as: .intake) == [])
        #expect(try await Self.ids(vault, "/v1/cases?opened_from=1970-01-01", as: .director) == newestFirst)
        #expect(try await Self.ids(vault, "/v1/cases?opened_from=2999-01-01", as: .director) == [])
        #expect(try await Self.ids(vault, "/v1/cases?opened_before=2999-01-01T00:00:00Z", as: .director) == newestFirst)
        #expect(try await Self.ids(vault, "/v1/cases?opened_before=1970-01-02", as: .director) == [])
        let opened = everyCase.first { $0["case_id"] as? String == cases.b }?["created_at"] as? String ?? ""
        let fromB = try await Self.ids(vault, "/v1/cases?opened_from=\(opened)", as: .director)
        #expect(fromB.contains(cases.b) && fromB.contains(cases.d) && !fromB.contains(cases.a))
        #expect(!(try await Self.ids(vault, "/v1/cases?opened_before=\(opened)", as: .director)).contains(cases.b))

        // Pages of one follow each other without a gap or a repeat, and the last says no more.
        var paged: [String] = []
        var cursor: String?
        repeat {
            let query = "/v1/cases?limit=1" + (cursor.map { "&cursor=\($0)" } ?? "")
            let (rows, next) = try await Self.page(vault, query, as: .director)
            paged += rows.compactMap { $0["case_id"] as? String }
            #expect(rows.count <= 1)
            cursor = next
        } while cursor != nil && paged.count <= 8
        #expect(paged == newestFirst)
        #expect(try await Self.page(vault, "/v1/cases?limit=4", as: .director).next != nil)
        #expect(try await Self.page(vault, "/v1/cases?limit=5", as: .director).next == nil)

        // Counts, of the types each caller may read: notes for the mediators, disclosures for the director.
        let counts = { (who: Who) async throws -> [String: Int] in
            let rows = try await Self.page(vault, "/v1/cases", as: who).rows
            return rows.first { $0["case_id"] as? String == cases.a }?["records"] as? [String: Int] ?? [:]
        }
        #expect(try await counts(.director) == ["intake_form": 1, "agreement_to_mediate": 2, "disclosure": 1])
        #expect(try await counts(.mediator) == ["intake_form": 1, "agreement_to_mediate": 2, "session_note": 1])
        // An office that mediates the case counts no disclosure: the list names no office a disclosure goes to.
        let officeRow = try await Self.page(vault, "/v1/cases", as: Self.officeMediator).rows.first
        #expect(
            officeRow?["records"] as? [String: Int] == ["intake_form": 1, "agreement_to_mediate": 2, "session_note": 1])
        // Reading the case shows the same types as the lists.
        let caseTypes = { (who: Who) async throws -> [String] in
            let reply = try await vault.call("GET", "/v1/cases/\(cases.a)", as: Self.peers[who]!, expect: 200)
            return (reply.json["records"] as? [[String: Any]] ?? []).compactMap { $0["type"] as? String }
        }
        #expect(
            try await caseTypes(.director) == [
                "intake_form", "agreement_to_mediate", "agreement_to_mediate", "disclosure",
            ])
        #expect(
            try await caseTypes(.mediator) == [
                "intake_form", "agreement_to_mediate", "agreement_to_mediate", "session_note",
            ])
        let rowA = try await Self.page(vault, "/v1/cases", as: .mediator).rows.first {
            $0["case_id"] as? String == cases.a
        }
        #expect(Set(rowA?["mediators"] as? [String] ?? []).count == 3)
        #expect(Set((rowA ?? [:]).keys) == ["case_id", "state", "created_at", "mediators", "supervisors", "records"])

        // A case's records: the director's types and the mediator's, and pages.
        let recordTypes = { (who: Who, query: String) async throws -> [String] in
            try await Self.page(vault, "/v1/cases/\(cases.a)/records\(query)", as: who).rows.compactMap {
                $0["type"] as? String
            }
        }
        #expect(
            try await recordTypes(.director, "")
                == ["intake_form", "agreement_to_mediate", "agreement_to_mediate", "disclosure"])
        #expect(
            try await recordTypes(.mediator, "")
                == ["intake_form", "agreement_to_mediate", "agreement_to_mediate", "session_note"])
        #expect(try await recordTypes(.director, "?type=session_note") == [])
        #expect(try await recordTypes(.mediator, "?type=agreement_to_mediate").count == 2)
        let everyRecord = try await Self.ids(vault, "/v1/cases/\(cases.a)/records", as: .mediator)
        var pagedRecords: [String] = []
        cursor = nil
        repeat {
            let query = "/v1/cases/\(cases.a)/records?limit=3" + (cursor.map { "&cursor=\($0)" } ?? "")
            let (rows, next) = try await Self.page(vault, query, as: .mediator)
            pagedRecords += rows.compactMap { $0["record_id"] as? String }
            cursor = next
        } while cursor != nil && pagedRecords.count <= 8
        #expect(pagedRecords == everyRecord && everyRecord.count == 4)
        for who in [Who.otherCaseMediator, .removedMediator, .intake, .submitter, .titleIX] {
            try await vault.call("GET", "/v1/cases/\(cases.a)/records", as: Self.peers[who]!, expect: 403)
        }
        let unknown = String(repeating: "0", count: 32)
        try await vault.call("GET", "/v1/cases/\(unknown)/records", as: Self.peers[.director]!, expect: 404)

        // Every query it cannot read: 400 invalid-field, naming the parameter where there is one.
        let bad: [(String, String?)] = [
            ("/v1/cases?state=open", "state"), ("/v1/cases?state=", "state"), ("/v1/cases?limit=0", "limit"),
            ("/v1/cases?limit=201", "limit"), ("/v1/cases?limit=ten", "limit"), ("/v1/cases?limit=-1", "limit"),
            ("/v1/cases?cursor=yesterday", "cursor"),
            ("/v1/cases?cursor=1.\(String(repeating: "AB", count: 16))", "cursor"),
            ("/v1/cases?opened_from=yesterday", "opened_from"), ("/v1/cases?opened_before=2026-02-30", "opened_before"),
            ("/v1/cases?mine=yes", "mine"), ("/v1/cases?state=closed&state=intake", "state"),
            ("/v1/cases?sort=id", nil),
            ("/v1/cases/\(cases.a)/records?type=case_header", "type"),
            ("/v1/cases/\(cases.a)/records?type=recording", "type"),
            ("/v1/cases/\(cases.a)/records?cursor=\(cases.a)", "cursor"),
            ("/v1/cases/\(cases.a)/records?limit=1000", "limit"),
            ("/v1/cases/\(cases.a)/records?state=closed", nil), ("/v1/cases?limit=+5", "limit"),
            ("/v1/cases?limit=007", "limit"), ("/v1/cases/\(cases.a)/records?cursor=1.", "cursor"),
        ]
        for (path, field) in bad {
            let reply = try await vault.call("GET", path, as: Self.peers[.director]!, expect: 400)
            #expect(reply.problemType == "invalid-field", "\(path)")
            #expect(reply.json["field"] as? String == field, "\(path): \(String(decoding: reply.body, as: UTF8.self))")
        }

        // Off the roster, the intake staff's own rows are left.
        try await vault.call("DELETE", "/v1/roster/mediators/uid:4011", as: Self.peers[.director]!, expect: 204)
        #expect(try await Self.ids(vault, "/v1/cases", as: Self.intakeMediator) == [cases.c, cases.b])
        #expect(try await Self.ids(vault, "/v1/cases?mine=true", as: Self.intakeMediator) == [])
        return cases
    }

    @Test("each caller lists exactly their cases and the record types they may read, in process")
    func inProcess() async throws {
        _ = try await InProcess.withVault(roles: Self.roles, extra: AuthorizationMatrixTests.offices) { vault in
            try await Self.scenario(vault)
        }
    }

    @Test(
        "each caller lists exactly their cases and the record types they may read, over the socket as real uids",
        .enabled(if: isRoot, "acting as other uids needs root"))
    func overTheSocket() async throws {
        let daemon = try DaemonProcess(roles: Self.roles, extra: AuthorizationMatrixTests.offices)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let cases = try await Self.scenario(OverTheSocket(daemon: daemon))

        // The same lists through casevaultctl, as its users run it.
        let ctl = { (peer: Peer, arguments: [String]) throws -> (Int32, String, String) in
            try peer.run(DaemonProcess.binary("casevaultctl"), arguments + ["--socket", daemon.socket], input: nil)
        }
        let (listed, table, _) = try ctl(Self.peers[.director]!, ["case", "list"])
        let lines = table.split(separator: "\n")
        #expect(listed == 0 && lines.first?.hasPrefix("CASE") == true, "\(table)")
        #expect(lines.dropFirst().map { String($0.prefix(32)) } == [cases.d, cases.c, cases.b, cases.a], "\(table)")
        #expect(!table.contains(LeakCheck.marker))
        let (mine, json, _) = try ctl(Self.peers[.mediator]!, ["case", "list", "--mine", "--json", "--limit", "1"])
        let document = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        #expect(
            mine == 0 && (document?["cases"] as? [[String: Any]])?.compactMap { $0["case_id"] as? String } == [cases.d])
        let (shown, card, _) = try ctl(Self.peers[.mediator]!, ["case", "show", cases.a])
        #expect(shown == 0 && card.contains("session_note") && !card.contains("disclosure"), "\(card)")
        #expect(!card.contains(LeakCheck.marker))
        let (refused, _, why) = try ctl(Self.peers[.intake]!, ["case", "show", cases.a])
        #expect(refused == 77 && why.hasPrefix("casevaultctl: forbidden: "), "\(why)")
        let (bad, _, usage) = try ctl(Self.peers[.director]!, ["case", "list", "--state", "open"])
        #expect(bad == 64 && usage.contains("--state must be"), "\(usage)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
        LeakCheck.record(log: daemon.log)
    }
}

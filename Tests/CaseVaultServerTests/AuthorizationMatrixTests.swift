import Foundation
import Testing

/// Every route against every kind of caller (docs/API.md): the expectations below are written from the design's
/// role table, independently of the daemon's authorization table, and every refusal must be a 403 problem.
/// The matrix runs in process (no root, seconds) and against the real daemon, as real uids.
@Suite("The authorization matrix", .serialized)
struct AuthorizationMatrixTests {
    enum Who: String, CaseIterable {
        case director, mediator, otherCaseMediator, removedMediator, supervisor, otherCaseSupervisor, intake
        case submitter
        case titleIX, equity, statistician, `operator`, nobody, root
    }

    static let peers: [Who: Peer] = [
        .director: Peer(uid: 4001),
        .mediator: Peer(uid: 4002),
        .otherCaseMediator: Peer(uid: 4003),
        .removedMediator: Peer(uid: 4004),
        .supervisor: Peer(uid: 4011),
        .otherCaseSupervisor: Peer(uid: 4012),
        .intake: Peer(uid: 4005),
        .submitter: Peer(uid: 4006),
        .titleIX: Peer(uid: 4007, groups: [5002]),
        .equity: Peer(uid: 4010, groups: [5003]),
        .statistician: Peer(uid: 4008),
        .operator: Peer(uid: 4009),
        .nobody: Peer(uid: 4999),
        .root: .root,
    ]

    static let roles = """
        director = ["uid:4001"]
        mediator = ["uid:4002", "uid:4003", "uid:4004"]
        supervisor = ["uid:4011", "uid:4012"]
        intake = ["uid:4005"]
        submitter = ["uid:4006"]
        "office:title-ix" = ["gid:5002"]
        "office:equity" = ["gid:5003"]
        statistician = ["uid:4008"]
        operator = ["uid:4009"]
        """

    static let offices = """
        [offices]
        sexual_harassment = "title-ix"
        discrimination = "equity"
        """

    /// Case A (mediators 4002 and 4004, 4004 then taken off the roster) with both agreements, a note, an
    /// intake form and two disclosures; case B (mediator 4003).
    struct Fixture {
        var caseA: String
        var caseB: String
        var intake: String
        /// A second intake form, without an attachment.
        var bare: String
        var note: String
        /// A debrief of case A (its supervisor is 4011).
        var debrief: String
        var harassment: String
        var discrimination: String
        /// The destruction certificate of a record shredded in the fixture.
        var certificate: String
        /// A legal hold on case B.
        var hold: String
    }

    static func fixture(_ daemon: some VaultTransport) async throws -> Fixture {
        let director = Self.peers[.director]!
        for uid in [4002, 4003, 4004, 4011, 4012] {
            try await daemon.call("PUT", "/v1/roster/mediators/uid:\(uid)", as: director)
        }
        let caseA = try await daemon.openCase(by: director, mediators: [4002, 4004])
        let caseB = try await daemon.openCase(by: director, mediators: [4003])
        try await daemon.call(
            "PUT", "/v1/cases/\(caseB)/supervisors", as: director, body: #"{"supervisors": ["uid:4012"]}"#, expect: 200)
        let mediator = Self.peers[.mediator]!
        let intake = try await daemon.file(caseA, Bodies.intake, as: director).string("record_id")
        try await daemon.call(
            "PUT", "/v1/records/\(intake)/attachment", as: director, body: #"{"scan": "\#(LeakCheck.marker)"}"#,
            expect: 201)
        let bare = try await daemon.file(caseA, Bodies.intake, as: director).string("record_id")
        try await daemon.file(caseA, Bodies.agreement("p1"), as: mediator)
        try await daemon.file(caseA, Bodies.agreement("p2", online: true), as: mediator)
        let note = try await daemon.file(caseA, Bodies.note, as: mediator).string("record_id")
        try await daemon.call(
            "PUT", "/v1/cases/\(caseA)/supervisors", as: director, body: #"{"supervisors": ["uid:4011"]}"#, expect: 200)
        let debrief = try await daemon.file(caseA, Bodies.debrief, as: mediator).string("record_id")
        let harassment = try await daemon.file(caseA, Bodies.disclosure("sexual_harassment"), as: mediator).string(
            "record_id")
        let discrimination = try await daemon.file(caseA, Bodies.disclosure("discrimination"), as: mediator).string(
            "record_id")
        // Percent-encoded, as generated clients send it (found by make check-api: it was refused).
        try await daemon.call("DELETE", "/v1/roster/mediators/uid%3A4004", as: director, expect: 204)
        let doomed = try await daemon.file(caseA, Bodies.intake, as: director).string("record_id")
        try await daemon.call(
            "DELETE", "/v1/records/\(doomed)", as: director, body: #"{"reason": "filed_in_error"}"#, expect: 200)
        let certificates = try await daemon.call("GET", "/v1/certificates?case_id=\(caseA)", as: director, expect: 200)
        let last = (certificates.json["certificates"] as? [[String: Any]])?.last?["certificate"] as? [String: Any]
        let certificate = last?["certificate_id"] as? String ?? ""
        let hold = try await daemon.call(
            "POST", "/v1/holds", as: director, body: #"{"case_id": "\#(caseB)", "reason": "audit"}"#, expect: 201)
        return Fixture(
            caseA: caseA, caseB: caseB, intake: intake, bare: bare, note: note, debrief: debrief,
            harassment: harassment,
            discrimination: discrimination, certificate: certificate, hold: hold.string("hold_id")
        )
    }

    struct Operation: Sendable {
        var name: String
        var method: String
        var path: @Sendable (Fixture) -> String
        var body: String?
        /// A body that names the fixture's ids, when the static one cannot.
        var fixtureBody: (@Sendable (Fixture) -> String)? = nil
        /// Who docs/API.md lets do it.
        var allowed: Set<Who>
        /// Whether it changes state, so that an allowed call needs a fixture of its own.
        var mutates: Bool
        /// What an allowed caller gets when it is not a 2xx: key custody on this daemon, whose key comes
        /// from a file, answers 409 `wrong-key-source` once the caller is allowed.
        var allowedStatus: Int? = nil
    }

    static let everyoneWithARole = Set(Who.allCases).subtracting([.nobody])

    static let operations: [Operation] = [
        Operation(
            name: "health", method: "GET", path: { _ in "/v1/health" }, allowed: Set(Who.allCases), mutates: false),
        Operation(
            name: "whoami", method: "GET", path: { _ in "/v1/whoami" }, allowed: everyoneWithARole, mutates: false),
        Operation(
            name: "status", method: "GET", path: { _ in "/v1/admin/status" }, allowed: [.operator, .root],
            mutates: false),
        Operation(
            name: "read the metrics", method: "GET", path: { _ in "/v1/metrics" }, allowed: [.operator, .root],
            mutates: false),
        Operation(
            name: "open a case", method: "POST", path: { _ in "/v1/cases" }, body: Bodies.openCase(mediators: [4002]),
            allowed: [.director, .intake], mutates: true
        ),
        Operation(
            name: "list cases", method: "GET", path: { _ in "/v1/cases" },
            allowed: [
                .director, .intake, .mediator, .otherCaseMediator, .removedMediator, .supervisor, .otherCaseSupervisor,
            ],
            mutates: false),
        Operation(
            name: "read a case", method: "GET", path: { "/v1/cases/\($0.caseA)" }, allowed: [.director, .mediator],
            mutates: false),
        Operation(
            name: "list a case's records", method: "GET", path: { "/v1/cases/\($0.caseA)/records" },
            allowed: [.director, .mediator, .supervisor], mutates: false),
        Operation(
            name: "read its participants", method: "GET", path: { "/v1/cases/\($0.caseA)/participants" },
            allowed: [.director, .mediator], mutates: false
        ),
        Operation(
            name: "file an intake form", method: "POST", path: { "/v1/cases/\($0.caseA)/records" }, body: Bodies.intake,
            allowed: [.director, .intake, .mediator], mutates: true
        ),
        Operation(
            name: "file an agreement", method: "POST", path: { "/v1/cases/\($0.caseA)/records" },
            body: Bodies.agreement("p1"),
            allowed: [.director, .mediator], mutates: true
        ),
        Operation(
            name: "file a session note", method: "POST", path: { "/v1/cases/\($0.caseA)/records" }, body: Bodies.note,
            allowed: [.mediator], mutates: true
        ),
        Operation(
            name: "file a final agreement", method: "POST", path: { "/v1/cases/\($0.caseA)/records" },
            body: Bodies.finalAgreement(),
            allowed: [.director, .mediator], mutates: true
        ),
        Operation(
            name: "file a debrief", method: "POST", path: { "/v1/cases/\($0.caseA)/records" }, body: Bodies.debrief,
            allowed: [.mediator, .supervisor], mutates: true
        ),
        Operation(
            name: "read a debrief", method: "GET", path: { "/v1/records/\($0.debrief)" },
            allowed: [.director, .mediator, .supervisor], mutates: false
        ),
        Operation(
            name: "shred a debrief", method: "DELETE", path: { "/v1/records/\($0.debrief)" },
            body: #"{"reason": "filed_in_error"}"#, allowed: [.director], mutates: true
        ),
        Operation(
            name: "assign supervisors", method: "PUT", path: { "/v1/cases/\($0.caseA)/supervisors" },
            body: #"{"supervisors": ["uid:4011"]}"#, allowed: [.director], mutates: true
        ),
        Operation(
            name: "file an evaluation", method: "POST", path: { "/v1/cases/\($0.caseA)/records" },
            body: Bodies.evaluation,
            allowed: [.director, .submitter, .mediator], mutates: true
        ),
        Operation(
            name: "file a disclosure", method: "POST", path: { "/v1/cases/\($0.caseA)/records" },
            body: Bodies.disclosure("intent_to_harm"), allowed: [.director, .mediator], mutates: true
        ),
        Operation(
            name: "read an intake form", method: "GET", path: { "/v1/records/\($0.intake)" },
            allowed: [.director, .mediator],
            mutates: false
        ),
        Operation(
            name: "attach to an intake form", method: "PUT", path: { "/v1/records/\($0.bare)/attachment" },
            body: #"{"scan": 1}"#,
            allowed: [.director, .intake, .mediator], mutates: true
        ),
        Operation(
            name: "read an intake form's attachment", method: "GET", path: { "/v1/records/\($0.intake)/attachment" },
            allowed: [.director, .mediator], mutates: false
        ),
        Operation(
            name: "read a session note", method: "GET", path: { "/v1/records/\($0.note)" }, allowed: [.mediator],
            mutates: false),
        Operation(
            name: "read a harassment disclosure", method: "GET", path: { "/v1/records/\($0.harassment)" },
            allowed: [.director, .titleIX], mutates: false
        ),
        Operation(
            name: "read a discrimination disclosure", method: "GET", path: { "/v1/records/\($0.discrimination)" },
            allowed: [.director, .equity], mutates: false
        ),
        Operation(
            name: "shred an intake form", method: "DELETE", path: { "/v1/records/\($0.intake)" },
            body: #"{"reason": "filed_in_error"}"#,
            allowed: [.director], mutates: true
        ),
        Operation(
            name: "shred a session note", method: "DELETE", path: { "/v1/records/\($0.note)" },
            body: #"{"reason": "policy"}"#,
            allowed: [.director, .mediator], mutates: true
        ),
        Operation(
            name: "close a case", method: "POST", path: { "/v1/cases/\($0.caseA)/close" },
            body: #"{"outcome": "withdrawn"}"#,
            allowed: [.director, .mediator], mutates: true
        ),
        Operation(
            name: "assign mediators", method: "PUT", path: { "/v1/cases/\($0.caseA)/mediators" },
            body: #"{"mediators": ["uid:4003"]}"#,
            allowed: [.director], mutates: true
        ),
        Operation(
            name: "list certificates", method: "GET", path: { _ in "/v1/certificates" }, allowed: [.director],
            mutates: false),
        Operation(
            name: "read a certificate", method: "GET", path: { "/v1/certificates/\($0.certificate)" },
            allowed: [.director],
            mutates: false
        ),
        Operation(
            name: "read the certificate key", method: "GET", path: { _ in "/v1/certificates/public-key" },
            allowed: [.director, .operator, .root], mutates: false
        ),
        Operation(
            name: "place a hold", method: "POST", path: { _ in "/v1/holds" },
            fixtureBody: { #"{"case_id": "\#($0.caseA)", "reason": "subpoena"}"# }, allowed: [.director], mutates: true
        ),
        Operation(name: "list holds", method: "GET", path: { _ in "/v1/holds" }, allowed: [.director], mutates: false),
        Operation(
            name: "release a hold", method: "DELETE", path: { "/v1/holds/\($0.hold)" }, allowed: [.director],
            mutates: true
        ),
        Operation(
            name: "sweep", method: "POST", path: { _ in "/v1/admin/sweep" }, body: #"{"dry_run": false}"#,
            allowed: [.operator, .root], mutates: true
        ),
        Operation(
            name: "read statistics", method: "GET", path: { _ in "/v1/stats?period=quarter&by=outcome" },
            allowed: [.director, .statistician], mutates: false
        ),
        Operation(
            name: "verify the audit log", method: "GET", path: { _ in "/v1/audit/verify" },
            allowed: [.director, .operator, .root], mutates: false
        ),
        Operation(
            name: "read the newest audit entries", method: "GET", path: { _ in "/v1/audit/entries?last=5" },
            allowed: [.director, .operator, .root], mutates: false
        ),
        Operation(
            name: "initialise the vault", method: "POST", path: { _ in "/v1/admin/init" },
            body: #"{"passphrase": "a long enough passphrase"}"#,
            allowed: [.operator, .root], mutates: false, allowedStatus: 409
        ),
        Operation(
            name: "unseal", method: "POST", path: { _ in "/v1/admin/unseal" },
            body: #"{"passphrase": "a long enough passphrase"}"#,
            allowed: [.operator, .root], mutates: false, allowedStatus: 409
        ),
        Operation(
            name: "seal", method: "POST", path: { _ in "/v1/admin/seal" }, allowed: [.operator, .root], mutates: false,
            allowedStatus: 409),
        Operation(
            name: "rotate the keys", method: "POST", path: { _ in "/v1/admin/rotate" }, body: #"{"limit": 1}"#,
            allowed: [.operator, .root],
            mutates: false
        ),
        Operation(
            name: "back up the vault", method: "POST", path: { _ in "/v1/admin/backup" }, allowed: [.operator, .root],
            mutates: false),
        Operation(
            name: "export the shred ledger", method: "GET", path: { _ in "/v1/admin/ledger" },
            allowed: [.operator, .root], mutates: false),
        // A data directory is restored without the daemon: an allowed caller learns that it is not done here.
        Operation(
            name: "restore a backup", method: "POST", path: { _ in "/v1/admin/restore" }, body: "CVBK2\n",
            allowed: [.operator, .root], mutates: false, allowedStatus: 501),
        // The local store has one daemon: an allowed caller learns that forgetting another is not done here.
        Operation(
            name: "forget a daemon", method: "POST", path: { _ in "/v1/admin/daemons/vault-b/forget" },
            body: #"{"key_file_destroyed": true}"#, allowed: [.operator, .root], mutates: false, allowedStatus: 501),
        Operation(
            name: "list the roster", method: "GET", path: { _ in "/v1/roster/mediators" }, allowed: [.director],
            mutates: false),
        Operation(
            name: "read a roster entry", method: "GET", path: { _ in "/v1/roster/mediators/uid:4002" },
            allowed: [.director],
            mutates: false
        ),
        Operation(
            name: "add to the roster", method: "PUT", path: { _ in "/v1/roster/mediators/uid:4100" },
            allowed: [.director],
            mutates: true
        ),
        Operation(
            name: "remove from the roster", method: "DELETE", path: { _ in "/v1/roster/mediators/uid:4002" },
            allowed: [.director],
            mutates: true
        ),
    ]

    @Test(
        "every route against every caller, in process: allowed exactly as docs/API.md says, every refusal a 403 problem"
    )
    func matrixInProcess() async throws {
        try await InProcess.withVault(roles: Self.roles, extra: Self.offices) { vault in try await Self.matrix(vault) }
    }

    @Test(
        "every route against every caller, over the socket as real uids: allowed exactly as docs/API.md says",
        .enabled(if: isRoot, "acting as other uids needs root")
    )
    func matrixOverTheSocket() async throws {
        let daemon = try DaemonProcess(roles: Self.roles, extra: Self.offices)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        try await Self.matrix(OverTheSocket(daemon: daemon))
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    static func matrix(_ vault: some VaultTransport) async throws {
        let shared = try await Self.fixture(vault)
        var allowedCount = 0
        for operation in Self.operations {
            for who in Who.allCases {
                let expected = operation.allowed.contains(who)
                // An allowed change gets a fixture of its own, so that later checks see the shared one intact.
                let fixture = expected && operation.mutates ? try await Self.fixture(vault) : shared
                let body = operation.fixtureBody?(fixture) ?? operation.body
                let reply = try await vault.send(
                    operation.method, operation.path(fixture), as: Self.peers[who]!, body: body)
                let text = String(decoding: reply.body, as: UTF8.self)
                if expected {
                    let success =
                        operation.allowedStatus.map { reply.status == $0 } ?? (200..<300).contains(reply.status)
                    if success { allowedCount += 1 }
                    #expect(success, "\(who.rawValue) should be allowed to \(operation.name): \(reply.status) \(text)")
                } else {
                    #expect(
                        reply.status == 403, "\(who.rawValue) must not \(operation.name): got \(reply.status) \(text)")
                    #expect(
                        reply.isProblem && reply.problemType == "forbidden",
                        "\(who.rawValue) / \(operation.name): \(text)")
                }
            }
        }
        // Every allowed pair really succeeded (and the matrix is not empty of allowed actions).
        #expect(allowedCount == Self.operations.map(\.allowed.count).reduce(0, +) && allowedCount > 0)
        // The routes under test are every route the server has.
        let tested = Set(Self.operations.map { "\($0.method) \(Self.template($0.path(shared), shared))" })
        #expect(tested == Set(DocumentedRoutes.server.map(\.description)), "a route is missing from the matrix")
    }

    /// The route template of a concrete path.
    static func template(_ path: String, _ fixture: Fixture) -> String {
        var path = path
        for id in [fixture.caseA, fixture.caseB] { path = path.replacingOccurrences(of: id, with: "{case_id}") }
        for id in [
            fixture.intake, fixture.bare, fixture.note, fixture.debrief, fixture.harassment, fixture.discrimination,
        ] {
            path = path.replacingOccurrences(of: id, with: "{record_id}")
        }
        path = path.replacingOccurrences(of: fixture.certificate, with: "{certificate_id}")
        path = path.replacingOccurrences(of: fixture.hold, with: "{hold_id}")
        path = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        path = path.replacingOccurrences(of: "/daemons/vault-b/", with: "/daemons/{daemon}/")
        return path.replacingOccurrences(of: "uid:4002", with: "{user}").replacingOccurrences(
            of: "uid:4100", with: "{user}")
    }

    @Test(
        "removing a mediator from the roster ends their access at their next request",
        .enabled(if: isRoot, "acting as other uids needs root"))
    func rosterRemovalEndsAccess() throws {
        let daemon = try DaemonProcess(roles: Self.roles, extra: Self.offices)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let director = Self.peers[.director]!
        let mediator = Self.peers[.mediator]!
        try daemon.call("PUT", "/v1/roster/mediators/uid:4002", as: director, expect: 201)
        let caseID = try daemon.openCase(by: director, mediators: [4002])
        try daemon.call("GET", "/v1/cases/\(caseID)", as: mediator, expect: 200)
        try daemon.call("DELETE", "/v1/roster/mediators/uid:4002", as: director, expect: 204)
        let refused = try daemon.call("GET", "/v1/cases/\(caseID)", as: mediator, expect: 403)
        #expect(refused.problemType == "forbidden")
        try daemon.file(caseID, Bodies.intake, as: mediator, expect: 403)
        // Back on the roster: access returns, since the case still names them.
        try daemon.call("PUT", "/v1/roster/mediators/uid:4002", as: director, expect: 201)
        try daemon.call("GET", "/v1/cases/\(caseID)", as: mediator, expect: 200)
        // Assigning someone who is not on the roster is refused.
        let notOnRoster = try daemon.call(
            "PUT", "/v1/cases/\(caseID)/mediators", as: director, body: #"{"mediators": ["uid:4003"]}"#, expect: 409
        )
        #expect(notOnRoster.problemType == "not-on-roster")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }
}

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The lifecycle rules of docs/API.md, each shown enforced by a real daemon on its socket.
@Suite("The case lifecycle over the socket", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct LifecycleOverSocketTests {
    static let director = Peer(uid: 4001)
    static let mediator = Peer(uid: 4002)
    static let roles = """
        director = ["uid:4001"]
        mediator = ["uid:4002"]
        """

    static func start(root: String? = nil) throws -> DaemonProcess {
        let daemon = try DaemonProcess(roles: Self.roles, root: root)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        return daemon
    }

    /// A case with both agreements on file, ready for notes.
    static func agreedCase(_ daemon: DaemonProcess) throws -> String {
        try daemon.call("PUT", "/v1/roster/mediators/uid:4002", as: Self.director)
        let caseID = try daemon.openCase(by: Self.director, mediators: [4002])
        try daemon.file(caseID, Bodies.agreement("p1"), as: Self.mediator)
        try daemon.file(caseID, Bodies.agreement("p2", online: true), as: Self.mediator)
        return caseID
    }

    @Test("no record type for recordings or transcripts; unknown types and the case header are refused")
    func noRecordings() throws {
        let daemon = try Self.start()
        let caseID = try Self.agreedCase(daemon)
        for type in ["recording", "transcript"] {
            let reply = try daemon.file(
                caseID, #"{"type": "\#(type)", "content": {"text": "x"}}"#, as: Self.mediator, expect: 422)
            #expect(reply.problemType == "forbidden-record-type")
        }
        for type in ["audio", "case_header"] {
            let reply = try daemon.file(
                caseID, #"{"type": "\#(type)", "content": {"text": "x"}}"#, as: Self.mediator, expect: 400)
            #expect(reply.problemType == "unknown-record-type")
        }
        #expect(try daemon.records(caseID, type: "session_note", as: Self.mediator).isEmpty)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("a session note only once every participant's agreement is on file with every acknowledgement true")
    func notesNeedEveryAgreement() throws {
        let daemon = try Self.start()
        try daemon.call("PUT", "/v1/roster/mediators/uid:4002", as: Self.director)
        let caseID = try daemon.openCase(by: Self.director, mediators: [4002], participants: 3)
        #expect(
            try daemon.file(caseID, Bodies.note, as: Self.mediator, expect: 409).problemType == "agreements-missing")
        try daemon.file(caseID, Bodies.agreement("p1"), as: Self.mediator)
        try daemon.file(caseID, Bodies.agreement("p2"), as: Self.mediator)
        #expect(
            try daemon.file(caseID, Bodies.note, as: Self.mediator, expect: 409).problemType == "agreements-missing")
        // An online agreement without devices off is refused, naming the acknowledgement.
        let refused = try daemon.file(
            caseID, Bodies.agreement("p3", online: true, devicesOff: false), as: Self.mediator, expect: 400)
        #expect(refused.string("field") == "acknowledgements.devices_off")
        #expect(
            try daemon.file(caseID, Bodies.note, as: Self.mediator, expect: 409).problemType == "agreements-missing")
        // An agreement for someone who is not a participant of the case is refused.
        #expect(
            try daemon.file(caseID, Bodies.agreement("p9"), as: Self.mediator, expect: 400).string("field")
                == "participant")
        try daemon.file(caseID, Bodies.agreement("p3", online: true), as: Self.mediator)
        try daemon.file(caseID, Bodies.note, as: Self.mediator)
        #expect(try daemon.records(caseID, type: "session_note", as: Self.mediator).count == 1)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("a final agreement shreds every note in the same operation and lists them; the case closes")
    func finalAgreementShredsNotes() throws {
        let daemon = try Self.start()
        let caseID = try Self.agreedCase(daemon)
        let notes = try (0..<3).map { _ in try daemon.file(caseID, Bodies.note, as: Self.mediator).string("record_id") }
        for note in notes {
            try daemon.call("GET", "/v1/records/\(note)", as: Self.mediator, expect: 200)
        }
        let filed = try daemon.file(caseID, Bodies.finalAgreement(), as: Self.mediator)
        #expect(Set(filed.json["shredded"] as? [String] ?? []) == Set(notes))
        for note in notes {
            #expect(
                try daemon.call("GET", "/v1/records/\(note)", as: Self.mediator, expect: 410).problemType == "shredded")
        }
        let summary = try daemon.call("GET", "/v1/cases/\(caseID)", as: Self.director, expect: 200)
        #expect(summary.string("state") == "closed")
        #expect(try daemon.records(caseID, type: "session_note", as: Self.mediator).isEmpty)
        // Closed: no more notes; evaluations still come in.
        #expect(try daemon.file(caseID, Bodies.note, as: Self.mediator, expect: 409).problemType == "case-closed")
        try daemon.file(caseID, Bodies.evaluation, as: Self.director)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("closing a case without agreement shreds its notes")
    func closingShredsNotes() throws {
        let daemon = try Self.start()
        let caseID = try Self.agreedCase(daemon)
        let notes = try (0..<2).map { _ in try daemon.file(caseID, Bodies.note, as: Self.mediator).string("record_id") }
        let bad = try daemon.call(
            "POST", "/v1/cases/\(caseID)/close", as: Self.director, body: #"{"outcome": "resolved"}"#, expect: 400)
        #expect(bad.string("field") == "outcome")
        let closed = try daemon.call(
            "POST", "/v1/cases/\(caseID)/close", as: Self.director, body: #"{"outcome": "no_agreement"}"#, expect: 200)
        #expect(Set(closed.json["shredded"] as? [String] ?? []) == Set(notes))
        for note in notes {
            try daemon.call("GET", "/v1/records/\(note)", as: Self.mediator, expect: 410)
        }
        #expect(
            try daemon.call(
                "POST", "/v1/cases/\(caseID)/close", as: Self.director, body: #"{"outcome": "withdrawn"}"#, expect: 409
            )
            .problemType == "case-closed")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("outcome_confidential false only with every participant's consent")
    func publicOutcomeNeedsEveryConsent() throws {
        let daemon = try Self.start()
        let caseID = try Self.agreedCase(daemon)
        let refused = try daemon.file(
            caseID, Bodies.finalAgreement(confidential: false, consents: ["p1"]), as: Self.mediator, expect: 400)
        #expect(refused.string("field") == "consents")
        #expect(try daemon.records(caseID, type: "final_agreement", as: Self.director).isEmpty)
        try daemon.file(caseID, Bodies.finalAgreement(confidential: false, consents: ["p1", "p2"]), as: Self.mediator)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("records read back with their content; the participants' names only from the sealed header")
    func recordsReadBack() throws {
        let daemon = try Self.start()
        let caseID = try Self.agreedCase(daemon)
        let id = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let record = try daemon.call("GET", "/v1/records/\(id)", as: Self.director, expect: 200)
        #expect((record.json["content"] as? [String: Any])?["screening"] as? String == LeakCheck.marker)
        #expect(record.string("type") == "intake_form" && record.string("case_id") == caseID)
        let summary = try daemon.call("GET", "/v1/cases/\(caseID)", as: Self.director, expect: 200)
        #expect(summary.json["participants"] as? [String] == ["p1", "p2"])
        #expect(
            !String(decoding: summary.body, as: UTF8.self).contains(LeakCheck.marker), "the case view holds no names")
        let header = try daemon.call("GET", "/v1/cases/\(caseID)/participants", as: Self.director, expect: 200)
        let people = (header.json["header"] as? [String: Any])?["participants"] as? [[String: Any]] ?? []
        #expect(people.count == 2 && (people.first?["name"] as? String)?.contains(LeakCheck.marker) == true)
        // An amendment names the record it supersedes.
        let amended = try daemon.file(
            caseID, #"{"type": "intake_form", "supersedes": "\#(id)", "content": {"dispute_category": "noise"}}"#,
            as: Self.director)
        #expect(amended.string("supersedes") == id)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("the daemon's log, at trace level, names cases but never content or a participant's name")
    func logHoldsNoContent() throws {
        let daemon = try Self.start()
        let caseID = try Self.agreedCase(daemon)
        try daemon.file(caseID, Bodies.note, as: Self.mediator)
        try daemon.file(caseID, Bodies.finalAgreement(), as: Self.mediator)
        try daemon.file(caseID, Bodies.intake, as: Self.mediator, expect: 409)
        #expect(daemon.stop() == 0, "\(daemon.log)")
        let log = daemon.log
        #expect(log.contains(caseID), "the log is captured (it names the case it opened)")
        #expect(!log.contains(LeakCheck.marker))
        // Every daemon the suite starts is searched the same way when it is dropped (DaemonProcess.deinit).
    }

    @Test(
        "SIGKILL while a final agreement is filed: after restart either no agreement and every note, or the agreement and every note shredded",
        .timeLimit(.minutes(5)))
    func finalAgreementSurvivesSIGKILL() throws {
        let cycles = Int(ProcessInfo.processInfo.environment["CASEVAULT_SOCKET_CRASH_CYCLES"] ?? "") ?? 20
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        var daemon = try Self.start(root: root)
        var outcomes = [0, 0]
        for cycle in 0..<cycles {
            let caseID = try Self.agreedCase(daemon)
            let notes = try (0..<3).map { _ in
                try daemon.file(caseID, Bodies.note, as: Self.mediator).string("record_id")
            }
            // File the agreement from a background curl and kill the daemon at a random moment of it.
            let filing = Self.mediator.process(
                "/usr/bin/curl",
                [
                    "-s", "-o", "/dev/null", "--unix-socket", daemon.socket, "-H", "Content-Type: application/json",
                    "--data-binary", Bodies.finalAgreement(), "http://casevault/v1/cases/\(caseID)/records",
                ])
            try filing.run()
            usleep(UInt32.random(in: 0...(cycle.isMultiple(of: 2) ? 40_000 : 12_000)))
            daemon.crash()
            filing.waitUntilExit()
            daemon = try DaemonProcess(roles: Self.roles, root: root)
            #expect(daemon.waitUntilServing(), "cycle \(cycle): \(daemon.log)")
            let agreements = try daemon.records(caseID, type: "final_agreement", as: Self.director)
            let state = try daemon.call("GET", "/v1/cases/\(caseID)", as: Self.director, expect: 200).string("state")
            let statuses = try notes.map { try daemon.call("GET", "/v1/records/\($0)", as: Self.mediator).status }
            if agreements.isEmpty {
                outcomes[0] += 1
                #expect(state == "session", "cycle \(cycle)")
                #expect(statuses == [200, 200, 200], "cycle \(cycle): no agreement, so every note must read")
            } else {
                outcomes[1] += 1
                #expect(agreements.count == 1 && state == "closed", "cycle \(cycle)")
                #expect(
                    statuses == [410, 410, 410], "cycle \(cycle): the agreement is on file, so every note must be gone")
            }
        }
        print("final agreement under SIGKILL: \(outcomes[0]) cycles before the commit, \(outcomes[1]) after")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }
}

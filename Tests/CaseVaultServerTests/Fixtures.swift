import Foundation
import Testing

/// Bodies and steps of a mediation case, for tests that talk to a real daemon. Every name, contact and
/// free-text field carries `LeakCheck.marker`.
enum Bodies {
    static let m = LeakCheck.marker

    static func openCase(participants: Int = 2, mediators: [UInt32]) -> String {
        let people = (1...participants).map {
            #"{"name": "Person \#($0) \#(m)", "contact": "p\#($0)-\#(m)@example.edu"}"#
        }
        let users = mediators.map { #""uid:\#($0)""# }
        return
            #"{"participants": [\#(people.joined(separator: ", "))], "mediators": [\#(users.joined(separator: ", "))]}"#
    }

    static let intake = #"{"type": "intake_form", "content": {"dispute_category": "roommate", "screening": "\#(m)"}}"#

    static func agreement(_ participant: String, online: Bool = false, devicesOff: Bool = true) -> String {
        let onlineAcks = online ? #", "devices_off": \#(devicesOff), "nobody_else_present": true"# : ""
        return #"""
            {"type": "agreement_to_mediate", "content": {"participant": "\#(participant)", "signed_at": "2026-11-20T10:00:00Z",
            "method": "written", "online": \#(online), "note": "\#(m)", "acknowledgements": {"confidentiality": true,
            "no_recording": true, "will_not_compel_mediator": true, "will_not_discuss_outside": true\#(onlineAcks)}}}
            """#
    }

    static let note = #"{"type": "session_note", "content": {"text": "said in session \#(m)"}}"#
    static let debrief = #"{"type": "debrief", "content": {"text": "discussed with the supervisor \#(m)"}}"#

    static func finalAgreement(confidential: Bool = true, consents: [String] = ["p1", "p2"]) -> String {
        let list = consents.map { #""\#($0)""# }.joined(separator: ", ")
        return #"""
            {"type": "final_agreement", "content": {"terms": "terms \#(m)", "outcome": "resolved",
            "outcome_confidential": \#(confidential), "consents": [\#(list)]}}
            """#
    }

    static let evaluation =
        #"{"type": "evaluation", "content": {"satisfaction": 4, "would_recommend": true, "comment": "\#(m)"}}"#

    static func disclosure(_ category: String) -> String {
        #"{"type": "disclosure", "content": {"category": "\#(category)", "summary": "summary \#(m)"}}"#
    }
}

extension Client.Reply {
    /// A string member of the JSON body.
    func string(_ key: String) -> String {
        self.json[key] as? String ?? ""
    }

    var problemType: String {
        self.string("type").replacingOccurrences(of: "urn:casevault:problem:", with: "")
    }

    var isProblem: Bool {
        self.contentType.hasPrefix("application/problem+json")
            && self.string("type").hasPrefix("urn:casevault:problem:")
    }
}

extension DaemonProcess {
    /// One request; records an issue when the status is not `expect`.
    @discardableResult
    func call(
        _ method: String, _ path: String, as peer: Peer = .root, body: String? = nil, expect: Int? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Client.Reply {
        let reply = try Client.request(self, method, path, as: peer, body: body)
        if let expect {
            #expect(
                reply.status == expect, "\(method) \(path): \(String(decoding: reply.body, as: UTF8.self))",
                sourceLocation: sourceLocation
            )
        }
        return reply
    }

    /// Opens a case as `director` with `mediators` (who must be on the roster); returns its id.
    func openCase(by director: Peer, mediators: [UInt32], participants: Int = 2) throws -> String {
        try self.call(
            "POST", "/v1/cases", as: director, body: Bodies.openCase(participants: participants, mediators: mediators),
            expect: 201
        )
        .string("case_id")
    }

    /// Files a record; returns the reply.
    @discardableResult
    func file(
        _ caseID: String, _ body: String, as peer: Peer, expect: Int? = 201,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Client.Reply {
        try self.call(
            "POST", "/v1/cases/\(caseID)/records", as: peer, body: body, expect: expect, sourceLocation: sourceLocation)
    }

    /// The ids of the case's live records of `type`.
    func records(_ caseID: String, type: String, as peer: Peer) throws -> [String] {
        let reply = try self.call("GET", "/v1/cases/\(caseID)", as: peer, expect: 200)
        let records = reply.json["records"] as? [[String: Any]] ?? []
        return records.filter { $0["type"] as? String == type }.compactMap { $0["record_id"] as? String }
    }
}

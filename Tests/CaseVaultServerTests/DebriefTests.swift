import CaseVaultCore
import Foundation
import Testing

/// Debriefs (the policy's third scope item: what mediators and their supervisors discuss after a session
/// is confidential): who files and reads them, when, and that a final agreement leaves them, through the
/// daemon's router in process.
@Suite("Debriefs")
struct DebriefTests {
    static let peers = AuthorizationMatrixTests.peers

    @Test(
        "filed by the case's mediator and supervisor once in session, read by them and the director only, kept by the final agreement"
    )
    func debriefLife() async throws {
        try await InProcess.withVault(roles: AuthorizationMatrixTests.roles, extra: AuthorizationMatrixTests.offices) {
            vault in
            let director = Self.peers[.director]!
            let mediator = Self.peers[.mediator]!
            let supervisor = Self.peers[.supervisor]!
            for uid in [4002, 4003, 4011] {
                try await vault.call("PUT", "/v1/roster/mediators/uid:\(uid)", as: director, expect: 201)
            }
            let caseID = try await vault.openCase(by: director, mediators: [4002])
            // Assigning someone off the roster is refused, naming the field.
            let offRoster = try await vault.call(
                "PUT", "/v1/cases/\(caseID)/supervisors", as: director, body: #"{"supervisors": ["uid:4999"]}"#,
                expect: 409)
            #expect(offRoster.problemType == "not-on-roster" && offRoster.json["field"] as? String == "supervisors")
            let assigned = try await vault.call(
                "PUT", "/v1/cases/\(caseID)/supervisors", as: director, body: #"{"supervisors": ["uid:4011"]}"#,
                expect: 200)
            #expect(
                (assigned.json["supervisors"] as? [String])?.count == 1 && assigned.json["state"] as? String == "intake"
            )
            // Before the agreements a session needs: refused, and nothing was filed.
            let early = try await vault.file(caseID, Bodies.debrief, as: supervisor, expect: 409)
            #expect(early.problemType == "agreements-missing")
            try await vault.file(caseID, Bodies.agreement("p1"), as: mediator)
            #expect(
                try await vault.file(caseID, Bodies.debrief, as: mediator, expect: 409).problemType
                    == "agreements-missing")
            try await vault.file(caseID, Bodies.agreement("p2"), as: mediator)
            // Every agreement on file: a debrief may follow a session, notes taken or not.
            let bySupervisor = try await vault.file(caseID, Bodies.debrief, as: supervisor).string("record_id")
            let note = try await vault.file(caseID, Bodies.note, as: mediator).string("record_id")
            let byMediator = try await vault.file(caseID, Bodies.debrief, as: mediator).string("record_id")
            let unfiled = try await vault.call(
                "GET", "/v1/cases/\(caseID)/records?type=debrief", as: director, expect: 200)
            #expect((unfiled.json["records"] as? [Any])?.count == 2, "a refused debrief was filed")
            // The supervisor attaches to a debrief and reads it back; not to another type.
            try await vault.call(
                "PUT", "/v1/records/\(bySupervisor)/attachment", as: supervisor, body: #"{"minutes": "m"}"#, expect: 201
            )
            try await vault.call("GET", "/v1/records/\(bySupervisor)/attachment", as: supervisor, expect: 200)
            try await vault.call("GET", "/v1/records/\(bySupervisor)/attachment", as: Self.peers[.intake]!, expect: 403)
            try await vault.call(
                "PUT", "/v1/records/\(note)/attachment", as: supervisor, body: #"{"minutes": "m"}"#, expect: 403)
            // Neither the director, intake nor another case's mediator files one.
            for who in [AuthorizationMatrixTests.Who.director, .intake, .otherCaseMediator, .titleIX] {
                try await vault.file(caseID, Bodies.debrief, as: Self.peers[who]!, expect: 403)
            }
            // Read by its case's supervisor and mediators and the director; by no office, intake or other.
            for id in [bySupervisor, byMediator] {
                for who in [AuthorizationMatrixTests.Who.director, .mediator, .supervisor] {
                    let read = try await vault.call("GET", "/v1/records/\(id)", as: Self.peers[who]!, expect: 200)
                    #expect(read.string("type") == "debrief")
                }
                for who in [AuthorizationMatrixTests.Who.intake, .titleIX, .equity, .otherCaseMediator, .submitter] {
                    try await vault.call("GET", "/v1/records/\(id)", as: Self.peers[who]!, expect: 403)
                }
            }
            // The supervisor reaches the debriefs and nothing else of the case.
            try await vault.call("GET", "/v1/records/\(note)", as: supervisor, expect: 403)
            try await vault.call("GET", "/v1/cases/\(caseID)", as: supervisor, expect: 403)
            try await vault.call("GET", "/v1/cases/\(caseID)/participants", as: supervisor, expect: 403)
            let listed = try await vault.call("GET", "/v1/cases/\(caseID)/records", as: supervisor, expect: 200)
            let types = (listed.json["records"] as? [[String: Any]] ?? []).compactMap { $0["type"] as? String }
            #expect(types == ["debrief", "debrief"])
            let cases = try await vault.call("GET", "/v1/cases?mine=true", as: supervisor, expect: 200)
            let rows = cases.json["cases"] as? [[String: Any]] ?? []
            #expect(rows.compactMap { $0["case_id"] as? String } == [caseID])
            #expect(rows.first?["records"] as? [String: Int] == ["debrief": 2])

            // A final agreement shreds the notes, not the debriefs; a closed case still takes debriefs.
            let final = try await vault.file(caseID, Bodies.finalAgreement(), as: mediator)
            #expect(final.json["shredded"] as? [String] == [note])
            try await vault.call("GET", "/v1/records/\(note)", as: mediator, expect: 410)
            try await vault.call("GET", "/v1/records/\(bySupervisor)", as: supervisor, expect: 200)
            try await vault.file(caseID, Bodies.debrief, as: supervisor)
            try await vault.file(caseID, Bodies.note, as: mediator, expect: 409)

            // Off the roster, the supervisor's access ends at the next request, and comes back with it.
            try await vault.call("DELETE", "/v1/roster/mediators/uid:4011", as: director, expect: 204)
            try await vault.call("GET", "/v1/records/\(bySupervisor)", as: supervisor, expect: 403)
            try await vault.file(caseID, Bodies.debrief, as: supervisor, expect: 403)
            let none = try await vault.call("GET", "/v1/cases", as: supervisor, expect: 200)
            #expect((none.json["cases"] as? [[String: Any]])?.isEmpty == true)
            try await vault.call("PUT", "/v1/roster/mediators/uid:4011", as: director, expect: 201)
            try await vault.call("GET", "/v1/records/\(bySupervisor)", as: supervisor, expect: 200)
        }
    }

    @Test("a case withdrawn before its agreements takes no debrief")
    func noDebriefWithoutSession() async throws {
        try await InProcess.withVault(roles: AuthorizationMatrixTests.roles, extra: AuthorizationMatrixTests.offices) {
            vault in
            let director = Self.peers[.director]!
            try await vault.call("PUT", "/v1/roster/mediators/uid:4002", as: director, expect: 201)
            let caseID = try await vault.openCase(by: director, mediators: [4002])
            try await vault.call(
                "POST", "/v1/cases/\(caseID)/close", as: director, body: #"{"outcome": "withdrawn"}"#, expect: 200)
            let refused = try await vault.file(caseID, Bodies.debrief, as: Self.peers[.mediator]!, expect: 409)
            #expect(refused.problemType == "agreements-missing")
        }
    }

    @Test("kept a year after the case closes by default, and read and filed under actions of its own")
    func schedule() {
        let rule = RetentionSchedule.standard.rules[.debrief]
        #expect(rule == RetentionRule(years: 1, after: .caseClosed))
        #expect(RecordType.fileable.contains(.debrief))
        #expect(Action.reading(.debrief) == .readDebrief)
    }
}

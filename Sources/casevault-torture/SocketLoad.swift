// The load and the checks of the daemon-level power-cut test: clients of a real casevaultd on its socket,
// as one uid that holds the director, mediator and operator roles.
import ArgumentParser
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A JSON string literal of `text` (the driver's texts are plain ASCII words).
private func quoted(_ text: String) -> String { "\"\(text)\"" }

/// Every `record_id` anywhere in a JSON value.
func recordIDs(in value: Any) -> [String] {
    if let object = value as? [String: Any] {
        let own = (object["record_id"] as? String).map { [$0] } ?? []
        return own + object.values.flatMap(recordIDs(in:))
    }
    if let array = value as? [Any] { return array.flatMap(recordIDs(in:)) }
    return []
}

extension Torture {
    struct SocketLoad: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "socket-load",
            abstract:
                "Work a real daemon from many clients: cases, notes, shreds, final agreements, evaluations, sweeps, rotations, backups.",
            discussion: """
                Runs as a uid that holds the director, mediator and operator roles. One client shreds the records \
                --shred names. Each other client opens a case, files \
                both agreements and some session notes, shreds some of them, then files a final agreement or \
                closes the case (which shreds every note), then files an evaluation; and again. Meanwhile one \
                more client sweeps, rotates, backs up and verifies the audit log in turn. The retention \
                schedule must make evaluations due at once ("0 days after filed"), so that every sweep \
                disposes of the evaluations acknowledged before it began. Lines, as put-loop's: `put <id> \
                <text>` once a record's filing was acknowledged (a text with `-e` is an evaluation's), \
                `shredding <id>` before a shred that may take it and `shred <id>` once that shred was \
                acknowledged, `did <action>` for the operator's, `error <what> <status> <code>` for an \
                answer that should not have been given, and with --keep-going `failed <what> <code>` (`failed \
                shred <id> <code>`) for a server error taken as a refusal. Runs until killed, or with --cases \
                and --rounds until that work is done (or the daemon goes), then says `finished`.
                """
        )
        @Option(help: "The daemon's socket.") var socket: String
        @Option(help: "Concurrent clients filing records.") var clients: Int = 16
        @Option(help: "A tag in the records' texts, so that runs never repeat a text.") var tag: String
        @Option(help: "A file of evaluation ids still live from earlier runs: the first sweep disposes of them.")
        var evaluations: String?
        @Option(
            help: "A file of record ids from earlier runs that the operator shreds by request before anything else.")
        var shred: String?
        @Option(help: "Milliseconds between the operator's actions.") var pause: Int = 10
        @Option(help: "The operator's first action: 0 sweep, 1 rotate, 2 backup, 3 audit verify (default: any).")
        var first: Int?
        @Option(help: "Cases each client files before it stops (default: until killed).") var cases: Int?
        @Option(help: "Rounds of the operator's four actions before it stops (default: until killed).") var rounds: Int?
        @Flag(
            help:
                "Take a server error (5xx, as from a failing disk) as a refusal: say `failed …` and go on with the next case or action."
        )
        var keepGoing = false

        func validate() throws {
            guard (self.cases == nil) == (self.rounds == nil) else {
                throw ValidationError("--cases and --rounds go together: a bounded run needs both")
            }
        }

        /// What the sweeper must know to say which evaluations a sweep certainly took.
        struct Sweeps {
            var started = 0
            var running = false
            var evaluations: [String] = []
        }

        /// The sweeps' state, shared by the clients and the operator.
        final class SweepBook: Sendable {
            let state: Mutex<Sweeps>

            init(evaluations: [String]) {
                self.state = Mutex(Sweeps(evaluations: evaluations))
            }
        }

        /// How the clients take answers and when they stop.
        struct Plan: Sendable {
            var keepGoing: Bool
            var cases: Int?
            var rounds: Int?
        }

        /// A server error taken as a refusal (--keep-going), already said: the client goes on.
        struct Refused: Error {}
        /// An answer that should not have been given, already said: the client stops.
        struct Wrong: Error {}

        func run() throws {
            let me = "uid:\(getuid())"
            let plan = Plan(keepGoing: self.keepGoing, cases: self.cases, rounds: self.rounds)
            let setup = SocketClient(path: self.socket)
            let roster = try setup.call("PUT", "/v1/roster/mediators/\(me)")
            if roster.status != 200 && roster.status != 201 {
                // On a failing disk the uid may already be on the roster from an earlier run; the cases will say.
                guard plan.keepGoing && roster.status >= 500 else {
                    emit("error roster \(roster.status) \(roster.code)")
                    Glibc.exit(3)
                }
                emit("failed roster \(roster.code)")
            }
            func ids(_ path: String?) throws -> [String] {
                try path.map { try String(contentsOfFile: $0, encoding: .utf8).split(separator: "\n").map(String.init) }
                    ?? []
            }
            let earlier = try ids(self.evaluations)
            let victims = try ids(self.shred)
            let sweeps = SweepBook(evaluations: earlier)
            emit("ready")
            let (socket, tag) = (self.socket, self.tag)
            let clients = DispatchGroup()
            for client in 0..<self.clients {
                clients.enter()
                Thread {
                    Self.fileCases(
                        client: client, socket: socket, tag: "\(tag)-\(client)", me: me, sweeps: sweeps, plan: plan)
                    clients.leave()
                }.start()
            }
            // Records of earlier runs, shredded first by one more client, so that every run shreds something
            // whose bytes were seen live.
            clients.enter()
            Thread {
                Self.shred(victims, socket: socket, plan: plan)
                clients.leave()
            }.start()
            Self.operate(
                socket: socket, pause: self.pause, sweeps: sweeps, first: self.first ?? Int.random(in: 0..<4),
                plan: plan)
            clients.wait()
            if plan.cases == nil { Self.idle() }
            emit("finished")
        }

        /// Until killed: what a client of an unbounded run does once the daemon went.
        static func idle() -> Never {
            while true { sleep(60) }
        }

        /// Checks an answer: a server error under --keep-going is said as `failed <what> <code>` and thrown as
        /// `Refused`; any other unexpected answer is said as `error <what> <status> <code>` and thrown as `Wrong`.
        static func expect(_ ok: Bool, _ what: String, _ reply: SocketClient.Reply, _ plan: Plan) throws {
            if ok { return }
            if plan.keepGoing && reply.status >= 500 {
                emit("failed \(what) \(reply.code)")
                throw Refused()
            }
            emit("error \(what.split(separator: " ").first ?? "") \(reply.status) \(reply.code)")
            throw Wrong()
        }

        /// One client's cases, one after another, until it has filed its share, the daemon goes or an answer
        /// is wrong.
        static func fileCases(client: Int, socket: String, tag: String, me: String, sweeps: SweepBook, plan: Plan) {
            let http = SocketClient(path: socket)
            var n = 0
            var filed = 0
            while plan.cases.map({ filed < $0 }) ?? true {
                filed += 1
                do {
                    try Self.fileCase(http: http, tag: tag, me: me, sweeps: sweeps, plan: plan, n: &n)
                } catch is Refused {
                    continue
                } catch {
                    // The daemon went, or answered what it should not have: nothing more is acknowledged.
                    break
                }
            }
            if plan.cases == nil { Self.idle() }
        }

        /// One case: opened, both agreements, 2–8 notes (some shredded), a final agreement or a close, an evaluation.
        static func fileCase(http: SocketClient, tag: String, me: String, sweeps: SweepBook, plan: Plan, n: inout Int)
            throws
        {
            func file(_ caseID: String, _ body: String) throws -> String {
                let reply = try http.call("POST", "/v1/cases/\(caseID)/records", body)
                let id = reply.json["record_id"] as? String
                try expect(reply.status == 201 && id != nil, "file", reply, plan)
                return id ?? ""
            }
            let people =
                #"[{"name": "A \#(tag)", "contact": "a@example.edu"}, {"name": "B \#(tag)", "contact": "b@example.edu"}]"#
            let opened = try http.call(
                "POST", "/v1/cases", #"{"participants": \#(people), "mediators": [\#(quoted(me))]}"#)
            try expect(opened.status == 201 && opened.json["case_id"] is String, "open", opened, plan)
            let caseID = opened.json["case_id"] as? String ?? ""
            for participant in ["p1", "p2"] {
                _ = try file(
                    caseID,
                    #"""
                    {"type": "agreement_to_mediate", "content": {"participant": "\#(participant)", "signed_at": "2026-11-20T10:00:00Z",
                    "method": "written", "online": false, "acknowledgements": {"confidentiality": true, "no_recording": true,
                    "will_not_compel_mediator": true, "will_not_discuss_outside": true}}}
                    """#)
            }
            var notes: [String] = []
            for _ in 0..<Int.random(in: 2...8) {
                let text = "\(tag)-n\(n)"
                n += 1
                let id = try file(caseID, #"{"type": "session_note", "content": {"text": \#(quoted(text))}}"#)
                emit("put \(id) \(text)")
                notes.append(id)
                if notes.count >= 2, Int.random(in: 0..<3) == 0 {
                    let victim = notes.remove(at: Int.random(in: 0..<notes.count))
                    emit("shredding \(victim)")
                    let shred = try http.call("DELETE", "/v1/records/\(victim)", #"{"reason": "filed_in_error"}"#)
                    try expect(shred.status == 200, "shred \(victim)", shred, plan)
                    emit("shred \(victim)")
                }
            }
            // Either way every note of the case goes, in the same operation.
            for id in notes { emit("shredding \(id)") }
            let shredded: [String]
            if Bool.random() {
                let text = "\(tag)-f\(n)"
                n += 1
                let body = #"""
                    {"type": "final_agreement", "content": {"terms": \#(quoted(text)), "outcome": "resolved",
                    "outcome_confidential": true, "consents": ["p1", "p2"]}}
                    """#
                let reply = try http.call("POST", "/v1/cases/\(caseID)/records", body)
                try expect(reply.status == 201 && reply.json["record_id"] is String, "final", reply, plan)
                emit("put \(reply.json["record_id"] as? String ?? "") \(text)")
                shredded = reply.json["shredded"] as? [String] ?? []
            } else {
                let reply = try http.call("POST", "/v1/cases/\(caseID)/close", #"{"outcome": "no_agreement"}"#)
                try expect(reply.status == 200, "close", reply, plan)
                shredded = reply.json["shredded"] as? [String] ?? []
            }
            for id in shredded { emit("shred \(id)") }
            if Set(shredded) != Set(notes) { emit("error final-shredded 200 not-every-note") }
            // An evaluation, due at once: a sweep that began before it was acknowledged may take it.
            let text = "\(tag)-e\(n)"
            n += 1
            let (before, running) = sweeps.state.withLock { ($0.started, $0.running) }
            let id = try file(
                caseID,
                #"{"type": "evaluation", "content": {"satisfaction": 4, "would_recommend": true, "comment": \#(quoted(text))}}"#
            )
            emit("put \(id) \(text)")
            sweeps.state.withLock { state in
                if running || state.running || state.started != before { emit("shredding \(id)") }
                state.evaluations.append(id)
            }
        }

        /// Shreds `victims` by request, one after another, until the daemon goes.
        static func shred(_ victims: [String], socket: String, plan: Plan) {
            let http = SocketClient(path: socket)
            for id in victims {
                emit("shredding \(id)")
                do {
                    let reply = try http.call("DELETE", "/v1/records/\(id)", #"{"reason": "filed_in_error"}"#)
                    try expect(reply.status == 200, "shred \(id)", reply, plan)
                    emit("shred \(id)")
                } catch is Refused {
                    continue
                } catch {
                    break
                }
            }
        }

        /// The operator: a sweep, a rotation, a backup and an audit verification in turn, until it has done its
        /// rounds, the daemon goes or an answer is wrong.
        static func operate(socket: String, pause: Int, sweeps: SweepBook, first: Int, plan: Plan) {
            let http = SocketClient(path: socket)
            // Runs begin at each of the four in turn, so that short runs between cuts reach every one.
            var round = first - 1
            while plan.rounds.map({ round - first + 1 < $0 * 4 }) ?? true {
                usleep(UInt32(pause * 1000))
                round += 1
                do {
                    switch (round % 4 + 4) % 4 {
                    case 0:
                        let taken = sweeps.state.withLock { state in
                            state.started += 1
                            state.running = true
                            defer { state.evaluations = [] }
                            return state.evaluations
                        }
                        defer { sweeps.state.withLock { $0.running = false } }
                        for id in taken { emit("shredding \(id)") }
                        // Every taken evaluation was filed before this moment, so before the sweep's own clock.
                        usleep(2_000)
                        let reply = try http.call("POST", "/v1/admin/sweep")
                        try expect(reply.status == 200, "sweep", reply, plan)
                        for id in taken { emit("shred \(id)") }
                        emit("did sweep")
                    case 1:
                        let reply = try http.call("POST", "/v1/admin/rotate")
                        try expect(reply.status == 200, "rotate", reply, plan)
                        emit("did rotate")
                    case 2:
                        let reply: SocketClient.Reply
                        do {
                            reply = try http.call("POST", "/v1/admin/backup")
                        } catch {
                            // A stream cut short while the daemon still answers: a backup that failed once begun.
                            guard plan.keepGoing,
                                (try? SocketClient(path: socket).call("GET", "/v1/health"))?.status == 200
                            else { throw error }
                            emit("failed backup cut-short")
                            throw Refused()
                        }
                        try expect(reply.status == 200 && !reply.body.isEmpty, "backup", reply, plan)
                        emit("did backup")
                    default:
                        let reply = try http.call("GET", "/v1/audit/verify")
                        try expect(
                            reply.status == 200 && reply.json["ok"] as? Bool == true, "audit-verify", reply, plan)
                        emit("did audit-verify")
                    }
                } catch is Refused {
                    continue
                } catch {
                    break
                }
            }
            if plan.rounds == nil { Self.idle() }
        }
    }

    struct SocketCheck: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "socket-check",
            abstract: "Read records back through a daemon's socket, as its standard input lists them.",
            discussion: """
                Input lines: `live <id> <text>` (must read back with that text), `gone <id>` (must answer \
                shredded or not found), `either <id> <text>` (one or the other). Output: `lost <id> <status>`, \
                `changed <id>`, `resurrected <id>` and `wrong <id> <status>` for what breaks a promise, `kept \
                <id>` or `shredded <id>` for each `either`, then `certificate <record id>` for every record \
                a shred certificate names, `audit <ok> <entries>` from the audit verification, and `done`.
                """
        )
        @Option(help: "The daemon's socket.") var socket: String

        /// The text a record was filed with: its note's text, its evaluation's comment or its agreement's terms.
        static func text(of reply: SocketClient.Reply) -> String? {
            let content = reply.json["content"] as? [String: Any] ?? [:]
            return (content["text"] ?? content["comment"] ?? content["terms"]) as? String
        }

        func run() throws {
            let http = SocketClient(path: self.socket)
            while let line = readLine() {
                let parts = line.split(separator: " ").map(String.init)
                guard parts.count >= 2 else { continue }
                let reply = try http.call("GET", "/v1/records/\(parts[1])")
                let gone = reply.status == 410 || reply.status == 404
                switch parts[0] {
                case "live":
                    if reply.status != 200 {
                        emit("lost \(parts[1]) \(reply.status)")
                    } else if Self.text(of: reply) != parts.last {
                        emit("changed \(parts[1])")
                    }
                case "gone":
                    if !gone { emit("resurrected \(parts[1]) \(reply.status)") }
                default:
                    if gone {
                        emit("shredded \(parts[1])")
                    } else if reply.status == 200 && Self.text(of: reply) == parts.last {
                        emit("kept \(parts[1])")
                    } else {
                        emit("wrong \(parts[1]) \(reply.status)")
                    }
                }
            }
            let certificates = try http.call("GET", "/v1/certificates")
            guard certificates.status == 200 else {
                throw ValidationError("certificates: \(certificates.status) \(certificates.code)")
            }
            for id in Set(recordIDs(in: certificates.json)) { emit("certificate \(id)") }
            let audit = try http.call("GET", "/v1/audit/verify")
            emit("audit \(audit.json["ok"] as? Bool ?? false) \(audit.json["entries"] as? Int ?? -1)")
            emit("done")
        }
    }
}

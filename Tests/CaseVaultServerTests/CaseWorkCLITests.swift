import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A mediation case's daily work through `casevaultctl` alone, as the people who do it: each a real uid
/// on the real socket of a real daemon, each step's output and exit code checked.
@Suite("Case work from the command line", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct CaseWorkCLITests {
    static let roles = """
        director = ["uid:4001"]
        mediator = ["uid:4002", "uid:4003"]
        supervisor = ["uid:4011"]
        intake = ["uid:4005"]
        submitter = ["uid:4006"]
        """
    static let director = Peer(uid: 4001)
    static let mediator = Peer(uid: 4002)
    static let otherMediator = Peer(uid: 4003)
    static let supervisor = Peer(uid: 4011)
    static let intake = Peer(uid: 4005)
    static let submitter = Peer(uid: 4006)

    /// What one run of casevaultctl gave.
    struct Run {
        var status: Int32
        var out: String
        var err: String

        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(self.out.utf8))) as? [String: Any] ?? [:]
        }
    }

    let daemon: DaemonProcess
    /// A directory every test uid may read and write, for the files the commands read and write.
    let work: String

    init() throws {
        self.daemon = try DaemonProcess(roles: Self.roles)
        self.work = DaemonProcess.temporaryRoot()
        chmod(self.work, 0o777)
    }

    @discardableResult
    func ctl(
        _ peer: Peer, _ arguments: [String], input: String? = nil, environment: [String: String]? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Run {
        let (status, out, err) = try peer.run(
            DaemonProcess.binary("casevaultctl"), arguments + ["--socket", self.daemon.socket], input: input,
            environment: environment)
        // No content, and no participant's name, ever reaches standard error.
        #expect(!err.contains(LeakCheck.marker), "\(arguments): \(err)", sourceLocation: sourceLocation)
        return Run(status: status, out: out, err: err)
    }

    /// Runs `arguments` with `--json`, expecting exit 0; the document it printed.
    @discardableResult
    func document(
        _ peer: Peer, _ arguments: [String], input: String? = nil, sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> [String: Any] {
        let run = try self.ctl(peer, arguments + ["--json"], input: input, sourceLocation: sourceLocation)
        #expect(run.status == 0, "\(arguments): \(run.err)", sourceLocation: sourceLocation)
        return run.json
    }

    /// The `content` member of one of `Bodies`' records, as `record file --from` reads it.
    static func content(_ body: String) -> String {
        let object = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
        let data = (try? JSONSerialization.data(withJSONObject: object["content"] ?? [:])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// Writes `text` into a file in the shared directory, readable by every test uid; its path.
    func file(_ name: String, _ bytes: Data) -> String {
        let path = self.work + "/" + name
        _ = FileManager.default.createFile(atPath: path, contents: bytes, attributes: [.posixPermissions: 0o644])
        return path
    }

    @Test(
        "a whole case, open to close, through casevaultctl alone as director, intake, mediator, supervisor and submitter; each step's output and exit code"
    )
    func wholeCase() throws {
        #expect(self.daemon.waitUntilServing(), "\(self.daemon.log)")
        let m = LeakCheck.marker

        // The director puts the mediator and the supervisor on the roster.
        for user in ["uid:4002", "uid:4011"] {
            let added = try self.ctl(Self.director, ["roster", "add", user])
            #expect(added.status == 0 && added.out.contains("added"), "\(added)")
        }
        let roster = try self.document(Self.director, ["roster", "list"])
        let users = (roster["mediators"] as? [[String: Any]] ?? []).compactMap { $0["uid"] as? Int }
        #expect(Set(users) == [4002, 4011], "\(roster)")
        #expect(try self.ctl(Self.intake, ["roster", "list"]).status == 77, "only the director reads the roster")

        // Intake opens the case, the names off the command line (standard input), and files the intake form.
        let opened = try self.document(
            Self.intake, ["case", "open", "--participants-from", "-"], input: "Alice Doe \(m)\nBob Roe \(m)\n")
        let caseID = try #require(opened["case_id"] as? String)
        #expect(opened["participants"] as? [String] == ["p1", "p2"] && opened["state"] as? String == "intake")
        let intakeForm = try self.document(
            Self.intake, ["record", "file", caseID, "--type", "intake_form", "--from", "-"],
            input: Self.content(Bodies.intake))
        let intakeID = try #require(intakeForm["record_id"] as? String)
        #expect(intakeForm["type"] as? String == "intake_form")

        // The director assigns the mediator and the supervisor; the table says so.
        let assigned = try self.ctl(Self.director, ["case", "mediators", caseID, "uid:4002"])
        #expect(assigned.status == 0 && assigned.out.contains("uid:4002"), "\(assigned)")
        #expect(try self.ctl(Self.director, ["case", "supervisors", caseID, "uid:4011"]).status == 0)
        #expect(
            try self.ctl(Self.mediator, ["case", "mediators", caseID, "uid:4003"]).status == 77,
            "a mediator does not assign mediators")

        // The mediator finds the case, and files both agreements (from files) and a session note.
        let mine = try self.ctl(Self.mediator, ["case", "list", "--mine"])
        #expect(mine.status == 0 && mine.out.contains(caseID), "\(mine)")
        var agreements: [String] = []
        for participant in ["p1", "p2"] {
            let path = self.file(
                "agreement-\(participant).json", Data(Self.content(Bodies.agreement(participant)).utf8))
            let filed = try self.document(
                Self.mediator, ["record", "file", caseID, "--type", "agreement_to_mediate", "--from", path])
            agreements.append(try #require(filed["record_id"] as? String))
        }
        let note = try self.document(
            Self.mediator, ["record", "file", caseID, "--type", "session_note", "--from", "-"],
            input: Self.content(Bodies.note))
        let noteID = try #require(note["record_id"] as? String)
        let notes = try self.ctl(Self.mediator, ["record", "list", caseID, "--type", "session_note"])
        #expect(notes.status == 0 && notes.out.contains(noteID), "\(notes)")
        let read = try self.ctl(Self.mediator, ["record", "get", noteID])
        #expect(read.status == 0 && read.out.contains("said in session \(m)") && read.out.contains("session_note"))
        let refused = try self.ctl(Self.intake, ["record", "get", noteID])
        #expect(refused.status == 77 && refused.err.hasPrefix("casevaultctl: forbidden: "), "\(refused)")

        // The signed agreement's scan, attached and read back byte for byte.
        var scan = Data("%PDF-1.7\n".utf8)
        for index in 0..<(3 << 16) { scan.append(UInt8(truncatingIfNeeded: index &* 31)) }
        let attached = try self.document(
            Self.mediator, ["attachment", "put", agreements[0], self.file("agreement.pdf", scan)])
        #expect(attached["size"] as? Int == scan.count && attached["media_type"] as? String == "application/pdf")
        let out = self.work + "/downloaded.pdf"
        let fetched = try self.ctl(Self.director, ["attachment", "get", agreements[0], "--out", out])
        #expect(fetched.status == 0, "\(fetched)")
        #expect(FileManager.default.contents(atPath: out) == scan, "the attachment came back changed")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: self.work).filter {
            $0.hasPrefix(".casevaultctl-download-")
        }
        #expect(leftovers.isEmpty, "\(leftovers)")

        // The supervisor files a debrief, which the director may read and intake may not.
        let debrief = try self.document(
            Self.supervisor, ["record", "file", caseID, "--type", "debrief", "--from", "-"],
            input: Self.content(Bodies.debrief))
        let debriefID = try #require(debrief["record_id"] as? String)
        #expect(
            try self.ctl(Self.director, ["record", "get", debriefID]).out.contains("discussed with the supervisor"))

        // The final agreement closes the case and shreds the note, and says so.
        let final = try self.ctl(
            Self.mediator, ["record", "file", caseID, "--type", "final_agreement", "--from", "-"],
            input: Self.content(Bodies.finalAgreement()))
        #expect(final.status == 0 && final.out.contains("shredded note") && final.out.contains(noteID), "\(final)")
        let gone = try self.ctl(Self.mediator, ["record", "get", noteID])
        #expect(gone.status == 1 && gone.err.hasPrefix("casevaultctl: shredded: "), "\(gone)")

        // The participant's evaluation comes in after the close.
        let evaluation = try self.ctl(
            Self.submitter, ["record", "file", caseID, "--type", "evaluation", "--from", "-"],
            input: Self.content(Bodies.evaluation))
        #expect(evaluation.status == 0, "\(evaluation)")
        let shown = try self.document(Self.director, ["case", "show", caseID])
        #expect(shown["state"] as? String == "closed", "\(shown)")
        let types = (shown["records"] as? [[String: Any]] ?? []).compactMap { $0["type"] as? String }
        #expect(
            Set(types) == ["intake_form", "agreement_to_mediate", "final_agreement", "evaluation", "debrief"],
            "\(types)")
        let listed = try self.ctl(Self.director, ["record", "list", caseID])
        #expect(listed.status == 0 && listed.out.contains(intakeID), "\(listed)")
        // The mediator, who may see session notes, sees none left.
        let left = try self.ctl(Self.mediator, ["record", "list", caseID, "--type", "session_note"])
        #expect(left.status == 0 && !left.out.contains(noteID), "\(left)")

        // A second case ends without agreement: closing it shreds its note; the director shreds a form.
        let second = try self.document(
            Self.director,
            ["case", "open", "--participant", "Carol \(m)", "--participant", "Dan \(m)", "--mediator", "uid:4002"])
        let secondID = try #require(second["case_id"] as? String)
        let secondIntake = try self.document(
            Self.intake, ["record", "file", secondID, "--type", "intake_form", "--from", "-"],
            input: Self.content(Bodies.intake))
        for participant in ["p1", "p2"] {
            try self.document(
                Self.mediator, ["record", "file", secondID, "--type", "agreement_to_mediate", "--from", "-"],
                input: Self.content(Bodies.agreement(participant)))
        }
        let secondNote = try self.document(
            Self.mediator, ["record", "file", secondID, "--type", "session_note", "--from", "-"],
            input: Self.content(Bodies.note))
        let closed = try self.ctl(Self.mediator, ["case", "close", secondID, "--outcome", "no_agreement"])
        #expect(
            closed.status == 0 && closed.out.contains("closed")
                && closed.out.contains(secondNote["record_id"] as? String ?? "?"), "\(closed)")
        let secondIntakeID = try #require(secondIntake["record_id"] as? String)
        let shredded = try self.ctl(Self.director, ["record", "shred", secondIntakeID, "--reason", "filed_in_error"])
        #expect(shredded.status == 0 && shredded.out.contains(secondIntakeID), "\(shredded)")
        #expect(try self.ctl(Self.director, ["record", "get", secondIntakeID]).status == 1)

        // Taking the mediator off the roster ends their access at once.
        #expect(try self.ctl(Self.director, ["roster", "remove", "uid:4002"]).status == 0)
        let after = try self.ctl(Self.mediator, ["case", "list", "--mine"])
        #expect(after.status == 0 && !after.out.contains(caseID) && !after.out.contains(secondID), "\(after)")
        #expect(try self.ctl(Self.mediator, ["record", "get", agreements[1]]).status == 77)
        #expect(self.daemon.stop() == 0, "\(self.daemon.log)")
    }

    @Test(
        "bad input is refused with a clear message and exit code before anything is sent, or by the daemon with its problem code; nothing is filed"
    )
    func badInput() throws {
        #expect(self.daemon.waitUntilServing(), "\(self.daemon.log)")
        #expect(try self.ctl(Self.director, ["roster", "add", "uid:4002"]).status == 0)
        let opened = try self.document(
            Self.director,
            ["case", "open", "--participant", "A \(LeakCheck.marker)", "--participant", "B", "--mediator", "uid:4002"])
        let caseID = try #require(opened["case_id"] as? String)
        let note = Self.content(Bodies.note)
        let usage: [([String], String?, String)] = [
            (["record", "file", caseID, "--type", "recording", "--from", "-"], note, "--type must be one of"),
            (["record", "file", caseID, "--type", "session_note"], nil, "--from FILE"),
            (["record", "file", caseID, "--type", "session_note", "--from", "-", "--edit"], note, "--from FILE"),
            (["record", "file", "not-a-case", "--type", "session_note", "--from", "-"], note, "a case id is"),
            (["record", "file", caseID, "--type", "session_note", "--from", "-"], "[1, 2]", "not a JSON object"),
            (["record", "shred", String(repeating: "a", count: 32), "--reason", "because"], nil, "--reason must be"),
            (["case", "open", "--participant", "Only one"], nil, "2 to 20 participants"),
            (["case", "close", caseID, "--outcome", "settled"], nil, "--outcome must be"),
            (["disclosure", "file", caseID, "--category", "gossip", "--from", "-"], "x", "--category must be"),
            (["disclosure", "file", caseID, "--from", "-"], "x", "give --category"),
        ]
        // Refused before anything is sent: the daemon's audit log, which records every request it
        // receives, gains no entry.
        func requests() -> Int {
            let log = (try? String(contentsOfFile: self.daemon.root + "/data/audit/log", encoding: .utf8)) ?? ""
            return log.components(separatedBy: #""kind":"request""#).count - 1
        }
        usleep(500_000)  // The last request's entries are written.
        let before = requests()
        for (arguments, input, says) in usage {
            let run = try self.ctl(Self.director, arguments, input: input)
            #expect(run.status == 64 && run.err.contains(says), "\(arguments): \(run.status) \(run.err)")
        }
        usleep(500_000)
        #expect(before > 0 && requests() == before, "casevaultctl sent a request it should have refused")
        let unreadable = try self.ctl(
            Self.mediator, ["record", "file", caseID, "--type", "session_note", "--from", self.work + "/missing.json"])
        #expect(unreadable.status == 66, "\(unreadable)")
        // The daemon's refusals: its stable code, then what to fix.
        let early = try self.ctl(
            Self.mediator, ["record", "file", caseID, "--type", "session_note", "--from", "-"], input: note)
        #expect(early.status == 1 && early.err.hasPrefix("casevaultctl: agreements-missing: "), "\(early)")
        let incomplete = try self.ctl(
            Self.mediator, ["record", "file", caseID, "--type", "evaluation", "--from", "-"],
            input: #"{"satisfaction": 4}"#)
        #expect(incomplete.status == 1 && incomplete.err.contains("would_recommend"), "\(incomplete)")
        // The mediator sees every type these could have filed.
        let records = try self.document(Self.mediator, ["record", "list", caseID])
        #expect((records["records"] as? [Any])?.isEmpty == true, "something was filed: \(records)")
        #expect(self.daemon.stop() == 0, "\(self.daemon.log)")
    }
}

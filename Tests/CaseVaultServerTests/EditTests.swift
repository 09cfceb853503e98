import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `casevaultctl record file --edit` with editors that are shell scripts: what they leave (the file, a
/// swap file, a backup, a directory of their own) is gone on every way out, and nothing is filed unless
/// the editor ended well with something new in the file.
@Suite("Editing a record", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct EditTests {
    static let mediator = Peer(uid: 4002)

    /// The editor's first lines: leave what an editor leaves beside the file it edits.
    static let litter = """
        #!/bin/sh
        dir=$(dirname "$1")
        echo "swap $(cat "$1")" > "$dir/.$(basename "$1").swp"
        cp "$1" "$1~"
        mkdir "$dir/undo" && cp "$1" "$dir/undo/copy"

        """

    /// A daemon with a case ready for session notes, a tmpfs directory standing for the mediator's
    /// `$XDG_RUNTIME_DIR`, and a directory for the editor scripts.
    struct Setup {
        let daemon: DaemonProcess
        let caseID: String
        let runtime: String
        let scripts: String

        init() throws {
            self.daemon = try DaemonProcess(roles: #"director = ["uid:4001"]"# + "\n" + #"mediator = ["uid:4002"]"#)
            #expect(self.daemon.waitUntilServing(), "\(self.daemon.log)")
            let director = Peer(uid: 4001)
            try self.daemon.call("PUT", "/v1/roster/mediators/uid:4002", as: director, expect: 201)
            let opened = try self.daemon.call(
                "POST", "/v1/cases", as: director, body: Bodies.openCase(mediators: [4002]), expect: 201)
            self.caseID = opened.string("case_id")
            for participant in ["p1", "p2"] {
                try self.daemon.call(
                    "POST", "/v1/cases/\(self.caseID)/records", as: EditTests.mediator,
                    body: Bodies.agreement(participant), expect: 201)
            }
            // /dev/shm is tmpfs: a directory in it, the mediator's own, as systemd makes /run/user/UID.
            #expect(PrivateScratchCheck.isTmpfs("/dev/shm"), "/dev/shm is not tmpfs here")
            var template = Array("/dev/shm/casevault-runtime-XXXXXX".utf8CString)
            let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
            self.runtime = String(cString: try #require(made))
            chown(self.runtime, 4002, DaemonProcess.clientsGroup)
            self.scripts = DaemonProcess.temporaryRoot()
            chmod(self.scripts, 0o777)
        }

        /// An executable script with `body`; its path.
        func editor(_ name: String, _ body: String) -> String {
            let path = self.scripts + "/" + name
            _ = FileManager.default.createFile(
                atPath: path, contents: Data((EditTests.litter + body).utf8), attributes: [.posixPermissions: 0o755])
            return path
        }

        /// `record file --type session_note --edit` as the mediator with `editor`.
        func file(with editor: String) throws -> (Int32, String, String) {
            var environment = ProcessInfo.processInfo.environment
            environment["XDG_RUNTIME_DIR"] = self.runtime
            environment["EDITOR"] = editor
            environment["VISUAL"] = nil
            return try EditTests.mediator.run(
                DaemonProcess.binary("casevaultctl"),
                ["record", "file", self.caseID, "--type", "session_note", "--edit", "--socket", self.daemon.socket],
                input: nil, environment: environment)
        }

        /// What is left in the runtime directory.
        func leftovers() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: self.runtime)
        }

        /// How many session notes the case holds (the mediator's view).
        func notes() throws -> Int {
            let reply = try self.daemon.call(
                "GET", "/v1/cases/\(self.caseID)/records?type=session_note", as: EditTests.mediator, expect: 200)
            return (reply.json["records"] as? [Any])?.count ?? -1
        }
    }

    @Test("an editor that writes the note: it is filed, and nothing the editor left stays behind")
    func filed() throws {
        let setup = try Setup()
        let marker = LeakCheck.marker
        let editor = setup.editor(
            "writes",
            """
            grep -q '^# The mediator' "$1" && grep -q '"text": ""' "$1" || exit 3
            printf '# kept out\\n{"text": "said in session %s"}\\n' '\(marker)' > "$1"
            """)
        let (status, out, err) = try setup.file(with: editor)
        #expect(status == 0 && out.contains("session_note"), "\(status) \(err)")
        let left = try setup.leftovers()
        #expect(left == [], "left behind: \(left)")
        #expect(try setup.notes() == 1)
        #expect(!err.contains(marker))
        let recordID = out.split(separator: "\n").first { $0.hasPrefix("record") }?.split(separator: " ").last
        let read = try setup.daemon.call(
            "GET", "/v1/records/\(recordID.map(String.init) ?? "?")", as: Self.mediator, expect: 200)
        #expect((read.json["content"] as? [String: Any])?["text"] as? String == "said in session \(marker)")
        #expect(setup.daemon.stop() == 0, "\(setup.daemon.log)")
    }

    @Test(
        "a disclosure written in the editor, its category too (off the command line): filed as the editor left it, nothing left behind"
    )
    func disclosureInTheEditor() throws {
        let setup = try Setup()
        let editor = setup.editor(
            "writes-disclosure",
            """
            grep -q '"category": ""' "$1" || exit 3
            printf '{"category": "discrimination", "summary": "summary %s"}\\n' '\(LeakCheck.marker)' > "$1"
            """)
        var environment = ProcessInfo.processInfo.environment
        environment["XDG_RUNTIME_DIR"] = setup.runtime
        environment["EDITOR"] = editor
        let (status, out, err) = try Self.mediator.run(
            DaemonProcess.binary("casevaultctl"),
            ["disclosure", "file", setup.caseID, "--edit", "--json", "--socket", setup.daemon.socket], input: nil,
            environment: environment)
        #expect(status == 0, "\(err)")
        #expect(!err.contains("discrimination") && !err.contains(LeakCheck.marker))
        let recordID = ((try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [String: Any])?["record_id"]
        let read = try setup.daemon.call(
            "GET", "/v1/records/\(recordID as? String ?? "?")", as: Peer(uid: 4001), expect: 200)
        #expect((read.json["content"] as? [String: Any])?["category"] as? String == "discrimination")
        let left = try setup.leftovers()
        #expect(left == [], "left behind: \(left)")
        #expect(setup.daemon.stop() == 0, "\(setup.daemon.log)")
    }

    @Test("an edit whose directory cannot be removed names it and files nothing")
    func directoryKept() throws {
        let setup = try Setup()
        // A directory the editor locks: its contents cannot be removed.
        let editor = setup.editor(
            "locks",
            """
            mkdir "${1%/*}/locked" && touch "${1%/*}/locked/kept" && chmod 500 "${1%/*}/locked"
            echo '{"text": "written"}' > "$1"
            """)
        let (status, _, err) = try setup.file(with: editor)
        #expect(
            status == 1 && err.contains("could not remove") && err.contains("nothing was filed"), "\(status) \(err)")
        #expect(try setup.leftovers().count == 1, "the directory it could not remove is gone")
        try FileManager.default.removeItem(atPath: setup.runtime)
        #expect(try setup.notes() == 0)
        #expect(setup.daemon.stop() == 0, "\(setup.daemon.log)")
    }

    @Test(
        "an editor killed with SIGKILL, one that fails, and a file left unchanged or empty: nothing is filed, nothing stays behind",
        arguments: [
            ("killed", #"kill -KILL $$"#, "killed by signal 9"),
            ("fails", "exit 5", "exited with status 5"),
            ("unchanged", "exit 0", "left unchanged"),
            ("emptied", #"printf '# only a comment\n\n' > "$1""#, "left empty"),
        ])
    func abandoned(_ name: String, _ body: String, _ says: String) throws {
        let setup = try Setup()
        let (status, _, err) = try setup.file(with: setup.editor(name, body))
        #expect(status == 1 && err.contains(says) && err.contains("nothing was filed"), "\(status) \(err)")
        let left = try setup.leftovers()
        #expect(left == [], "left behind: \(left)")
        #expect(try setup.notes() == 0)
        #expect(setup.daemon.stop() == 0, "\(setup.daemon.log)")
    }

    /// How an editor meets the signal casevaultctl passes on to it.
    enum Meeting: String, CaseIterable, Sendable {
        /// It saves what it holds beside the file and exits, as nano does on SIGTERM and SIGHUP.
        case savesAndExits
        /// It dies of the signal.
        case dies
        /// It ignores the signal, as vim ignores SIGINT: SIGKILL follows.
        case ignores
    }

    @Test(
        "casevaultctl stopped by a signal while the editor runs: the editor is stopped too (SIGKILL if it ignores it), its files removed once it has ended, nothing filed; a directory a SIGKILLed run left is removed by the next",
        arguments: [(SIGTERM, Meeting.savesAndExits), (SIGHUP, .dies), (SIGINT, .ignores)])
    func stopped(_ signal: Int32, _ meeting: Meeting) throws {
        let setup = try Setup()
        let trap: String
        switch meeting {
        // It makes the directory again if it is gone, so that a clean-up that ran before it ended shows.
        case .savesAndExits: trap = #"trap 'mkdir -p "${1%/*}"; cat "$1" > "$1.save"; exit 1' \#(signal)"#
        case .dies: trap = ""
        case .ignores: trap = "trap '' \(signal)"
        }
        // casevaultctl is the nearest ancestor by that name; the editor signals it, then would leave a mark.
        let editor = setup.editor(
            "stops-casevaultctl",
            """
            \(trap)
            pid=$$
            while [ "$(cat /proc/$pid/comm)" != casevaultctl ]; do pid=$(awk '{print $4}' /proc/$pid/stat); done
            kill -\(signal) $pid
            sleep 4 & wait $!
            touch "$(dirname "$0")/lived-on"
            """)
        // A directory of a run killed with SIGKILL (its process gone), with what its editor left.
        let abandoned = setup.runtime + "/casevaultctl-edit-999999999-AbCdEf"
        try FileManager.default.createDirectory(atPath: abandoned, withIntermediateDirectories: false)
        _ = FileManager.default.createFile(atPath: abandoned + "/session_note.json", contents: Data("{}".utf8))
        chown(abandoned, 4002, DaemonProcess.clientsGroup)
        chown(abandoned + "/session_note.json", 4002, DaemonProcess.clientsGroup)

        let (status, _, err) = try setup.file(with: editor)
        #expect(status == 128 + signal && err.contains("stopped by signal \(signal)"), "\(status) \(err)")
        let left = try setup.leftovers()
        #expect(left == [], "left behind: \(left)")
        sleep(5)  // Past the editor's sleep: had it lived on, it would have left its mark by now.
        #expect(!FileManager.default.fileExists(atPath: setup.scripts + "/lived-on"), "the editor lived on")
        #expect(try setup.leftovers() == [], "the editor wrote after the clean-up")
        #expect(try setup.notes() == 0)
        #expect(setup.daemon.stop() == 0, "\(setup.daemon.log)")
    }
}

enum PrivateScratchCheck {
    /// Whether `path` is on tmpfs, as coreutils' `stat -f` reads it.
    static func isTmpfs(_ path: String) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/stat")
        process.arguments = ["-f", "-c", "%T", path]
        let pipe = Pipe()
        process.standardOutput = pipe
        guard (try? process.run()) != nil else { return false }
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == "tmpfs"
    }
}

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Backup and restore through a real daemon and `casevaultctl`: a backup while serving, a shred, a restore
/// that re-applies the ledger; a tampered file and a destroyed key refused, leaving nothing behind.
@Suite("Backup and restore", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct BackupTests {
    static let director = LifecycleOverSocketTests.director
    static let mediator = LifecycleOverSocketTests.mediator
    static let roles = AuditOverSocketTests.roles
    static let start: Int64 = 1_768_435_200_000
    static let day: Int64 = 86_400_000

    static func restore(_ root: String, _ arguments: [String], input: String? = nil) throws -> (Int32, String, String) {
        try Peer.root.run(
            DaemonProcess.binary("casevaultctl"), ["restore", "--config", root + "/casevault.toml"] + arguments,
            input: input)
    }

    @Test("backup while serving, shred, restore with the ledger: the shredded record stays gone, notes are never in it")
    func backupShredRestore() throws {
        let daemon = try DaemonProcess(
            roles: Self.roles,
            extra: "[backup]\nretention_days = 2\n[testing]\nclock_file = \"$ROOT/clock\"\n",
            prepare: { root in try "\(Self.start)".write(toFile: root + "/clock", atomically: true, encoding: .utf8) }
        )
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let intake = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let doomed = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let note = try daemon.file(caseID, Bodies.note, as: Self.mediator).string("record_id")
        let attachment = "scan \(LeakCheck.marker)"
        #expect(
            try Client.request(
                daemon, "PUT", "/v1/records/\(intake)/attachment", as: Self.director, body: attachment,
                contentType: "application/pdf"
            ).status == 201)
        let intakeBody = try daemon.call("GET", "/v1/records/\(intake)", as: Self.director, expect: 200).body

        let first = daemon.root + "/first.cvbackup"
        let (code, text) = try CLITests.ctl(["backup", "--out", first, "--socket", daemon.socket], as: .root)
        #expect(code == 0 && text.contains("backup"), "\(text)")
        let sealed = try Data(contentsOf: URL(fileURLWithPath: first))
        #expect(sealed.range(of: Data(LeakCheck.marker.utf8)) == nil, "the backup holds content in clear")
        #expect(
            try CLITests.ctl(["backup", "--out", first, "--socket", daemon.socket], as: .root).0 == 64,
            "an existing file is never overwritten")
        let elsewhere = NSTemporaryDirectory() + "/casevault-refused-\(UUID().uuidString)"
        #expect(try CLITests.ctl(["backup", "--out", elsewhere, "--socket", daemon.socket], as: Self.director).0 == 77)
        #expect(
            !FileManager.default.fileExists(atPath: elsewhere)
                && !FileManager.default.fileExists(atPath: elsewhere + ".partial"))
        // No daemon behind the socket: told at once (not retried until a deadline), and no file is left.
        #expect(
            try CLITests.ctl(["backup", "--out", elsewhere, "--socket", daemon.root + "/missing.sock"], as: .root).0
                == 69)
        #expect(
            !FileManager.default.fileExists(atPath: elsewhere)
                && !FileManager.default.fileExists(atPath: elsewhere + ".partial"))
        // The route takes no body: one is refused, not ignored, and starts no backup.
        #expect(
            try daemon.call("POST", "/v1/admin/backup", body: #"{"only": "intake_form"}"#, expect: 400).problemType
                == "invalid-field")

        try daemon.call(
            "DELETE", "/v1/records/\(doomed)", as: Self.director, body: #"{"reason": "filed_in_error"}"#, expect: 200)
        let ledger = daemon.root + "/ledger.json"
        #expect(try CLITests.ctl(["ledger", "--out", ledger, "--socket", daemon.socket], as: .root).0 == 0)

        // --without-ledger re-applies no ledger at all: it goes with no other ledger option.
        #expect(
            try Self.restore(
                daemon.root,
                ["--in", first, "--data-dir", daemon.root + "/none", "--without-ledger", "--ledger", ledger]
            ).0 == 64)
        let restoredData = daemon.root + "/restored/data"
        let restored = try Self.restore(daemon.root, ["--in", first, "--data-dir", restoredData, "--ledger", ledger])
        #expect(restored.0 == 0 && restored.1.contains("shredded again  1"), "\(restored)")
        // Into a directory that is not empty: refused.
        #expect(
            try Self.restore(
                daemon.root, ["--in", first, "--data-dir", restoredData, "--live-data", daemon.root + "/data"]
            ).0 == 1)

        // A second daemon on the restored data, with the same keys.
        let second = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: second) }
        let copy = try Self.daemon(like: daemon, on: restoredData, root: second)
        #expect(copy.waitUntilServing(), "\(copy.log)")
        #expect(try copy.call("GET", "/v1/records/\(intake)", as: Self.director, expect: 200).body == intakeBody)
        let read = try Client.request(copy, "GET", "/v1/records/\(intake)/attachment", as: Self.director)
        #expect(read.status == 200 && String(decoding: read.body, as: UTF8.self) == attachment)
        #expect(try copy.call("GET", "/v1/records/\(doomed)", as: Self.director, expect: 410).problemType == "shredded")
        #expect(
            try copy.call("GET", "/v1/records/\(note)", as: Self.mediator, expect: 404).problemType == "not-found",
            "a session note came back")
        _ = copy.stop()

        // A tampered backup: refused, nothing left behind.
        var tampered = [UInt8](sealed)
        tampered[tampered.count / 2] ^= 0x01
        let bad = daemon.root + "/tampered.cvbackup"
        try Data(tampered).write(to: URL(fileURLWithPath: bad))
        let refused = try Self.restore(
            daemon.root, ["--in", bad, "--data-dir", daemon.root + "/bad", "--ledger", ledger])
        #expect(refused.0 == 1 && refused.2.contains("tampered"), "\(refused)")
        #expect(!FileManager.default.fileExists(atPath: daemon.root + "/bad"))
        let cut = daemon.root + "/cut.cvbackup"
        try sealed.prefix(sealed.count - 200).write(to: URL(fileURLWithPath: cut))
        #expect(
            try Self.restore(daemon.root, ["--in", cut, "--data-dir", daemon.root + "/cut", "--ledger", ledger]).0 == 1)
        #expect(!FileManager.default.fileExists(atPath: daemon.root + "/cut"))

        // Three days on, the retention sweep destroys the first backup's key (a dry run only counts it):
        // the first backup can never be read, though no backup was taken since.
        try "\(Self.start + 3 * Self.day)".write(toFile: daemon.root + "/clock", atomically: true, encoding: .utf8)
        let dry = try daemon.call("POST", "/v1/admin/sweep", as: .root, body: #"{"dry_run": true}"#, expect: 200)
        #expect(dry.json["backup_keys_destroyed"] as? Int == 1)
        #expect(
            try Self.restore(daemon.root, ["--in", first, "--data-dir", daemon.root + "/kept", "--ledger", ledger]).0
                == 0)
        let swept = try daemon.call("POST", "/v1/admin/sweep", as: .root, body: "{}", expect: 200)
        #expect(swept.json["backup_keys_destroyed"] as? Int == 1, "\(swept.json)")
        let later = daemon.root + "/later.cvbackup"
        #expect(try CLITests.ctl(["backup", "--out", later, "--socket", daemon.socket], as: .root).0 == 0)
        let gone = try Self.restore(
            daemon.root, ["--in", first, "--data-dir", daemon.root + "/gone", "--ledger", ledger])
        #expect(gone.0 == 1 && gone.2.contains("destroyed by the backup retention"), "\(gone)")
        #expect(!FileManager.default.fileExists(atPath: daemon.root + "/gone"))
        #expect(
            try Self.restore(
                daemon.root,
                ["--in", later, "--data-dir", daemon.root + "/later", "--live-data", daemon.root + "/data"]
            ).0 == 0)
    }

    @Test(
        "the data directory lost: restore with no ledger option reads the copy beside the backup keys and the record shredded after the backup stays shredded; with no copy it asks for a ledger (66)"
    )
    func restoreFromLedgerCopy() throws {
        let daemon = try DaemonProcess(roles: Self.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let intake = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let doomed = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let intakeBody = try daemon.call("GET", "/v1/records/\(intake)", as: Self.director, expect: 200).body
        let file = daemon.root + "/vault.cvbackup"
        #expect(try CLITests.ctl(["backup", "--out", file, "--socket", daemon.socket], as: .root).0 == 0)
        // Shredded after the last backup, with no backup or sweep since: the shred itself wrote the copy.
        try daemon.call(
            "DELETE", "/v1/records/\(doomed)", as: Self.director, body: #"{"reason": "filed_in_error"}"#, expect: 200)
        _ = daemon.stop()
        // The disk that held the data directory is gone; the keys, kept apart, are not.
        try FileManager.default.removeItem(atPath: daemon.root + "/data")
        let copy = daemon.root + "/keys/shred.ledger"
        let text = try String(contentsOfFile: copy, encoding: .utf8)
        #expect(text.contains(doomed) && !text.contains(intake) && !text.contains(LeakCheck.marker), "\(text)")

        // No copy and no other ledger: refused before anything is written, saying how to go on.
        try FileManager.default.moveItem(atPath: copy, toPath: copy + ".aside")
        let missing = try Self.restore(daemon.root, ["--in", file, "--data-dir", daemon.root + "/none"])
        #expect(missing.0 == 66 && missing.2.contains("--without-ledger"), "\(missing)")
        #expect(!FileManager.default.fileExists(atPath: daemon.root + "/none"))
        try FileManager.default.moveItem(atPath: copy + ".aside", toPath: copy)

        let restoredData = daemon.root + "/restored/data"
        let restored = try Self.restore(daemon.root, ["--in", file, "--data-dir", restoredData])
        #expect(
            restored.0 == 0 && restored.1.contains("shredded again  1") && restored.1.contains("(entries: 1)"),
            "\(restored)")

        // A daemon on the restored data, with the same keys.
        let second = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: second) }
        let copyDaemon = try Self.daemon(like: daemon, on: restoredData, root: second)
        #expect(copyDaemon.waitUntilServing(), "\(copyDaemon.log)")
        #expect(
            try copyDaemon.call("GET", "/v1/records/\(doomed)", as: Self.director, expect: 410).problemType
                == "shredded")
        #expect(try copyDaemon.call("GET", "/v1/records/\(intake)", as: Self.director, expect: 200).body == intakeBody)
        _ = copyDaemon.stop()
    }

    /// A daemon with `daemon`'s configuration and keys, on the data directory `data`, in `root`.
    static func daemon(like daemon: DaemonProcess, on data: String, root: String) throws -> DaemonProcess {
        let configuration = try String(contentsOfFile: daemon.root + "/casevault.toml", encoding: .utf8)
            .replacingOccurrences(of: "data_directory = \"\(daemon.root)/data\"", with: "data_directory = \"\(data)\"")
            .replacingOccurrences(
                of: "socket_path = \"\(daemon.socket)\"", with: "socket_path = \"\(root)/run/casevault.sock\"")
        try configuration.write(toFile: root + "/casevault.toml", atomically: true, encoding: .utf8)
        return try DaemonProcess(roles: Self.roles, root: root, configurationFile: root + "/casevault.toml")
    }

    @Test("a passphrase vault restores with its passphrase (a wrong one is refused) and unseals on the restored data")
    func passphraseVault() throws {
        let passphrase = KeyCustodyTests.passphrase
        let daemon = try DaemonProcess(roles: Self.roles, extra: KeyCustodyTests.passphraseSource)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        #expect(try KeyCustodyTests.ctl(["init", "--stdin"], daemon, input: passphrase + "\n").0 == 0)
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let intake = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let body = try daemon.call("GET", "/v1/records/\(intake)", as: Self.director, expect: 200).body
        let file = daemon.root + "/vault.cvbackup"
        #expect(try CLITests.ctl(["backup", "--out", file, "--socket", daemon.socket], as: .root).0 == 0)

        let wrong = try Self.restore(
            daemon.root, ["--in", file, "--data-dir", daemon.root + "/wrong", "--without-ledger", "--stdin"],
            input: "not it\n")
        #expect(wrong.0 == 1, "\(wrong)")
        #expect(!FileManager.default.fileExists(atPath: daemon.root + "/wrong"))
        let restoredData = daemon.root + "/restored/data"
        let restored = try Self.restore(
            daemon.root, ["--in", file, "--data-dir", restoredData, "--live-data", daemon.root + "/data", "--stdin"],
            input: passphrase + "\n"
        )
        #expect(restored.0 == 0, "\(restored)")
        _ = daemon.stop()

        // The restored data under a daemon of its own: sealed at start, unsealed by the same passphrase.
        let second = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: second) }
        let copy = try Self.daemon(like: daemon, on: restoredData, root: second)
        #expect(copy.waitUntilServing(), "\(copy.log)")
        #expect(try copy.call("GET", "/v1/records/\(intake)", as: Self.director, expect: 503).problemType == "sealed")
        #expect(try KeyCustodyTests.ctl(["unseal", "--stdin"], copy, input: passphrase + "\n").0 == 0)
        #expect(try copy.call("GET", "/v1/records/\(intake)", as: Self.director, expect: 200).body == body)
        _ = copy.stop()
    }
}

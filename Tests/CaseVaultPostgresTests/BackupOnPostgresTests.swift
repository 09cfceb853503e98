import CaseVaultClient
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Backups of a vault kept in PostgreSQL, taken by a serving daemon and restored through another into a
/// database that holds nothing yet: real daemons, the real socket, casevaultctl, and clusters the test starts.
extension EpochExchangeTests {
    @Test(
        "casevaultctl backup on a daemon of a vault in PostgreSQL, then restore through a daemon of an empty database with the vault's root key and backup keys: the forms, their attachment, the hold and the certificates come back, the shredded form stays shredded, a form shredded after the backup is shredded again from the ledger without ever being written to the new database, a form filed and shredded after the backup is named by the new vault's ledger and, through a backup of it restored without a ledger, by a third vault's, no session note is in the backup; a damaged backup, a backup without its key and a restore into a vault that holds records are refused, changing nothing; a rotation on the restored vault completes its own erasure but not the restored one; the backup also restores into a data directory without a daemon, the ledger's form shredded again there; once the backup retention passes, a's sweep destroys the backup's key; nothing confidential in either log"
    )
    func backupAndRestoreOnPostgres() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let marker = "marker-\(UUID().uuidString)"
        let ctl = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("casevaultctl").path
        let environment = ProcessInfo.processInfo.environment
        func ctlRun(_ arguments: [String], in root: String) throws -> (Int32, [String: Any], String) {
            let (status, printed) = try PostgresClusters.spawn([ctl] + arguments, environment: environment, in: root)
            let document = (try? JSONSerialization.jsonObject(with: Data(printed.utf8))) as? [String: Any] ?? [:]
            return (status, document, printed)
        }

        let rootA = try Self.databaseDaemonRoot(clusters, name: "vault-a")
        // a's clock reads a file, so that the backup retention can pass without sleeping.
        let clock = rootA + "/clock"
        let started = Int64(Date().timeIntervalSince1970 * 1000)
        try "\(started)".write(toFile: clock, atomically: true, encoding: .utf8)
        let settings = try FileHandle(forWritingTo: URL(fileURLWithPath: rootA + "/casevault.toml"))
        settings.seekToEndOfFile()
        settings.write(Data("[testing]\nclock_file = \"\(clock)\"\n".utf8))
        try settings.close()
        let a = try DatabaseDaemon(root: rootA)
        #expect(await a.waitUntilServing(), "\(a.notable)")
        let opened = try await a.client.request(
            .POST, "/v1/cases", json: ["participants": [["name": "Ada \(marker)"], ["name": "Bo"]], "mediators": []])
        #expect(opened.status == 201, "\(String(decoding: opened.body, as: UTF8.self))")
        let caseID = opened.json["case_id"] as? String ?? ""
        var forms: [String] = []
        for _ in 0..<3 {
            let filed = try await Self.whileUnavailable { try await Self.fileForm(a, caseID, marker) }
            #expect(filed.status == 201, "\(String(decoding: filed.body, as: UTF8.self))")
            forms.append(filed.json["record_id"] as? String ?? "")
        }
        let (kept, shredBefore, shredAfter) = (forms[0], forms[1], forms[2])
        // An attachment of 3 MiB (48 chunks, three pages of them in the backup), sent by the CLI: the backup is
        // larger than the daemons' max_body_bytes (2 MiB), which bounds JSON bodies only.
        let attachment = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let attachmentFile = rootA + "/scan.pdf"
        #expect(FileManager.default.createFile(atPath: attachmentFile, contents: Data(attachment)))
        let attached = try ctlRun(
            ["attachment", "put", kept, attachmentFile, "--socket", a.socket, "--json"], in: rootA)
        #expect(attached.0 == 0, "\(attached.2)")
        // A second case under a legal hold, its reason sealed.
        let other = try await a.client.request(
            .POST, "/v1/cases", json: ["participants": [["name": "Cy"], ["name": "Di"]], "mediators": []])
        let otherID = other.json["case_id"] as? String ?? ""
        let hold = try await a.client.request(
            .POST, "/v1/holds", json: ["case_id": otherID, "reason": "audit \(marker)"])
        #expect(hold.status == 201, "\(String(decoding: hold.body, as: UTF8.self))")
        let shredded = try await a.client.request(
            .DELETE, "/v1/records/\(shredBefore)", json: ["reason": "filed_in_error"])
        #expect(shredded.status == 200, "\(String(decoding: shredded.body, as: UTF8.self))")
        // A session note's row, put in by SQL with a key that opens under nothing: were it in the backup, its
        // key's rewrap would fail the backup.
        _ = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            """
            INSERT INTO casevault_records (id, case_id, type, created_at, epoch, wrapped_key, blob)
            SELECT decode(md5(random()::text), 'hex'), decode('\(caseID)', 'hex'), 'session_note', 1,
                (SELECT max(number) FROM casevault_epochs), decode(repeat('00', 72), 'hex'), '\\x00'::bytea
            """)

        let backupFile = rootA + "/vault.backup"
        let backup = try ctlRun(["backup", "--out", backupFile, "--socket", a.socket, "--json"], in: rootA)
        #expect(backup.0 == 0, "\(backup.2)")
        // Shredded after the backup: only the ledger knows.
        let later = try await a.client.request(.DELETE, "/v1/records/\(shredAfter)", json: ["reason": "policy"])
        #expect(later.status == 200, "\(String(decoding: later.body, as: UTF8.self))")
        // Filed and shredded after the backup: in no backup, named by the ledger alone.
        let unbacked = try await Self.whileUnavailable { try await Self.fileForm(a, caseID, marker) }
        let filedAfter = unbacked.json["record_id"] as? String ?? ""
        let gone = try await a.client.request(.DELETE, "/v1/records/\(filedAfter)", json: ["reason": "policy"])
        #expect(gone.status == 200, "\(String(decoding: gone.body, as: UTF8.self))")
        let ledgerFile = rootA + "/ledger.json"
        let ledger = try ctlRun(["ledger", "--out", ledgerFile, "--socket", a.socket], in: rootA)
        #expect(ledger.0 == 0, "\(ledger.2)")
        // A restore into a vault that holds records is refused.
        let full = try ctlRun(
            ["restore", "--in", backupFile, "--without-ledger", "--socket", a.socket, "--json"], in: rootA)
        #expect(full.0 != 0 && full.2.contains("vault-not-empty"), "\(full.2)")

        // Daemon b: the vault's root key and backup key file, an empty database of its own.
        _ = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            "CREATE DATABASE restored OWNER \(PostgresClusters.user)")
        let rootB = try Self.databaseDaemonRoot(clusters, name: "vault-b")
        let configuration = rootB + "/casevault.toml"
        let text = try String(contentsOfFile: configuration, encoding: .utf8)
        try text.replacingOccurrences(of: "@/\(PostgresClusters.database)?", with: "@/restored?")
            .write(toFile: configuration, atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(
            atPath: rootB + "/keys", withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        try FileManager.default.copyItem(atPath: rootA + "/keys/root.key", toPath: rootB + "/keys/root.key")
        let b = try DatabaseDaemon(root: rootB)
        #expect(await b.waitUntilServing(), "\(b.notable)")

        // Refused, changing nothing: a backup one byte of which was changed, and one cut short; then one whose
        // key b's backup key file does not hold yet.
        var damaged = try [UInt8](Data(contentsOf: URL(fileURLWithPath: backupFile)))
        let whole = damaged
        damaged[damaged.count / 2] ^= 0x01
        let damagedFile = rootB + "/damaged.backup"
        #expect(FileManager.default.createFile(atPath: damagedFile, contents: Data(damaged)))
        let cutFile = rootB + "/cut.backup"
        #expect(FileManager.default.createFile(atPath: cutFile, contents: Data(whole.prefix(whole.count - 40))))
        let keyless = try ctlRun(
            ["restore", "--in", backupFile, "--ledger", ledgerFile, "--socket", b.socket, "--json"], in: rootB)
        #expect(keyless.0 != 0 && keyless.2.contains("not-found"), "\(keyless.2)")
        try FileManager.default.copyItem(atPath: rootA + "/keys/backup.keys", toPath: rootB + "/keys/backup.keys")
        for file in [damagedFile, cutFile] {
            let refused = try ctlRun(
                ["restore", "--in", file, "--ledger", ledgerFile, "--socket", b.socket, "--json"], in: rootB)
            #expect(refused.0 != 0 && refused.2.contains("damaged or was tampered with"), "\(refused.2)")
        }
        let unledgered = try ctlRun(["restore", "--in", backupFile, "--socket", b.socket], in: rootB)
        #expect(unledgered.0 == 64, "\(unledgered.2)")
        // A ledger whose entry's time is not a time is refused, naming the entry.
        let malformed = rootB + "/malformed-ledger.json"
        try #"{"records":[{"record_id":"\#(shredAfter)","shredded_at":"yesterday"}]}"#.write(
            toFile: malformed, atomically: true, encoding: .utf8)
        let misdated = try ctlRun(
            ["restore", "--in", backupFile, "--ledger", malformed, "--socket", b.socket, "--json"], in: rootB)
        #expect(misdated.0 == 1 && misdated.2.contains("entry 1"), "\(misdated.2)")

        let restored = try ctlRun(
            ["restore", "--in", backupFile, "--ledger", ledgerFile, "--socket", b.socket, "--json"], in: rootB)
        #expect(restored.0 == 0, "\(restored.2)")
        // The two cases' headers and the two forms live at the backup; the attachment; the hold; the shred's
        // certificate; the form the ledger names shredded again.
        #expect(restored.1["records"] as? Int == 4, "\(restored.2)")
        #expect(restored.1["attachments"] as? Int == 1 && restored.1["holds"] as? Int == 1, "\(restored.2)")
        #expect(restored.1["certificates"] as? Int == 1 && restored.1["shredded_again"] as? Int == 1, "\(restored.2)")

        let read = try await b.client.get("/v1/records/\(kept)")
        #expect(read.status == 200 && String(decoding: read.body, as: UTF8.self).contains(marker))
        let downloaded = try await b.client.get("/v1/records/\(kept)/attachment")
        #expect(downloaded.status == 200 && [UInt8](downloaded.body) == attachment)
        #expect(try await b.client.get("/v1/records/\(shredBefore)").status == 410)
        #expect(try await b.client.get("/v1/records/\(shredAfter)").status == 410)
        let participants = try await b.client.get("/v1/cases/\(caseID)/participants")
        #expect(participants.status == 200 && String(decoding: participants.body, as: UTF8.self).contains(marker))
        let certificates = try await b.client.get("/v1/certificates?case_id=\(caseID)")
        let listed = String(decoding: certificates.body, as: UTF8.self)
        #expect(certificates.status == 200 && listed.contains("restore_ledger") && listed.contains(shredBefore))
        let holds = try await b.client.get("/v1/holds")
        #expect(holds.status == 200 && String(decoding: holds.body, as: UTF8.self).contains("audit \(marker)"))
        let notes = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, "restored",
            "SELECT count(*) FROM casevault_records WHERE type = 'session_note'")
        #expect(notes == "0")
        // The form the ledger names was never written to b's database, not even as a dead row whose key the
        // WAL would keep: the records' pages hold a line for each row ever put there, and the restore's
        // transaction put the two cases' headers and the kept form (the refused restores' rows are there
        // too, under transactions of their own that were rolled back).
        let lines = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, "restored",
            """
            CREATE EXTENSION IF NOT EXISTS pageinspect;
            SELECT count(*) FROM generate_series(0, pg_relation_size('casevault_records') / 8192 - 1) AS page,
                heap_page_items(get_raw_page('casevault_records', page::int)) AS line
            WHERE line.t_xmin = (SELECT xmin FROM casevault_records LIMIT 1);
            """)
        #expect(lines == "3", "\(lines)")
        // b's ledger names every shred a's did: its own, those the backup held, and the one in no backup.
        let ledgerB = rootB + "/ledger.json"
        let exported = try ctlRun(["ledger", "--out", ledgerB, "--socket", b.socket], in: rootB)
        let namedB = (try? String(contentsOfFile: ledgerB, encoding: .utf8)) ?? ""
        #expect(exported.0 == 0, "\(exported.2)")
        #expect([shredBefore, shredAfter, filedAfter].allSatisfy(namedB.contains), "\(namedB)")
        // An operator's rotation on b completes the erasure of the shred b made from the ledger, under b's own
        // epoch; the certificate restored from a's vault stays open: its erasure rests on a's key files.
        let rotated = try ctlRun(["rotate", "--json", "--socket", b.socket], in: rootB)
        #expect(rotated.0 == 0 && rotated.1["complete"] as? Bool == true, "\(rotated.2)")
        var seconds: [[String: Any]] = []
        for _ in 0..<50 where seconds.isEmpty {
            let listed = try await b.client.get("/v1/certificates?case_id=\(caseID)")
            let documents = listed.json["certificates"] as? [[String: Any]] ?? []
            seconds = documents.compactMap { $0["certificate"] as? [String: Any] }.filter {
                ($0["erasure"] as? [String: Any])?["completes"] != nil
            }
            if seconds.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
        }
        try await Task.sleep(for: .seconds(3))
        let after = try await b.client.get("/v1/certificates?case_id=\(caseID)")
        let all = (after.json["certificates"] as? [[String: Any]] ?? []).compactMap {
            $0["certificate"] as? [String: Any]
        }
        let completing = all.filter { ($0["erasure"] as? [String: Any])?["completes"] != nil }
        let reshred = all.first {
            $0["method"] as? String == "restore_ledger" && ($0["erasure"] as? [String: Any])?["completes"] == nil
        }
        #expect(all.count == 3 && completing.count == 1, "\(after.json)")
        #expect(
            (completing.first?["erasure"] as? [String: Any])?["completes"] as? String
                == reshred?["certificate_id"] as? String, "\(after.json)")

        // The same backup restored into a data directory instead, without a daemon, with the ledger: the
        // records but the one the ledger names, which is shredded again there.
        let rootD = clusters.root + "/into-directory"
        try FileManager.default.createDirectory(
            atPath: rootD + "/keys", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for name in ["root.key", "backup.keys"] {
            try FileManager.default.copyItem(atPath: rootA + "/keys/" + name, toPath: rootD + "/keys/" + name)
        }
        try """
        \(DoctorDatabaseTests.storeAndServer(rootD))

        """.write(toFile: rootD + "/casevault.toml", atomically: true, encoding: .utf8)
        let intoDirectory = try ctlRun(
            [
                "restore", "--in", backupFile, "--data-dir", rootD + "/data", "--ledger", ledgerFile, "--config",
                rootD + "/casevault.toml", "--json",
            ], in: rootD)
        #expect(
            intoDirectory.0 == 0 && intoDirectory.1["records"] as? Int == 4
                && intoDirectory.1["reshredded"] as? Int == 1, "\(intoDirectory.2)")

        // Restored once: a second restore is refused, changing nothing.
        let again = try ctlRun(
            ["restore", "--in", backupFile, "--ledger", ledgerFile, "--socket", b.socket, "--json"], in: rootB)
        #expect(again.0 != 0 && again.2.contains("vault-not-empty"), "\(again.2)")

        // A backup of b carries what b's ledger knows of: restored without a ledger through daemon c, into a
        // third database, c's ledger still names the form that is in no backup.
        let backupB = rootB + "/vault-b.backup"
        let tookB = try ctlRun(["backup", "--out", backupB, "--socket", b.socket, "--json"], in: rootB)
        #expect(tookB.0 == 0, "\(tookB.2)")
        _ = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            "CREATE DATABASE third OWNER \(PostgresClusters.user)")
        let rootC = try Self.databaseDaemonRoot(clusters, name: "vault-c")
        let configurationC = rootC + "/casevault.toml"
        try String(contentsOfFile: configurationC, encoding: .utf8)
            .replacingOccurrences(of: "@/\(PostgresClusters.database)?", with: "@/third?")
            .write(toFile: configurationC, atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(
            atPath: rootC + "/keys", withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        for file in ["root.key", "backup.keys"] {
            try FileManager.default.copyItem(atPath: rootB + "/keys/" + file, toPath: rootC + "/keys/" + file)
        }
        let c = try DatabaseDaemon(root: rootC)
        #expect(await c.waitUntilServing(), "\(c.notable)")
        let intoC = try ctlRun(
            ["restore", "--in", backupB, "--without-ledger", "--socket", c.socket, "--json"], in: rootC)
        #expect(intoC.0 == 0 && intoC.1["shredded_again"] as? Int == 0, "\(intoC.2)")
        let ledgerC = rootC + "/ledger.json"
        let exportedC = try ctlRun(["ledger", "--out", ledgerC, "--socket", c.socket], in: rootC)
        let namedC = (try? String(contentsOfFile: ledgerC, encoding: .utf8)) ?? ""
        #expect(exportedC.0 == 0, "\(exportedC.2)")
        #expect(
            [shredBefore, shredAfter, filedAfter].allSatisfy(namedC.contains),
            "before \(shredBefore) after \(shredAfter) unbacked \(filedAfter): \(namedC) b: \(namedB) took: \(tookB.2) into: \(intoC.2)"
        )
        #expect(try await c.client.get("/v1/records/\(kept)").status == 200)

        // The backup retention (35 days) passes on a's clock: a's next sweep destroys the backup's key in its
        // file, and a backup that needs it can no longer be restored by anyone.
        let held = try [UInt8](Data(contentsOf: URL(fileURLWithPath: rootA + "/keys/backup.keys")))
        #expect(Self.holdsBackupID(held, backupFile: whole))
        try "\(started + 36 * 86_400_000)".write(toFile: clock, atomically: true, encoding: .utf8)
        let sweep = try await a.client.request(.POST, "/v1/admin/sweep", json: [:])
        #expect(sweep.status == 200 && sweep.json["backup_keys_destroyed"] as? Int == 1, "\(sweep.json)")
        let entries = try [UInt8](Data(contentsOf: URL(fileURLWithPath: rootA + "/keys/backup.keys")))
        #expect(
            !entries.isEmpty && !Self.holdsBackupID(entries, backupFile: whole), "the backup's key is still in the file"
        )

        #expect(a.stop() == 0 && b.stop() == 0 && c.stop() == 0)
        for daemon in [a, b, c] {
            #expect(!daemon.log.contains(marker), "the daemon logged content")
        }
    }

    /// Whether the backup key file's bytes `keys` hold a slot for the backup whose file starts `backup`
    /// (its id at bytes 6 to 22): a slot starts "CVBK", then the id.
    static func holdsBackupID(_ keys: [UInt8], backupFile backup: [UInt8]) -> Bool {
        let id = Array(backup[6..<22])
        return stride(from: 0, to: keys.count - 127, by: 128).contains { start in
            Array(keys[start..<(start + 4)]) == Array("CVBK".utf8) && Array(keys[(start + 4)..<(start + 20)]) == id
        }
    }
}

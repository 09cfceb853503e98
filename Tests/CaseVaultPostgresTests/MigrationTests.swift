import CaseVaultClient
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A vault moved from a data directory to PostgreSQL: a real daemon on a data directory, stopped;
/// `casevaultctl migrate` on its directory; a daemon on an empty database of a cluster the test starts,
/// restoring the file through its socket.
extension EpochExchangeTests {
    @Test(
        "casevaultctl migrate writes a vault that no daemon serves (refused while one does) as a file a daemon on an empty PostgreSQL database restores (--without-ledger, asked as of any restore): the cases, every record with the session note, the attachment byte for byte, the hold and its reason, the certificate come back, the shredded record stays shredded and is in the new ledger; the audit chain of the data directory goes on in the new daemon's log, proven against its anchor in the database; and back: migrate on the stopped database (refused while its daemon serves) writes a file that restore --data-dir makes a data directory of, where the vault, the note, the attachment, the hold, the shred and the certificate are read again, a final agreement destroys the note, and the chain goes on; nothing confidential in any log"
    )
    func migrateDataDirectoryToPostgres() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let marker = "marker-\(UUID().uuidString)"
        let ctl = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("casevaultctl").path
        let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        func ctlRun(_ arguments: [String], in root: String) throws -> (Int32, [String: Any], String) {
            let (status, printed) = try PostgresClusters.spawn([ctl] + arguments, environment: environment, in: root)
            let document = (try? JSONSerialization.jsonObject(with: Data(printed.utf8))) as? [String: Any] ?? [:]
            return (status, document, printed)
        }

        // Daemon l on a data directory of its own.
        let rootL = clusters.root + "/local-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(
            atPath: rootL + "/data", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try """
        \(DoctorDatabaseTests.storeAndServer(rootL))
        [roles]
        director = ["uid:0"]
        mediator = ["uid:0"]
        operator = ["uid:0"]

        """.write(toFile: rootL + "/casevault.toml", atomically: true, encoding: .utf8)
        let l = try DatabaseDaemon(root: rootL)
        #expect(await l.waitUntilServing(), "\(l.notable)")
        // The test's uid (root) directs and mediates: on the roster, the case's mediator.
        let rostered = try await l.client.request(.PUT, "/v1/roster/mediators/uid:0", json: [:])
        #expect(rostered.status == 201, "\(String(decoding: rostered.body, as: UTF8.self))")
        let opened = try await l.client.request(
            .POST, "/v1/cases",
            json: ["participants": [["name": "Ada \(marker)"], ["name": "Bo \(marker)"]], "mediators": ["uid:0"]])
        #expect(opened.status == 201, "\(String(decoding: opened.body, as: UTF8.self))")
        let caseID = opened.json["case_id"] as? String ?? ""
        func file(_ type: String, _ content: [String: Any]) async throws -> String {
            let filed = try await l.client.request(
                .POST, "/v1/cases/\(caseID)/records", json: ["type": type, "content": content])
            #expect(filed.status == 201, "\(type): \(String(decoding: filed.body, as: UTF8.self))")
            return filed.json["record_id"] as? String ?? ""
        }
        let intake = try await file("intake_form", ["dispute_category": "roommate", "screening": marker])
        for participant in ["p1", "p2"] {
            _ = try await file(
                "agreement_to_mediate",
                [
                    "participant": participant, "signed_at": "2026-11-20T10:00:00Z", "method": "written",
                    "online": false, "note": marker,
                    "acknowledgements": [
                        "confidentiality": true, "no_recording": true, "will_not_compel_mediator": true,
                        "will_not_discuss_outside": true,
                    ],
                ])
        }
        let note = try await file("session_note", ["text": "said in session \(marker)"])
        let evaluation = try await file(
            "evaluation", ["satisfaction": 4, "would_recommend": true, "comment": marker])
        let shredded = try await l.client.request(
            .DELETE, "/v1/records/\(evaluation)", json: ["reason": "filed_in_error"])
        #expect(shredded.status == 200, "\(String(decoding: shredded.body, as: UTF8.self))")
        let attachment = (0..<(200 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        let attachmentFile = rootL + "/scan.pdf"
        #expect(FileManager.default.createFile(atPath: attachmentFile, contents: Data(attachment)))
        let attached = try ctlRun(["attachment", "put", intake, attachmentFile, "--socket", l.socket], in: rootL)
        #expect(attached.0 == 0, "\(attached.2)")
        let held = try await l.client.request(
            .POST, "/v1/cases", json: ["participants": [["name": "Cy"], ["name": "Di"]], "mediators": []])
        let heldID = held.json["case_id"] as? String ?? ""
        let hold = try await l.client.request(
            .POST, "/v1/holds", json: ["case_id": heldID, "reason": "audit \(marker)"])
        #expect(hold.status == 201, "\(String(decoding: hold.body, as: UTF8.self))")

        // Refused while l serves the directory, writing nothing.
        let moved = rootL + "/vault.migration"
        let serving = try ctlRun(["migrate", "--out", moved, "--config", rootL + "/casevault.toml"], in: rootL)
        #expect(serving.0 == 1 && serving.2.contains("serving the data directory"), "\(serving.2)")
        #expect(
            !FileManager.default.fileExists(atPath: moved)
                && !FileManager.default.fileExists(atPath: moved + ".partial"))
        #expect(l.stop() == 0)
        let before = try ctlRun(
            ["audit", "verify", "--offline", "--json", "--config", rootL + "/casevault.toml"], in: rootL)
        let entriesBefore = before.1["entries"] as? Int ?? 0
        #expect(before.0 == 0 && entriesBefore > 10, "\(before.2)")

        let written = try ctlRun(
            ["migrate", "--out", moved, "--config", rootL + "/casevault.toml", "--json"], in: rootL)
        #expect(written.0 == 0, "\(written.2)")
        // Two headers, the intake form, two agreements and the note; the shredded evaluation in the ledger.
        #expect(written.1["cases"] as? Int == 2 && written.1["records"] as? Int == 6, "\(written.2)")
        #expect(written.1["session_notes"] as? Int == 1 && written.1["attachments"] as? Int == 1, "\(written.2)")
        #expect(
            written.1["holds"] as? Int == 1 && written.1["shreds"] as? Int == 1
                && written.1["certificates"] as? Int == 1, "\(written.2)")
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: moved)))
        #expect(!bytes.isEmpty && !String(decoding: bytes, as: UTF8.self).contains(marker))
        // The data directory is marked as moved: l refuses to serve it (a copy served here too would drift
        // from the moved one). --cancel removes the mark, once; l would serve again; a move marks it again.
        let twice = try DatabaseDaemon(root: rootL)
        #expect(await twice.exitsByItself(), "a daemon served a data directory whose vault moved")
        #expect(
            twice.process.terminationStatus == 2 && twice.notable.contains("was moved to PostgreSQL"),
            "\(twice.notable)")
        let doctorL = try DoctorDatabaseTests.doctor(rootL).checks["vault moved"]
        #expect(
            doctorL?.0 == "fail" && doctorL?.1.contains("was moved to PostgreSQL") == true,
            "\(String(describing: doctorL))")
        let cancel = ["migrate", "--cancel", "--config", rootL + "/casevault.toml"]
        let cancelled = try ctlRun(cancel, in: rootL)
        #expect(cancelled.0 == 0 && !FileManager.default.fileExists(atPath: rootL + "/data/moved"), "\(cancelled.2)")
        #expect(try DoctorDatabaseTests.doctor(rootL).checks["vault moved"]?.0 == "pass")
        let nothing = try ctlRun(cancel, in: rootL)
        #expect(nothing.0 == 1 && nothing.2.contains("nothing to cancel"), "\(nothing.2)")
        #expect(
            try ctlRun(
                ["migrate", "--cancel", "--out", moved + ".2", "--config", rootL + "/casevault.toml"], in: rootL
            ).0 == 64)
        try FileManager.default.removeItem(atPath: moved)
        let again = try ctlRun(["migrate", "--out", moved, "--config", rootL + "/casevault.toml"], in: rootL)
        #expect(again.0 == 0 && FileManager.default.fileExists(atPath: rootL + "/data/moved"), "\(again.2)")

        // Daemon p on an empty database, with l's root key and backup key file, and l's audit log moved in.
        let rootP = try Self.databaseDaemonRoot(clusters, name: "moved")
        let settings = try FileHandle(forWritingTo: URL(fileURLWithPath: rootP + "/casevault.toml"))
        settings.seekToEndOfFile()
        settings.write(Data("mediator = [\"uid:0\"]\n".utf8))
        try settings.close()
        try FileManager.default.createDirectory(
            atPath: rootP + "/keys", withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        for name in ["root.key", "backup.keys"] {
            try FileManager.default.copyItem(atPath: rootL + "/keys/" + name, toPath: rootP + "/keys/" + name)
        }
        try FileManager.default.moveItem(atPath: rootL + "/data/audit", toPath: rootP + "/data/audit")
        let p = try DatabaseDaemon(root: rootP)
        #expect(await p.waitUntilServing(), "\(p.notable)")
        // As any restore, it asks which ledger (exit 64): a moved vault's file carries its own, and is restored
        // right after it was written, so without one.
        let unasked = try ctlRun(["restore", "--in", moved, "--socket", p.socket], in: rootP)
        #expect(unasked.0 == 64, "\(unasked.2)")
        let restored = try ctlRun(
            ["restore", "--in", moved, "--without-ledger", "--socket", p.socket, "--json"], in: rootP)
        #expect(restored.0 == 0, "\(restored.2)")
        #expect(
            restored.1["records"] as? Int == 6 && restored.1["attachments"] as? Int == 1
                && restored.1["holds"] as? Int == 1 && restored.1["certificates"] as? Int == 1, "\(restored.2)")

        let read = try await Self.whileUnavailable { try await p.client.get("/v1/records/\(intake)") }
        #expect(read.status == 200 && String(decoding: read.body, as: UTF8.self).contains(marker))
        let downloaded = try await p.client.get("/v1/records/\(intake)/attachment")
        #expect(downloaded.status == 200 && [UInt8](downloaded.body) == attachment)
        let readNote = try await p.client.get("/v1/records/\(note)")
        #expect(readNote.status == 200 && String(decoding: readNote.body, as: UTF8.self).contains(marker))
        #expect(try await p.client.get("/v1/records/\(evaluation)").status == 410)
        let participants = try await p.client.get("/v1/cases/\(caseID)/participants")
        #expect(participants.status == 200 && String(decoding: participants.body, as: UTF8.self).contains(marker))
        let holds = try await p.client.get("/v1/holds")
        #expect(holds.status == 200 && String(decoding: holds.body, as: UTF8.self).contains("audit \(marker)"))
        let certificates = try await p.client.get("/v1/certificates?case_id=\(caseID)")
        #expect(
            certificates.status == 200 && String(decoding: certificates.body, as: UTF8.self).contains(evaluation),
            "\(String(decoding: certificates.body, as: UTF8.self))")
        let ledgerFile = rootP + "/ledger.json"
        let ledger = try ctlRun(["ledger", "--out", ledgerFile, "--socket", p.socket], in: rootP)
        #expect(
            ledger.0 == 0 && ((try? String(contentsOfFile: ledgerFile, encoding: .utf8)) ?? "").contains(evaluation))
        // And back: refused while p serves; with p stopped, the database is written as a file that restore
        // --data-dir makes a data directory of, p's audit log moved in.
        let back = rootP + "/vault.back"
        let busy = try ctlRun(["migrate", "--out", back, "--config", rootP + "/casevault.toml"], in: rootP)
        // (Refused at its own host's daemon's epoch key file, which p holds; a daemon on another host, at its
        // presence lock in the database: "serves the vault".)
        #expect(busy.0 == 1 && busy.2.contains("open in another process"), "\(busy.2)")
        let rootX = clusters.root + "/elsewhere-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(
            atPath: rootX + "/data", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try FileManager.default.copyItem(atPath: rootP + "/data/epoch.keys", toPath: rootX + "/data/epoch.keys")
        try String(contentsOfFile: rootP + "/casevault.toml", encoding: .utf8)
            .replacingOccurrences(of: "data_directory = \"\(rootP)/data\"", with: "data_directory = \"\(rootX)/data\"")
            .write(toFile: rootX + "/casevault.toml", atomically: true, encoding: .utf8)
        let elsewhere = try ctlRun(["migrate", "--out", back, "--config", rootX + "/casevault.toml"], in: rootX)
        #expect(elsewhere.0 == 1 && elsewhere.2.contains("daemon moved serves the vault"), "\(elsewhere.2)")
        #expect(!FileManager.default.fileExists(atPath: back))
        #expect(p.stop() == 0)
        let after = try ctlRun(
            ["audit", "verify", "--offline", "--json", "--config", rootP + "/casevault.toml"], in: rootP)
        let entriesP = after.1["entries"] as? Int ?? 0
        // The chain of l's log went on in p's: every entry from l's first, checked against p's anchor.
        #expect(after.0 == 0 && after.1["ok"] as? Bool == true && after.1["anchor"] as? Int != nil, "\(after.2)")
        #expect(entriesP > entriesBefore + 5, "\(after.2)")
        let wroteBack = try ctlRun(
            ["migrate", "--out", back, "--config", rootP + "/casevault.toml", "--json"], in: rootP)
        #expect(wroteBack.0 == 0 && wroteBack.1["records"] as? Int == 6, "\(wroteBack.2)")
        // The database is marked as moved: p refuses to serve it until --cancel (refused while a daemon serves
        // the vault) removes the mark.
        let stale = try DatabaseDaemon(root: rootP)
        #expect(await stale.exitsByItself(), "a daemon served a database whose vault moved")
        #expect(
            stale.process.terminationStatus == 2 && stale.notable.contains("was moved out of the database"),
            "\(stale.notable)")
        let doctorP = try DoctorDatabaseTests.doctor(rootP).checks["vault moved"]
        #expect(
            doctorP?.0 == "fail" && doctorP?.1.contains("was moved out of the database") == true,
            "\(String(describing: doctorP))")
        let unmarked = try ctlRun(["migrate", "--cancel", "--config", rootP + "/casevault.toml"], in: rootP)
        #expect(unmarked.0 == 0, "\(unmarked.2)")
        #expect(try DoctorDatabaseTests.doctor(rootP).checks["vault moved"]?.0 == "pass")
        let served = try DatabaseDaemon(root: rootP)
        #expect(await served.waitUntilServing(), "\(served.notable)")
        let whileServed = try ctlRun(["migrate", "--cancel", "--config", rootX + "/casevault.toml"], in: rootX)
        #expect(whileServed.0 == 1 && whileServed.2.contains("daemon moved serves the vault"), "\(whileServed.2)")
        #expect(served.stop() == 0)
        let noMark = try ctlRun(["migrate", "--cancel", "--config", rootP + "/casevault.toml"], in: rootP)
        #expect(noMark.0 == 1 && noMark.2.contains("nothing to cancel"), "\(noMark.2)")
        let rootM = clusters.root + "/back-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(
            atPath: rootM + "/keys", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for name in ["root.key", "backup.keys"] {
            try FileManager.default.copyItem(atPath: rootP + "/keys/" + name, toPath: rootM + "/keys/" + name)
        }
        try String(contentsOfFile: rootL + "/casevault.toml", encoding: .utf8)
            .replacingOccurrences(of: rootL, with: rootM)
            .write(toFile: rootM + "/casevault.toml", atomically: true, encoding: .utf8)
        let local = try ctlRun(
            [
                "restore", "--in", back, "--data-dir", rootM + "/data", "--without-ledger", "--config",
                rootM + "/casevault.toml", "--json",
            ], in: rootM)
        #expect(local.0 == 0 && local.1["records"] as? Int == 6, "\(local.2)")
        try FileManager.default.removeItem(atPath: rootM + "/data/audit")
        try FileManager.default.moveItem(atPath: rootP + "/data/audit", toPath: rootM + "/data/audit")
        let m = try DatabaseDaemon(root: rootM)
        #expect(await m.waitUntilServing(), "\(m.notable)")
        let readBack = try await m.client.get("/v1/records/\(intake)")
        #expect(readBack.status == 200 && String(decoding: readBack.body, as: UTF8.self).contains(marker))
        let attachmentBack = try await m.client.get("/v1/records/\(intake)/attachment")
        #expect(attachmentBack.status == 200 && [UInt8](attachmentBack.body) == attachment)
        let noteBack = try await m.client.get("/v1/records/\(note)")
        #expect(noteBack.status == 200 && String(decoding: noteBack.body, as: UTF8.self).contains(marker))
        #expect(try await m.client.get("/v1/records/\(evaluation)").status == 410)
        let holdsBack = try await m.client.get("/v1/holds")
        #expect(holdsBack.status == 200 && String(decoding: holdsBack.body, as: UTF8.self).contains("audit \(marker)"))
        let certificatesBack = try await m.client.get("/v1/certificates?case_id=\(caseID)")
        #expect(String(decoding: certificatesBack.body, as: UTF8.self).contains(evaluation))
        // The rules go on with the notes that moved twice: a final agreement destroys them.
        let final = try await m.client.request(
            .POST, "/v1/cases/\(caseID)/records",
            json: [
                "type": "final_agreement",
                "content": [
                    "terms": "terms \(marker)", "outcome": "resolved", "outcome_confidential": true,
                    "consents": ["p1", "p2"],
                ],
            ])
        #expect(final.status == 201, "\(String(decoding: final.body, as: UTF8.self))")
        #expect(try await m.client.get("/v1/records/\(note)").status == 410)
        #expect(m.stop() == 0)
        let chained = try ctlRun(
            ["audit", "verify", "--offline", "--json", "--config", rootM + "/casevault.toml"], in: rootM)
        #expect(chained.0 == 0 && chained.1["ok"] as? Bool == true, "\(chained.2)")
        #expect((chained.1["entries"] as? Int ?? 0) > entriesP, "\(chained.2)")
        for daemon in [l, p, m] {
            #expect(!daemon.log.contains(marker), "the daemon logged content")
        }
    }
}

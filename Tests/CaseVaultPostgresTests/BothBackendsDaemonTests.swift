import CaseVaultClient
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// One scenario, through a real `casevaultd` and `casevaultctl`, on each backend: a daemon on a data directory,
/// then a daemon on PostgreSQL (a primary and a synchronous standby the test starts). A crash, a rotation, a
/// backup restored elsewhere and the audit log's proof give the same answers whichever backend keeps the vault.
extension EpochExchangeTests {
    @Test(
        "the same daemon on a data directory and on PostgreSQL: killed with SIGKILL while 16 clients file, it starts again with every acknowledged form whole and every form it lists readable; its audit log proves out online after the kill and offline after a stop; a shredded form answers shredded; casevaultctl rotate moves to epoch 2 with the forms unchanged; casevaultctl backup restores into a new data directory where a daemon reads every form unchanged and the shredded one stays shredded; nothing confidential in any log"
    )
    func sameDaemonOnBothBackends() async throws {
        var template = Array((NSTemporaryDirectory() + "/casevault-both-daemon-XXXXXX").utf8CString)
        let folder = String(cString: try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }))
        defer { try? FileManager.default.removeItem(atPath: folder) }
        chmod(folder, 0o755)
        let local = folder + "/local"
        try Self.writeLocalConfiguration(root: local)
        try await Self.daemonScenario(root: local, backend: "a data directory")

        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        try await Self.daemonScenario(
            root: try Self.databaseDaemonRoot(clusters, name: "vault-a"), backend: "PostgreSQL")
    }

    /// What the clients filing while the daemon is killed were told.
    final class Tally: Sendable {
        /// The ids of the forms acknowledged (201).
        let acknowledged = Mutex<[String]>([])
        /// Any answer but 201 and 503.
        let unexpected = Mutex<[String]>([])
        /// When the daemon was killed.
        let killed = Mutex<ContinuousClock.Instant?>(nil)
    }

    /// `root/casevault.toml` for a daemon on a data directory under `root`, uid 0 its director and operator.
    static func writeLocalConfiguration(root: String) throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try """
        \(DoctorDatabaseTests.storeAndServer(root))
        [roles]
        director = ["uid:0"]
        operator = ["uid:0"]

        """.write(toFile: root + "/casevault.toml", atomically: true, encoding: .utf8)
    }

    /// Runs casevaultctl with `arguments` in `root`: its exit status, its output read as one JSON document, and
    /// the output itself.
    static func ctl(_ arguments: [String], in root: String) throws -> (Int32, [String: Any], String) {
        let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("casevaultctl").path
        let (status, output) = try PostgresClusters.spawn(
            [binary] + arguments, environment: ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") },
            in: root)
        let document = (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any] ?? [:]
        return (status, document, output)
    }

    /// The scenario, on the daemon whose configuration is `root/casevault.toml`; `backend` names it in failures.
    static func daemonScenario(root: String, backend: String) async throws {
        let marker = "marker-\(UUID().uuidString)"
        var daemon = try DatabaseDaemon(root: root)
        #expect(await daemon.waitUntilServing(), "\(backend): \(daemon.notable)")
        let opened = try await daemon.client.request(
            .POST, "/v1/cases",
            json: ["participants": [["name": "Ada \(marker)"], ["name": "Bo \(marker)"]], "mediators": []])
        #expect(opened.status == 201, "\(backend): \(String(decoding: opened.body, as: UTF8.self))")
        let caseID = try #require(opened.json["case_id"] as? String)

        // 16 clients file forms until the daemon is killed, once 40 are acknowledged (or after 30 s).
        let tally = Tally()
        let client = daemon.client
        let pid = daemon.process.processIdentifier
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    while true {
                        let reply: VaultClient.Reply
                        do {
                            reply = try await client.request(
                                .POST, "/v1/cases/\(caseID)/records",
                                json: [
                                    "type": "intake_form",
                                    "content": ["dispute_category": "roommate", "screening": marker],
                                ])
                        } catch {
                            return  // The daemon is gone: this filing was never acknowledged.
                        }
                        if reply.status == 201, let id = reply.json["record_id"] as? String {
                            tally.acknowledged.withLock { $0.append(id) }
                        } else if reply.status == 503 {
                            try? await Task.sleep(for: .milliseconds(50))  // PostgreSQL: the first epoch's turn.
                        } else {
                            tally.unexpected.withLock { $0.append("\(reply.status)") }
                            return
                        }
                    }
                }
            }
            group.addTask {
                for _ in 0..<3000 where tally.acknowledged.withLock({ $0.count }) < 40 {
                    try? await Task.sleep(for: .milliseconds(10))
                }
                tally.killed.withLock { $0 = ContinuousClock.now }
                kill(pid, SIGKILL)
            }
        }
        // Every client was told at once, those whose requests waited for one of the client's connections too.
        let told = tally.killed.withLock { $0 }.map { ContinuousClock.now - $0 }
        #expect(
            told.map { $0 < .seconds(10) } == true,
            "\(backend): the clients were told after \(String(describing: told))")
        daemon.crash()
        let filed = tally.acknowledged.withLock { $0 }
        #expect(
            filed.count >= 40 && tally.unexpected.withLock { $0.isEmpty },
            "\(backend): \(tally.unexpected.withLock { $0 })")

        daemon = try DatabaseDaemon(root: root)
        #expect(await daemon.waitUntilServing(), "\(backend): \(daemon.notable)")
        // Every acknowledged form reads back whole; so does every form the case lists (those whose answer the
        // kill cut off included): nothing half-written.
        var bodies: [String: Data] = [:]
        for id in filed {
            let read = try await Self.whileUnavailable { try await daemon.client.get("/v1/records/\(id)") }
            #expect(
                read.status == 200 && String(decoding: read.body, as: UTF8.self).contains(marker),
                "\(backend): acknowledged \(id) answered \(read.status)")
            bodies[id] = read.body
        }
        let view = try await daemon.client.get("/v1/cases/\(caseID)")
        let listed = (view.json["records"] as? [[String: Any]] ?? []).compactMap { $0["record_id"] as? String }
        #expect(Set(filed).isSubset(of: Set(listed)), "\(backend): an acknowledged form is not listed")
        for id in listed where bodies[id] == nil {
            let read = try await daemon.client.get("/v1/records/\(id)")
            #expect(read.status == 200 && String(decoding: read.body, as: UTF8.self).contains(marker), "\(backend)")
            bodies[id] = read.body
        }
        let verified = try await daemon.client.get("/v1/audit/verify")
        #expect(verified.status == 200 && verified.json["ok"] as? Bool == true, "\(backend): \(verified.json)")

        // A shred; then a rotation to epoch 2, after which the forms read as before and the shred stays.
        let doomed = filed[0]
        let shred = try await daemon.client.request(
            .DELETE, "/v1/records/\(doomed)", json: ["reason": "filed_in_error"])
        #expect(shred.status == 200, "\(backend): \(String(decoding: shred.body, as: UTF8.self))")
        bodies[doomed] = nil
        let rotated = try Self.ctl(["rotate", "--json", "--socket", daemon.socket], in: root)
        #expect(rotated.0 == 0 && rotated.1["epoch"] as? Int == 2, "\(backend): \(rotated.2)")
        let keys = try await daemon.client.get("/v1/admin/status").json["keys"] as? [String: Any] ?? [:]
        #expect(keys["epoch"] as? Int == 2 && keys["active_epochs"] as? [Int] == [2], "\(backend): \(keys)")
        func readsAsBefore(_ daemon: DatabaseDaemon, _ stage: String) async throws {
            for (id, body) in bodies {
                let read = try await Self.whileUnavailable { try await daemon.client.get("/v1/records/\(id)") }
                #expect(read.status == 200 && read.body == body, "\(backend), \(stage): \(id) answered \(read.status)")
            }
            let gone = try await daemon.client.get("/v1/records/\(doomed)")
            #expect(gone.status == 410, "\(backend), \(stage): the shredded form answered \(gone.status)")
        }
        try await readsAsBefore(daemon, "after the rotation")

        // A backup, restored into a new data directory (the vault's keys copied beside it) without a daemon.
        let backup = root + "/vault.cvbackup"
        let backedUp = try Self.ctl(["backup", "--out", backup, "--socket", daemon.socket], in: root)
        #expect(backedUp.0 == 0, "\(backend): \(backedUp.2)")
        #expect(daemon.stop() == 0, "\(backend): \(daemon.notable)")
        let offline = try Self.ctl(
            ["audit", "verify", "--offline", "--json", "--config", root + "/casevault.toml"], in: root)
        #expect(offline.0 == 0 && offline.1["ok"] as? Bool == true, "\(backend): \(offline.2)")

        let copy = root + "/restored"
        try Self.writeLocalConfiguration(root: copy)
        try FileManager.default.createDirectory(
            atPath: copy + "/keys", withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        for name in ["root.key", "backup.keys"] {
            try FileManager.default.copyItem(atPath: root + "/keys/" + name, toPath: copy + "/keys/" + name)
        }
        let restored = try Self.ctl(
            [
                "restore", "--in", backup, "--data-dir", copy + "/data", "--without-ledger", "--config",
                copy + "/casevault.toml", "--json",
            ], in: copy)
        #expect(restored.0 == 0 && restored.1["records"] as? Int != nil, "\(backend): \(restored.2)")
        let second = try DatabaseDaemon(root: copy)
        #expect(await second.waitUntilServing(), "\(backend): \(second.notable)")
        try await readsAsBefore(second, "restored")
        #expect(second.stop() == 0, "\(backend): \(second.notable)")

        for place in [root, copy] {
            let log = (try? String(contentsOfFile: place + "/daemon.log", encoding: .utf8)) ?? ""
            let audit = (try? String(contentsOfFile: place + "/data/audit/log", encoding: .utf8)) ?? ""
            #expect(!log.isEmpty && !log.contains(marker), "\(backend): the daemon logged content")
            #expect(!audit.isEmpty && !audit.contains(marker), "\(backend): the audit log is empty or holds content")
        }
    }
}

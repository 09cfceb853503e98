import CaseVaultClient
import CaseVaultCore
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real `casevaultd` processes serving one vault kept in PostgreSQL (`[storage] backend = "postgresql"`),
/// each with its own socket, data directory (its audit log and epoch key file) and name, the same root key.
extension EpochExchangeTests {
    /// A `casevaultd` process whose configuration `DoctorDatabaseTests.configure` wrote under `root`, with
    /// its name and roles added; its output in `root/daemon.log`.
    final class DatabaseDaemon {
        let root: String
        let process = Process()
        var socket: String { self.root + "/run/casevault.sock" }
        var client: VaultClient { VaultClient(socketPath: self.socket) }
        var log: String { (try? String(contentsOfFile: self.root + "/daemon.log", encoding: .utf8)) ?? "" }
        /// The log without its trace lines, for a failure's message.
        var notable: String {
            self.log.split(separator: "\n").filter { !$0.contains(" trace ") && !$0.contains(" debug ") }
                .joined(separator: "\n")
        }

        init(root: String) throws {
            self.root = root
            let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
                .appendingPathComponent("casevaultd").path
            self.process.executableURL = URL(fileURLWithPath: binary)
            self.process.arguments = ["--config", root + "/casevault.toml", "--log-level", "trace"]
            self.process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
            if !FileManager.default.fileExists(atPath: root + "/daemon.log") {
                _ = FileManager.default.createFile(atPath: root + "/daemon.log", contents: nil)
            }
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: root + "/daemon.log"))
            log.seekToEndOfFile()
            self.process.standardOutput = log
            self.process.standardError = log
            try self.process.run()
        }

        /// Waits until health answers 200; false if the daemon exited or 30 s passed.
        func waitUntilServing() async -> Bool {
            for _ in 0..<300 {
                guard self.process.isRunning else { return false }
                if (try? await self.client.get("/v1/health"))?.status == 200 { return true }
                try? await Task.sleep(for: .milliseconds(100))
            }
            return false
        }

        /// Waits up to `seconds` for the daemon to exit by itself; false (and the daemon killed) when it did
        /// not.
        func exitsByItself(within seconds: Int = 30) async -> Bool {
            for _ in 0..<(seconds * 10) where self.process.isRunning {
                try? await Task.sleep(for: .milliseconds(100))
            }
            defer { self.crash() }
            return !self.process.isRunning
        }

        /// SIGKILL, as a crash would.
        func crash() {
            if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
            self.process.waitUntilExit()
        }

        /// SIGTERM, then the exit status.
        func stop() -> Int32 {
            if self.process.isRunning { kill(self.process.processIdentifier, SIGTERM) }
            self.process.waitUntilExit()
            return self.process.terminationStatus
        }

        deinit { self.crash() }
    }

    /// A daemon's directory on `clusters` (the standby listed first), named `name`, uid 0 its director and
    /// operator.
    static func databaseDaemonRoot(_ clusters: PostgresClusters, name: String) throws -> String {
        let root = try DoctorDatabaseTests.configure(
            clusters,
            servers: [
                (clusters.standbySockets, PostgresClusters.standbyPort),
                (clusters.primarySockets, clusters.primaryPort),
            ], password: clusters.password)
        let extra = "daemon_name = \"\(name)\"\n[roles]\ndirector = [\"uid:0\"]\noperator = [\"uid:0\"]\n"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: root + "/casevault.toml"))
        handle.seekToEndOfFile()
        handle.write(Data(extra.utf8))
        try handle.close()
        return root
    }

    /// Daemons a and b on `clusters`, serving: a started first (it makes the vault's root key), b with a
    /// copy of a's root key.
    static func twoDatabaseDaemons(_ clusters: PostgresClusters) async throws -> (DatabaseDaemon, DatabaseDaemon) {
        let rootA = try Self.databaseDaemonRoot(clusters, name: "vault-a")
        let rootB = try Self.databaseDaemonRoot(clusters, name: "vault-b")
        let a = try DatabaseDaemon(root: rootA)
        #expect(await a.waitUntilServing(), "\(a.notable)")
        // Every daemon of a vault holds its root key: b gets a copy of the one a made.
        try FileManager.default.createDirectory(
            atPath: rootB + "/keys", withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        try FileManager.default.copyItem(atPath: rootA + "/keys/root.key", toPath: rootB + "/keys/root.key")
        let b = try DatabaseDaemon(root: rootB)
        #expect(await b.waitUntilServing(), "\(b.notable)")
        return (a, b)
    }

    @Test(
        "two casevaultd daemons serve one vault in PostgreSQL: a case opened and a form filed on one is read on the other, a shred on the other is seen by the first with a certificate of erasure by key destruction, the sweep runs, the shred ledger lists the shred and a backup is written, casevaultctl rotate turns the erase epochs at once and the erasure is certified complete, forgetting a daemon that serves or that never served is refused, a daemon with another root key, under another name than its directory's or under the name of a daemon serving refuses to start, and a daemon killed, forgotten by casevaultctl on the other and started again destroys its keys, is sealed the current one and serves the case, and proves its audit log against its anchor in the database, and casevaultctl proves a copy of the other's log against that daemon's anchor offline; nothing confidential in either log"
    )
    func daemonsOnPostgres() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let marker = "marker-\(UUID().uuidString)"
        let (first, b) = try await Self.twoDatabaseDaemons(clusters)
        var a = first
        let rootA = a.root
        let opened = try await a.client.request(
            .POST, "/v1/cases",
            json: ["participants": [["name": "Ada \(marker)"], ["name": "Bo \(marker)"]], "mediators": []])
        #expect(opened.status == 201, "\(String(decoding: opened.body, as: UTF8.self))")
        let caseID = opened.json["case_id"] as? String ?? ""
        // Daemon b holds epoch 1's key once a has sealed it to b (a's next step); until then b's filings wait.
        var filed = try await Self.fileForm(b, caseID, marker)
        #expect(filed.status == 201 || filed.status == 503, "\(String(decoding: filed.body, as: UTF8.self))")
        let forms: Double = filed.status == 201 ? 2 : 1
        filed = try await Self.fileForm(a, caseID, marker)
        #expect(filed.status == 201, "\(String(decoding: filed.body, as: UTF8.self))")
        let recordID = filed.json["record_id"] as? String ?? ""

        // Daemon b reads it once a has sealed epoch 1's key to b, at a's next step (every two seconds).
        let read = try await Self.whileUnavailable { try await b.client.get("/v1/records/\(recordID)") }
        #expect(read.status == 200 && String(decoding: read.body, as: UTF8.self).contains(marker))
        let view = try await b.client.get("/v1/cases/\(caseID)")
        #expect(view.status == 200 && String(decoding: view.body, as: UTF8.self).contains(recordID))

        // The metrics count the live records in the database (the forms; the case header is not counted) and
        // give the vault's tables' size.
        func gauge(_ name: String) async throws -> Double? {
            let text = String(decoding: try await a.client.get("/v1/metrics").body, as: UTF8.self)
            return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
                .flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        let exposition = String(decoding: try await a.client.get("/v1/metrics").body, as: UTF8.self)
        #expect(try await gauge("casevault_live_records") == forms, "\(exposition)")
        // Whole MiB: these few rows take less than one.
        #expect(try await gauge("casevault_store_bytes") == 0)

        let shred = try await b.client.request(.DELETE, "/v1/records/\(recordID)", json: ["reason": "filed_in_error"])
        #expect(shred.status == 200, "\(String(decoding: shred.body, as: UTF8.self))")
        #expect(try await a.client.get("/v1/records/\(recordID)").status == 410)
        let certificates = try await a.client.get("/v1/certificates?case_id=\(caseID)")
        #expect(certificates.status == 200)
        #expect(String(decoding: certificates.body, as: UTF8.self).contains("key_destruction"))
        #expect(try await gauge("casevault_live_records") == forms - 1)

        // The sweep runs on the database (nothing is due yet); what only the local store does is 501.
        let sweep = try await a.client.request(.POST, "/v1/admin/sweep", json: [:])
        #expect(sweep.status == 200 && (sweep.json["totals"] as? [String: Any])?["disposed"] as? Int == 0)
        #expect(sweep.json["backup_keys_destroyed"] as? Int == 0)
        // The shred ledger's export: the shredded form's id and time, from the database.
        let ledger = try await a.client.get("/v1/admin/ledger")
        let entries = ledger.json["records"] as? [[String: Any]] ?? []
        #expect(
            ledger.status == 200 && entries.count == 1 && entries.first?["record_id"] as? String == recordID
                && entries.first?["shredded_at"] is String, "\(ledger.json)")
        // A backup of the database's rows (BackupOnPostgresTests restores one).
        let backup = try await a.client.request(.POST, "/v1/admin/backup")
        #expect(backup.status == 200 && backup.body.starts(with: Data("CVBK2\n".utf8)))

        // An operator's rotation: casevaultctl asks a, both daemons turn at their next steps rather than at
        // half the window and destroy epoch 1, and the command ends once they have; the shred's erasure is
        // then certified complete.
        let ctl = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("casevaultctl").path
        let (rotated, rotation) = try PostgresClusters.spawn(
            [ctl, "rotate", "--json", "--socket", a.socket], environment: ProcessInfo.processInfo.environment,
            in: a.root)
        let report = (try? JSONSerialization.jsonObject(with: Data(rotation.utf8))) as? [String: Any] ?? [:]
        #expect(rotated == 0 && report["epoch"] as? Int == 2 && report["complete"] as? Bool == true, "\(rotation)")
        var completed = false
        for _ in 0..<50 where !completed {
            let listed = try await a.client.get("/v1/certificates?case_id=\(caseID)")
            completed = String(decoding: listed.body, as: UTF8.self).contains("completes")
            if !completed { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(completed, "no second certificate after the rotation")
        let status = try await a.client.get("/v1/admin/status")
        let keys = status.json["keys"] as? [String: Any] ?? [:]
        #expect(keys["epoch"] as? Int == 2 && keys["active_epochs"] as? [Int] == [2], "\(status.json)")
        // Forgetting a daemon is refused for one that serves (b holds its name), for a name the vault never
        // saw, for a name that cannot be a daemon's, and without the operator's word in full.
        for (name, body, status, problem) in [
            ("vault-b", true, 409, "daemon-present"), ("vault-z", true, 404, "not-found"),
            ("Vault-B", true, 400, "invalid-identifier"), ("vault-b", false, 400, "invalid-field"),
        ] {
            let forget = try await a.client.request(
                .POST, "/v1/admin/daemons/\(name)/forget", json: ["key_file_destroyed": body])
            #expect(
                forget.status == status && forget.json["type"] as? String == "urn:casevault:problem:\(problem)",
                "\(name) \(body): \(String(decoding: forget.body, as: UTF8.self))")
        }
        let unsaid = try await a.client.request(.POST, "/v1/admin/daemons/vault-b/forget", json: [:])
        #expect(unsaid.status == 400 && unsaid.json["field"] as? String == "key_file_destroyed")

        // A third daemon with a root key of its own (none was copied to it) refuses to start, before it
        // publishes anything; so does a, killed, started under another name than its directory's.
        let stranger = try DatabaseDaemon(root: try Self.databaseDaemonRoot(clusters, name: "vault-c"))
        #expect(await stranger.exitsByItself(), "a daemon with another root key started")
        #expect(stranger.process.terminationStatus != 0)
        #expect(stranger.notable.contains("root key is not the vault's"), "\(stranger.notable)")
        // A second daemon under a's name (the vault's root key, a directory of its own) refuses to start while
        // a serves: a holds its name in the database.
        let twinRoot = try Self.databaseDaemonRoot(clusters, name: "vault-a")
        try FileManager.default.createDirectory(
            atPath: twinRoot + "/keys", withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        try FileManager.default.copyItem(atPath: rootA + "/keys/root.key", toPath: twinRoot + "/keys/root.key")
        let twin = try DatabaseDaemon(root: twinRoot)
        // It waits 30 s for the name, as for the session of a daemon of its name that died, then gives up.
        #expect(await twin.exitsByItself(within: 45), "a second daemon of one name started")
        #expect(twin.process.terminationStatus != 0)
        #expect(twin.notable.contains("already serves this vault"), "\(twin.notable)")
        a.crash()
        let configuration = rootA + "/casevault.toml"
        let named = try String(contentsOfFile: configuration, encoding: .utf8)
        try named.replacingOccurrences(of: "daemon_name = \"vault-a\"", with: "daemon_name = \"vault-z\"")
            .write(toFile: configuration, atomically: true, encoding: .utf8)
        let renamed = try DatabaseDaemon(root: rootA)
        #expect(await renamed.exitsByItself(), "a daemon started under another name than its directory's")
        #expect(renamed.process.terminationStatus != 0)
        #expect(renamed.notable.contains("a daemon's name cannot change"), "\(renamed.notable)")
        try named.write(toFile: configuration, atomically: true, encoding: .utf8)

        // While a is down, an operator forgets it from b (its last step made to look older than an eighth of
        // any window): casevaultctl prints the epoch it held as marked destroyed.
        _ = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            "UPDATE casevault_daemons SET seen_at = now() - interval '40 days' WHERE daemon = 'vault-a'")
        let (forgot, printed) = try PostgresClusters.spawn(
            [ctl, "daemon", "forget", "vault-a", "--key-file-destroyed", "--json", "--socket", b.socket],
            environment: ProcessInfo.processInfo.environment, in: b.root)
        let forgotten = (try? JSONSerialization.jsonObject(with: Data(printed.utf8))) as? [String: Any] ?? [:]
        #expect(forgot == 0 && forgotten["epochs_marked_destroyed"] as? [Int] == [2], "\(printed)")

        // Started again: it destroys the keys it held, says so, is sealed the current key by b, and serves the
        // case; the audit log checks out against its anchor.
        a = try DatabaseDaemon(root: rootA)
        #expect(await a.waitUntilServing(), "\(a.notable)")
        let again = try await Self.whileUnavailable { try await a.client.get("/v1/cases/\(caseID)") }
        #expect(again.status == 200, "\(String(decoding: again.body, as: UTF8.self))")
        #expect(a.notable.contains("an operator forgot this daemon"), "\(a.notable)")
        let verified = try await a.client.get("/v1/audit/verify")
        #expect(verified.status == 200 && verified.json["ok"] as? Bool == true, "\(verified.json)")
        #expect(a.stop() == 0 && b.stop() == 0)
        for daemon in [a, b] {
            #expect(!daemon.log.contains(marker), "the daemon logged content")
            let audit = (try? String(contentsOfFile: daemon.root + "/data/audit/log", encoding: .utf8)) ?? ""
            #expect(!audit.isEmpty && !audit.contains(marker), "the audit log is empty or holds content")
        }

        // Each daemon's chain proven from one place against its anchor in the database: a copy of b's log,
        // with a's configuration (the database, the root key) and --daemon vault-b. A copy cut short, or the
        // log checked against another daemon's anchor, fails.
        let copy = a.root + "/copy-of-b"
        try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: b.root + "/data/audit", toPath: copy + "/audit")
        func verify(_ daemon: String) throws -> (Int32, [String: Any], String) {
            let (status, printed) = try PostgresClusters.spawn(
                [
                    ctl, "audit", "verify", "--offline", "--json", "--data-dir", copy, "--daemon", daemon,
                    "--config", a.root + "/casevault.toml",
                ], environment: ProcessInfo.processInfo.environment, in: a.root)
            let report = (try? JSONSerialization.jsonObject(with: Data(printed.utf8))) as? [String: Any] ?? [:]
            return (status, report, printed)
        }
        let proven = try verify("vault-b")
        #expect(proven.0 == 0 && proven.1["ok"] as? Bool == true && proven.1["anchor"] as? Int != nil, "\(proven.2)")
        #expect(try verify("vault-a").0 == 1, "b's log proven against a's anchor")
        let log = copy + "/audit/log"
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(
            separator: "\n", omittingEmptySubsequences: false)
        try (lines.dropLast(2).joined(separator: "\n") + "\n").write(toFile: log, atomically: false, encoding: .utf8)
        let cut = try verify("vault-b")
        #expect(cut.0 == 1 && cut.1["ok"] as? Bool == false, "\(cut.2)")
    }

    @Test(
        "a daemon whose name another session takes while it serves (its own session ended) stops within two and a half minutes, exit 3, naming why"
    )
    func daemonThatLosesItsNameStops() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let daemon = try DatabaseDaemon(root: try Self.databaseDaemonRoot(clusters, name: "vault-a"))
        #expect(await daemon.waitUntilServing(), "\(daemon.notable)")
        let (connection, _) = try await PrimaryLocator(
            location: try clusters.location([clusters.primary]), password: clusters.password, logger: self.logger
        ).connect()
        defer { connection.closeAtExit() }
        let (high, low) = DaemonPresence.lockHalves(try DaemonName("vault-a"))
        // Its session ended under it, and the name taken by another session before the daemon's next step;
        // tried until taken (the daemon's step may take it back first, on a session the next round ends):
        // never a wait that could outlast the test.
        var (taken, holders) = (false, 0)
        for _ in 0..<50 where !taken {
            for try await ended in try await connection.query(
                """
                SELECT pg_terminate_backend(l.pid, 5000) FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                AND l.classid::int8 = \(high) AND l.objid::int8 = \(low)
                """, logger: self.logger
            ).decode(Bool.self) where ended {
                holders += 1
            }
            for try await value in try await connection.query(
                "SELECT pg_try_advisory_lock(\(DaemonPresence.key(try DaemonName("vault-a"))))", logger: self.logger
            ).decode(Bool.self) {
                taken = value
            }
        }
        #expect(holders >= 1, "no session held the daemon's name")
        #expect(taken, "the test could not take the daemon's name")
        var stopped = false
        // A minute's grace, after at most one step that waited its 30 s on the ended session (PostgresNIO
        // does not always see such a session end).
        for _ in 0..<1500 {
            guard daemon.process.isRunning else {
                stopped = true
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(stopped, "the daemon served on without its name")
        daemon.crash()
        #expect(daemon.process.terminationStatus == 3, "\(daemon.notable)")
        #expect(daemon.notable.contains("this one stops"), "\(daemon.notable)")
    }

    /// Files an intake form carrying `marker` in case `caseID` through `daemon`: the reply.
    static func fileForm(_ daemon: DatabaseDaemon, _ caseID: String, _ marker: String) async throws
        -> VaultClient.Reply
    {
        try await daemon.client.request(
            .POST, "/v1/cases/\(caseID)/records",
            json: ["type": "intake_form", "content": ["dispute_category": "roommate", "screening": marker]])
    }

    /// `request`'s reply once it is not 503, asked again every 100 ms for up to ten seconds (the last reply
    /// then, whatever it is).
    static func whileUnavailable(_ request: () async throws -> VaultClient.Reply) async throws -> VaultClient.Reply {
        var reply = try await request()
        for _ in 0..<100 where reply.status == 503 {
            try await Task.sleep(for: .milliseconds(100))
            reply = try await request()
        }
        return reply
    }

    /// `twoDatabaseDaemons`, a case opened on a, and a form whose content holds `marker` filed on b once b
    /// holds epoch 1 (a's next step seals it to b): the daemons, the case's id and the form's.
    static func caseWithAForm(_ clusters: PostgresClusters, marker: String) async throws -> (
        DatabaseDaemon, DatabaseDaemon, caseID: String, formID: String
    ) {
        let (a, b) = try await Self.twoDatabaseDaemons(clusters)
        let opened = try await a.client.request(
            .POST, "/v1/cases", json: ["participants": [["name": "Ada"], ["name": "Bo"]], "mediators": []])
        let caseID = try #require(opened.json["case_id"] as? String, "\(String(decoding: opened.body, as: UTF8.self))")
        let first = try await Self.whileUnavailable { try await Self.fileForm(b, caseID, marker) }
        let formID = try #require(first.json["record_id"] as? String, "\(String(decoding: first.body, as: UTF8.self))")
        return (a, b, caseID, formID)
    }

    @Test(
        "failover under two daemons: the primary killed and the standby promoted; meanwhile filings and reads get 503 storage-unavailable, never another answer; afterwards both daemons file again without a restart, and every form acknowledged before is read back whole on both"
    )
    func failoverUnderDaemons() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let marker = "marker-\(UUID().uuidString)"
        let (a, b, caseID, _) = try await Self.caseWithAForm(clusters, marker: marker)
        var acknowledged: [String] = []
        for number in 0..<10 {
            let reply = try await Self.fileForm(number % 2 == 0 ? a : b, caseID, "\(marker)-\(number)")
            #expect(reply.status == 201)
            if reply.status == 201, let id = reply.json["record_id"] as? String { acknowledged.append(id) }
        }

        try #require(acknowledged.count == 10)

        // The primary gone, the standby not yet promoted: no server takes writes.
        try clusters.kill(primary: true)
        for daemon in [a, b] {
            let filing = try await Self.fileForm(daemon, caseID, marker)
            #expect(filing.status == 503, "\(String(decoding: filing.body, as: UTF8.self))")
            #expect(filing.json["type"] as? String == "urn:casevault:problem:storage-unavailable")
            let read = try await daemon.client.get("/v1/records/\(acknowledged[0])")
            #expect(read.status == 503 && read.json["type"] as? String == "urn:casevault:problem:storage-unavailable")
        }

        // Promoted: both daemons file again, without a restart, and every acknowledged form is there.
        try clusters.promoteStandby()
        for daemon in [a, b] {
            let filing = try await Self.whileUnavailable { try await Self.fileForm(daemon, caseID, marker) }
            #expect(filing.status == 201, "\(String(decoding: filing.body, as: UTF8.self))")
            for (number, id) in acknowledged.enumerated() {
                let read = try await daemon.client.get("/v1/records/\(id)")
                #expect(
                    read.status == 200 && String(decoding: read.body, as: UTF8.self).contains("\(marker)-\(number)\""),
                    "acknowledged form \(number) lost")
            }
        }
        #expect(a.process.isRunning && b.process.isRunning)
        #expect(a.stop() == 0 && b.stop() == 0)
    }

    @Test(
        "a primary that stays up but stops taking writes (as a server turned standby, SQLSTATE 25006): filings answer 503 storage-unavailable, never another answer, and file nothing; reads of acknowledged forms answer 200; once it takes writes again both daemons file without a restart"
    )
    func primaryStopsTakingWrites() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let marker = "marker-\(UUID().uuidString)"
        let (a, b, caseID, acknowledged) = try await Self.caseWithAForm(clusters, marker: "\(marker)-first")
        var filed = 1

        // The sessions read the setting at their next statement: filings go through until then.
        try clusters.refuseWrites(true)
        var refused: VaultClient.Reply?
        for _ in 0..<100 {
            let reply = try await Self.fileForm(a, caseID, "\(marker)-refused")
            #expect(reply.status == 201 || reply.status == 503, "\(String(decoding: reply.body, as: UTF8.self))")
            if reply.status == 201 { filed += 1 }
            if reply.status != 201 {
                refused = reply
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(refused?.json["type"] as? String == "urn:casevault:problem:storage-unavailable")
        for daemon in [a, b] {
            let filing = try await Self.fileForm(daemon, caseID, "\(marker)-refused")
            #expect(
                filing.status == 503 && filing.json["type"] as? String == "urn:casevault:problem:storage-unavailable")
            let read = try await daemon.client.get("/v1/records/\(acknowledged)")
            #expect(read.status == 200 && String(decoding: read.body, as: UTF8.self).contains("\(marker)-first\""))
        }

        try clusters.refuseWrites(false)
        for daemon in [a, b] {
            let filing = try await Self.whileUnavailable { try await Self.fileForm(daemon, caseID, "\(marker)-after") }
            #expect(filing.status == 201, "\(String(decoding: filing.body, as: UTF8.self))")
            if filing.status == 201 { filed += 1 }
        }
        // Nothing a refusal answered was filed.
        let listed = try await a.client.get("/v1/cases/\(caseID)/records?type=intake_form")
        #expect((listed.json["records"] as? [Any])?.count == filed, "\(String(decoding: listed.body, as: UTF8.self))")
        #expect(a.process.isRunning && b.process.isRunning)
        #expect(a.stop() == 0 && b.stop() == 0)
    }

    @Test(
        "a filing whose commit the database does not answer (the synchronous standby gone: the primary's commit waits for it) answers after its 30 s 500 storage-failure saying it may have been done, never 503 storage-unavailable, which says nothing was; with the standby back the form was kept"
    )
    func commitUnanswered() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let marker = "marker-\(UUID().uuidString)"
        let (a, b, caseID, _) = try await Self.caseWithAForm(clusters, marker: "\(marker)-first")

        try clusters.kill(primary: false)
        let unanswered = try await Self.fileForm(a, caseID, "\(marker)-unanswered")
        #expect(
            unanswered.status == 500 && unanswered.json["type"] as? String == "urn:casevault:problem:storage-failure"
                && String(decoding: unanswered.body, as: UTF8.self).contains("may have been done"),
            "\(unanswered.status) \(String(decoding: unanswered.body, as: UTF8.self))")

        // Back (within 30 s, on a loaded machine), the standby takes the commit that waited for it, and the form
        // is there.
        try clusters.restartStandby()
        var listed = 0
        for _ in 0..<300 {
            let listing = try await b.client.get("/v1/cases/\(caseID)/records?type=intake_form")
            listed = (listing.json["records"] as? [Any])?.count ?? 0
            if listed == 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(listed == 2, "the forms listed: \(listed) of 2")
        #expect(a.process.isRunning && b.process.isRunning)
        #expect(a.stop() == 0 && b.stop() == 0)
    }
}

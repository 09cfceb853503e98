import ArgumentParser
import CaseVaultAudit
import CaseVaultConfiguration
import CaseVaultCore
import CaseVaultCrypto
import CaseVaultFiles
import CaseVaultStore
import Foundation

extension CaseVaultCtl {
    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The audit log: check its hash chain and signed checkpoints, or show its newest entries.",
            subcommands: [Verify.self, Tail.self]
        )

        /// The data directory for --offline: --data-dir, or store.data_directory of --config.
        static func dataDirectory(_ dataDir: String?, config: String) throws(CLIError) -> String {
            if let dataDir { return dataDir }
            do {
                let configuration = try DaemonConfiguration.load(path: config)
                let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
                return try configuration.storeConfiguration(relativeTo: base).dataDirectory.path
            } catch {
                throw CLIError.configuration("\(error.message) (or name the data directory with --data-dir)")
            }
        }

        struct Tail: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Show the newest audit entries, oldest first (operator or director): never content.",
                discussion: """
                    Each entry: its number, time, kind, the peer's uid and roles, and the route with the ids in its \
                    path (a request), or the status and problem code (a result, naming its request's number). \
                    With --offline, reads the log from the data directory of --config or from --data-dir, without \
                    the daemon. A view, not a check: casevaultctl audit verify checks the chain.
                    """
            )

            @OptionGroup var connection: Connection
            @Option(name: .short, help: "How many entries, 1 to \(AuditTail.maxCount).") var n: Int = AuditTail
                .defaultCount
            @Flag(help: "Read the log from the data directory instead of asking the daemon.") var offline = false
            @Option(help: "With --offline: the data directory (default: store.data_directory of --config).")
            var dataDir: String?

            struct Body: Codable {
                var entries: [AuditEntry]
            }

            func validate() throws {
                guard (1...AuditTail.maxCount).contains(self.n) else {
                    throw ValidationError("-n must be from 1 to \(AuditTail.maxCount)")
                }
                if !self.offline, self.dataDir != nil {
                    throw ValidationError("--data-dir goes with --offline")
                }
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let entries: [AuditEntry]
                    if self.offline {
                        let directory = try Audit.dataDirectory(self.dataDir, config: self.connection.config)
                        do throws(CaseVaultError) {
                            entries = try AuditTail.read(directory: directory + "/audit", count: self.n)
                        } catch {
                            throw error.code == .integrityFailure
                                ? CLIError.problem(error.message) : CLIError.unreadable(error.message)
                        }
                    } else {
                        let reply = try await self.connection.client().get("/v1/audit/entries?last=\(self.n)")
                        guard reply.status == 200 else { throw CLIError.from(reply) }
                        guard let body = try? JSONDecoder().decode(Body.self, from: Data(reply.body)) else {
                            throw CLIError.problem("the daemon's audit entries could not be read")
                        }
                        entries = body.entries
                    }
                    Self.print(entries, json: self.connection.json)
                }
            }

            static func print(_ entries: [AuditEntry], json: Bool) {
                if json {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.sortedKeys]
                    Swift.print(
                        String(decoding: (try? encoder.encode(Body(entries: entries))) ?? Data(), as: UTF8.self))
                    return
                }
                var rows: [[String]] = []
                for entry in entries {
                    var what: String
                    switch entry.kind {
                    case .request:
                        what = "#\(entry.request ?? 0) \(entry.action ?? "")"
                    case .result, .refused:
                        what =
                            (entry.kind == .result ? "#\(entry.request ?? 0) → " : "\(entry.action ?? "no route") → ")
                            + "\(entry.status ?? 0)" + (entry.problem.map { " \($0)" } ?? "")
                    case .key:
                        what = "audit key \(entry.publicKey ?? "")" + (entry.reason.map { " (\($0))" } ?? "")
                    case .checkpoint:
                        what = "signed (\(entry.reason ?? ""))"
                    }
                    if let ids = entry.ids, !ids.isEmpty {
                        what +=
                            " " + ids.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                    }
                    let who =
                        entry.uid.map {
                            "uid \($0)"
                                + ((entry.roles ?? []).isEmpty
                                    ? "" : " (" + (entry.roles ?? []).joined(separator: ",") + ")")
                        } ?? "-"
                    rows.append([String(entry.seq), Timestamp.rfc3339(entry.time), entry.kind.rawValue, who, what])
                }
                TextTable.print(rows)
            }
        }

        struct Verify: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract:
                    "Verify the audit log: exit 0 when it is intact, 1 when an entry is bad (the first one is named).",
                discussion: """
                    By default the daemon verifies its own log under its own keys (operator or director): every \
                    entry's hash and MAC, every checkpoint's signature, and that the log holds the entry the \
                    index's anchor names (a log cut short, replaced or deleted fails). \
                    With --offline, this command reads the log itself, from the data directory of --config or \
                    from --data-dir (a copy, say), without the daemon, and takes the root key from --config's key \
                    source (the passphrase from the terminal, or standard input with --stdin) to check the MACs \
                    and the anchor the same way. With --pubkey instead (the public_key an online verify prints), \
                    no root key is used: the hashes, the signatures and the anchor's entry are checked, the MACs \
                    are not (the report says so). For a vault kept in PostgreSQL, --offline compares the log with \
                    the anchor in the database of the daemon named by --daemon (default: [storage] daemon_name of \
                    --config): copy each daemon's audit directory (data_directory/audit) from its host and prove \
                    every daemon's chain from one place that reaches the database. Exit 66 when the log cannot be \
                    read offline, 69 when the database cannot be reached, 78 when the root key cannot be read.
                    """
            )

            @OptionGroup var connection: Connection
            @Flag(help: "Read the log from the data directory instead of asking the daemon.") var offline = false
            @Option(help: "With --offline: the data directory (default: store.data_directory of --config).")
            var dataDir: String?
            @Option(
                help:
                    "With --offline: check without the root key, pinning the audit public key (64 hexadecimal characters)."
            )
            var pubkey: String?
            @Flag(help: "With --offline and the passphrase key source: read the passphrase from standard input.")
            var stdin = false
            @Option(
                help:
                    "With --offline, for a vault in PostgreSQL: the daemon whose log this is (default: [storage] daemon_name of --config)."
            )
            var daemon: String?

            func validate() throws {
                if !self.offline, self.dataDir != nil || self.pubkey != nil || self.stdin || self.daemon != nil {
                    throw ValidationError("--data-dir, --pubkey, --stdin and --daemon go with --offline")
                }
                if let pubkey, Hex.decode(pubkey.lowercased())?.count != 32 {
                    throw ValidationError("--pubkey must be 64 hexadecimal characters")
                }
            }

            func run() async throws {
                var report: AuditReport?
                try await runReporting { () throws(CLIError) in
                    report = self.offline ? try await self.verifyOffline() : try await self.verifyOnline()
                }
                guard let report else { return }
                Self.print(report, json: self.connection.json)
                if !report.ok { throw ExitCode(ExitStatus.failed) }
            }

            func verifyOnline() async throws(CLIError) -> AuditReport {
                let reply = try await self.connection.client().get("/v1/audit/verify")
                guard reply.status == 200 else { throw CLIError.from(reply) }
                guard let report = try? JSONDecoder().decode(AuditReport.self, from: Data(reply.body)) else {
                    throw CLIError.problem("the daemon's audit report could not be read")
                }
                return report
            }

            func verifyOffline() async throws(CLIError) -> AuditReport {
                let directory = try Audit.dataDirectory(self.dataDir, config: self.connection.config)
                let segments: [AuditSegment]
                do {
                    segments = try AuditSegment.files(in: directory + "/audit")
                } catch {
                    throw CLIError.unreadable("cannot read \(directory)/audit: \(error.message)")
                }
                guard !segments.isEmpty else {
                    throw CLIError.unreadable("there is no audit log in \(directory)/audit")
                }
                let head = FileManager.default.contents(atPath: directory + "/audit/head").map { [UInt8]($0) }
                let signer = self.pubkey == nil ? try self.signer() : nil
                var anchor: AuditAnchor?
                do {
                    if let database = try await self.databaseAnchor(signer: signer) {
                        anchor = database.anchor
                    } else if FileManager.default.fileExists(atPath: directory + "/index.sqlite") {
                        // A copy of the log alone has no index, so no anchor to compare.
                        anchor = try RecordStore.auditAnchor(ofDataDirectory: directory, signer: signer)
                    }
                } catch {
                    switch error.code {
                    case .storageUnavailable: throw CLIError.unreachable(error.message)
                    case .invalidConfiguration: throw CLIError.configuration(error.message)
                    default: break
                    }
                    guard error.code == .integrityFailure else { throw CLIError.unreadable(error.message) }
                    var report = AuditVerifier.verify(segments: segments, head: head, signer: signer)
                    report.ok = false
                    report.firstBad = AuditReport.Problem(
                        seq: report.entries + 1, line: 0, offset: 0, reason: error.message)
                    return report
                }
                return AuditVerifier.verify(
                    segments: segments, head: head, expectedKey: self.pubkey.flatMap { Hex.decode($0.lowercased()) },
                    signer: signer,
                    anchor: anchor
                )
            }

            /// For a vault kept in PostgreSQL (by --config), the anchor in the database of the daemon --daemon
            /// names, or of --config's own (`anchor` nil: that daemon has none); `nil` for a vault kept in a data
            /// directory.
            func databaseAnchor(signer: AuditSigner?) async throws(CaseVaultError) -> DatabaseAnchor? {
                let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
                let configuration = try DaemonConfiguration.load(path: self.connection.config)
                guard try configuration.databaseSettings(relativeTo: base) != nil else {
                    guard self.daemon == nil else {
                        throw CaseVaultError(
                            .invalidConfiguration,
                            "--daemon names a daemon of a vault kept in PostgreSQL; --config keeps it in a data directory",
                            field: "storage.backend")
                    }
                    return nil
                }
                let anchor = try await configuration.databaseAuditAnchor(
                    daemon: self.daemon, base: base,
                    credentials: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"], signer: signer)
                return DatabaseAnchor(anchor: anchor)
            }

            /// The anchor found in the database; `nil` when the daemon has none.
            struct DatabaseAnchor {
                var anchor: AuditAnchor?
            }

            /// The vault's audit keys, from the root key of --config's key source.
            func signer() throws(CLIError) -> AuditSigner {
                let store: StoreConfiguration
                do {
                    let configuration = try DaemonConfiguration.load(path: self.connection.config)
                    let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
                    store = try configuration.storeConfiguration(relativeTo: base)
                } catch {
                    throw CLIError.configuration("\(error.message) (or check without the root key: --pubkey)")
                }
                var passphrase: SecureBytes?
                if store.keySource == .passphrase {
                    passphrase = try Secret.passphrase(stdin: self.stdin)
                }
                do {
                    return try RecordStore.auditSigner(store, passphrase: passphrase)
                } catch {
                    throw CLIError.configuration(
                        "cannot read the root key: \(error.message) (or check without it: --pubkey)")
                }
            }

            static func print(_ report: AuditReport, json: Bool) {
                if json {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.sortedKeys]
                    Swift.print(String(decoding: (try? encoder.encode(report)) ?? Data(), as: UTF8.self))
                    return
                }
                var rows: [(String, String)] = [
                    ("audit log", report.ok ? "intact" : "BROKEN"),
                    (
                        "entries",
                        (report.ok ? "\(report.entries)" : "\(report.entries) good before the first bad one")
                            + (report.firstEntry > 1
                                ? ", from entry \(report.firstEntry) (older files removed by the retention)" : "")
                    ),
                    ("files", "\(report.files)"),
                    (
                        "checkpoints",
                        "\(report.checkpoints)" + (report.lastCheckpoint.map { ", the last at entry \($0)" } ?? "")
                    ),
                    ("unsigned", "\(report.unsignedEntries) entries after the last checkpoint"),
                    (
                        "MACs",
                        report.macsChecked
                            ? "checked (\(report.unkeyedEntries) entries written while sealed have none)"
                            : "not checked: no root key"
                    ),
                    ("anchor", report.anchor.map { "entry \($0)" } ?? "none"),
                    ("signing key", report.publicKey ?? "none yet"),
                ]
                if !report.breaks.isEmpty {
                    rows.append(
                        (
                            "accepted breaks",
                            report.breaks.map { "at entry \($0)" }.joined(separator: ", ")
                                + " (casevaultctl audit tail shows what was found)"
                        ))
                }
                if let bad = report.firstBad {
                    let place = bad.file.map { "\($0), line \(bad.line), byte \(bad.offset)" } ?? "after the last file"
                    rows.append(("first bad entry", "\(bad.seq) (\(place)): \(bad.reason)"))
                }
                output(json: false, document: [:], rows: rows)
            }
        }
    }
}

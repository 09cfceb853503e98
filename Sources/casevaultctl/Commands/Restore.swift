import ArgumentParser
import CaseVaultConfiguration
import CaseVaultCore
import CaseVaultCrypto
import CaseVaultFiles
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Restore a backup into an empty data directory, without the daemon, or through the daemon into an empty vault on PostgreSQL, re-applying the shred ledger.",
            discussion: """
                Without --data-dir, the backup (one a daemon of a vault on PostgreSQL wrote) goes to the daemon \
                (--socket, or server.socket_path of --config), whose vault must hold nothing yet, and whose backup \
                key file holds the backup's key; it is kept whole or not at all. The records --ledger names (the \
                lost vault's ledger, exported with casevaultctl ledger --out) are shredded again if the backup \
                holds them; give --without-ledger to restore without one. A vault moved from a data directory \
                (casevaultctl migrate) goes the same way: give --without-ledger when it is restored right after it \
                was written (the file carries its ledger), or the ledger of the vault it made since. \
                With --data-dir, a data directory's backup, a database's backup or a vault moved from a database \
                (casevaultctl migrate) is restored without the daemon. \
                Reads the vault's root key (by --config's key source: the key file, $CREDENTIALS_DIRECTORY, or the \
                passphrase, asked without echo or read with --stdin) and its backup key file. Refuses a damaged or \
                altered file, another vault's backup, and a backup whose key was destroyed, leaving nothing behind. \
                Every record the shred ledger names is shredded again if the backup holds it, and kept in the \
                restored vault's ledger either way. The ledger is the copy beside the backup keys ([backup] \
                ledger_file, default shred.ledger beside the backup key file; the daemon adds each shred to it before \
                answering), together with the live vault's data directory (--live-data, read only) and an exported \
                ledger (--ledger, from casevaultctl ledger) when given. Without the copy one of those is needed, or \
                --without-ledger, which restores without any ledger. A copy that does not check out under the root \
                key is refused. \
                Exit 0 restored, 1 refused, 64 bad usage, 66 the backup or ledger cannot be read, 78 bad configuration.
                """
        )

        @Option(name: .customLong("in"), help: "The backup file.") var input: String
        @Option(help: "The empty (or missing) data directory to restore into (a vault kept in a data directory).")
        var dataDir: String?
        @Option(help: "Without --data-dir: the daemon's socket. Default: server.socket_path of --config.")
        var socket: String?
        @Option(help: "An exported shred ledger (casevaultctl ledger --out), read with the ledger copy.") var ledger:
            String?
        @Option(help: "The live vault's data directory, whose shred ledger is read with the ledger copy.") var liveData:
            String?
        @Flag(help: "Restore without any ledger, not even the copy (records shredded since the backup come back).")
        var withoutLedger = false
        @Flag(help: "Read the passphrase from standard input.") var stdin = false
        @Option(help: "The daemon's configuration (key source, key files).") var config: String =
            "Config/casevault.toml"
        @Flag(help: "Print one JSON document.") var json = false

        func validate() throws {
            guard !self.withoutLedger || (self.ledger == nil && self.liveData == nil) else {
                throw ValidationError("--without-ledger re-applies no ledger: give it without --ledger and --live-data")
            }
            guard self.dataDir != nil || (self.liveData == nil && !self.stdin) else {
                throw ValidationError(
                    "--live-data and --stdin are for a restore into a data directory: give --data-dir")
            }
            guard self.dataDir == nil || self.socket == nil else {
                throw ValidationError("--socket is for a restore through the daemon: give it without --data-dir")
            }
        }

        func run() async throws {
            do {
                if let dataDir = self.dataDir {
                    try self.restore(into: dataDir)
                } else {
                    try await self.restoreThroughDaemon()
                }
            } catch {
                FileHandle.standardError.write(Data("casevaultctl: \(error.message)\n".utf8))
                throw ExitCode(error.exitCode)
            }
        }

        /// Sends the backup, after the ledger's bytes, to the daemon (`POST /v1/admin/restore`).
        private func restoreThroughDaemon() async throws(CLIError) {
            guard self.withoutLedger || self.ledger != nil else {
                throw CLIError.usage(
                    "give --ledger FILE (the lost vault's ledger, casevaultctl ledger --out) so that the records shredded since the backup stay shredded, or --without-ledger to restore knowing that they come back"
                )
            }
            var prefix: [UInt8] = []
            if let file = self.ledger {
                _ = try Self.exportedLedger(file)
                guard let data = FileManager.default.contents(atPath: file) else {
                    throw CLIError.unreadable("cannot read the ledger \(file)")
                }
                prefix = Array(data)
            }
            let descriptor = open(self.input, O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else {
                throw CLIError.unreadable("cannot read \(self.input): \(String(cString: strerror(errno)))")
            }
            defer { close(descriptor) }
            var info = stat()
            guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
                throw CLIError.unreadable("\(self.input) is not a plain file")
            }
            let client: DaemonClient
            if let socket = self.socket {
                client = DaemonClient(socketPath: socket)
            } else {
                do {
                    let configuration = try DaemonConfiguration.load(path: self.config)
                    let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
                    client = DaemonClient(
                        socketPath: try configuration.serverConfiguration(relativeTo: base).socketPath)
                } catch {
                    throw CLIError.configuration("\(error.message) (or name the socket with --socket)")
                }
            }
            let reply = try await client.upload(
                .POST, "/v1/admin/restore", file: descriptor, length: Int64(info.st_size),
                mediaType: "application/octet-stream", prefix: prefix,
                headers: prefix.isEmpty ? [] : [("CaseVault-Ledger-Length", "\(prefix.count)")], progress: { _ in })
            guard reply.status == 200 else { throw CLIError.from(reply) }
            let json = reply.json
            output(
                json: self.json, document: json,
                rows: [
                    ("backup", json["backup_id"] as? String ?? "?"), ("taken", json["created_at"] as? String ?? "?"),
                    ("records", "\(json["records"] as? Int ?? 0)"),
                    ("attachments", "\(json["attachments"] as? Int ?? 0)"),
                    ("holds", "\(json["holds"] as? Int ?? 0)"),
                    ("certificates", "\(json["certificates"] as? Int ?? 0)"),
                    ("shredded again", "\(json["shredded_again"] as? Int ?? 0) (from the ledger)"),
                ])
        }

        private func restore(into dataDir: String) throws(CLIError) {
            let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
            let configuration: DaemonConfiguration
            var store: StoreConfiguration
            do {
                configuration = try DaemonConfiguration.load(path: self.config)
                store = try configuration.storeConfiguration(relativeTo: base)
            } catch {
                throw CLIError.configuration(error.message)
            }
            store.dataDirectory = URL(fileURLWithPath: dataDir, relativeTo: base).standardizedFileURL
            let copy = ShredLedgerFile(path: configuration.shredLedgerFile(relativeTo: base))
            let readsCopy = !self.withoutLedger && copy.exists
            guard self.withoutLedger || readsCopy || self.ledger != nil || self.liveData != nil else {
                throw CLIError.unreadable(
                    "no shred ledger copy at \(copy.path), so the records shredded since the backup are not known: give --ledger FILE "
                        + "(casevaultctl ledger --out) or --live-data DIR, or --without-ledger to restore knowing that they come back"
                )
            }
            var ledger: [ShredLedgerEntry] = []
            if let file = self.ledger {
                ledger += try Self.exportedLedger(file)
            }
            if let live = self.liveData {
                do {
                    ledger += try RecordStore.shredLedger(ofDataDirectory: live)
                } catch {
                    throw CLIError.unreadable(error.message)
                }
            }
            var passphrase: SecureBytes?
            if store.keySource == .passphrase {
                passphrase = try Secret.passphrase(stdin: self.stdin)
            }
            guard let handle = FileHandle(forReadingAtPath: self.input) else {
                throw CLIError.unreadable("cannot read \(self.input)")
            }
            var logger = Logger(label: "casevaultctl")
            logger.logLevel = .warning
            let summary: RestoreSummary
            do {
                summary = try RecordStore.restore(
                    read: { count throws(CaseVaultError) in
                        do {
                            return [UInt8](try handle.read(upToCount: count) ?? Data())
                        } catch {
                            throw CaseVaultError(.storageFailure, "cannot read the backup file: \(error)")
                        }
                    },
                    into: store,
                    passphrase: passphrase,
                    keys: BackupKeyFile(path: configuration.backupKeyFile(relativeTo: base)),
                    ledger: ledger,
                    ledgerCopy: readsCopy ? copy : nil,
                    logger: logger
                )
            } catch {
                var message = "\(error.code.rawValue): \(error.message)"
                if error.field == "backup.ledger_file" {
                    message += "; move it aside and give --ledger FILE or --live-data DIR, or --without-ledger"
                }
                throw CLIError.problem(message)
            }
            var document: [String: Any] = [
                "backup_id": summary.backupID, "records": summary.records, "attachments": summary.attachments,
                "reshredded": summary.reshredded, "ledger_added": summary.ledgerAdded,
                "data_directory": store.dataDirectory.path,
            ]
            if let entries = summary.copyEntries {
                document["ledger_copy"] = ["file": copy.path, "entries": entries]
            }
            let copyRead =
                summary.copyEntries.map { "\(copy.path) (entries: \($0))" }
                ?? (self.withoutLedger ? "not read (--without-ledger)" : "none at \(copy.path)")
            output(
                json: self.json,
                document: document,
                rows: [
                    ("backup", summary.backupID), ("taken", Timestamp.rfc3339(summary.createdAt)),
                    ("records", "\(summary.records)"),
                    ("attachments", "\(summary.attachments)"), ("ledger copy", copyRead),
                    ("shredded again", "\(summary.reshredded) (from the ledger)"),
                    ("ledger kept", "\(summary.ledgerAdded) entries added to the restored ledger"),
                    ("restored into", store.dataDirectory.path),
                ]
            )
        }

        /// The entries of a ledger that `casevaultctl ledger --out` wrote. Each needs its record id; a case id,
        /// type or time that is missing or unreadable is left unknown.
        static func exportedLedger(_ file: String) throws(CLIError) -> [ShredLedgerEntry] {
            guard let data = FileManager.default.contents(atPath: file),
                let document = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                let records = document["records"] as? [[String: Any]]
            else { throw CLIError.unreadable("cannot read the ledger \(file) (casevaultctl ledger --out writes one)") }
            let times = ISO8601DateFormatter()
            times.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            var entries: [ShredLedgerEntry] = []
            for record in records {
                guard let text = record["record_id"] as? String, let id = try? RecordID(text) else {
                    throw CLIError.unreadable("the ledger \(file) holds an entry that is not a record id")
                }
                entries.append(
                    ShredLedgerEntry(
                        recordID: id,
                        caseID: (record["case_id"] as? String).flatMap { try? CaseID($0) },
                        type: (record["type"] as? String).flatMap(RecordType.init(rawValue:)),
                        shreddedAt: (record["shredded_at"] as? String).flatMap {
                            JSONValue.isTimestamp($0) ? times.date(from: $0) : nil
                        }.map {
                            Int64(($0.timeIntervalSince1970 * 1000).rounded())
                        }
                    )
                )
            }
            return entries
        }
    }
}

import ArgumentParser
import CaseVaultConfiguration
import CaseVaultCore
import CaseVaultCrypto
import CaseVaultFiles
import CaseVaultStore
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Restore a backup into an empty data directory, without the daemon, re-applying the shred ledger.",
            discussion: """
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
        @Option(help: "The empty (or missing) data directory to restore into.") var dataDir: String
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
        }

        func run() throws {
            do {
                try self.restore()
            } catch {
                FileHandle.standardError.write(Data("casevaultctl: \(error.message)\n".utf8))
                throw ExitCode(error.exitCode)
            }
        }

        private func restore() throws(CLIError) {
            let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
            let configuration: DaemonConfiguration
            var store: StoreConfiguration
            do {
                configuration = try DaemonConfiguration.load(path: self.config)
                store = try configuration.storeConfiguration(relativeTo: base)
            } catch {
                throw CLIError.configuration(error.message)
            }
            store.dataDirectory = URL(fileURLWithPath: self.dataDir, relativeTo: base).standardizedFileURL
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

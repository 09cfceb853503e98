import ArgumentParser
import CaseVaultConfiguration
import CaseVaultCore
import CaseVaultCrypto
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    /// Synchronous: run on the main thread, whose blocking calls leave the cooperative pool to the
    /// database's tasks.
    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Write a vault that no daemon serves as a file for the other backend: a data directory's for a daemon on PostgreSQL, a database's for restore --data-dir.",
            discussion: """
                Moves a vault from a data directory to PostgreSQL, offline: stop the daemon, run this on its host \
                with its configuration (--config: the data directory, the root key's source, [backup] key_file), \
                then start a daemon of the same root key on an empty database, with that backup key file and the old \
                data directory's audit/ moved into its own data directory (the audit chain goes on there), and run \
                casevaultctl restore --in FILE --without-ledger through it (the file carries the ledger). The file holds everything: the roster, cases, every \
                live record (session notes included), attachments, holds, the shred ledger and the certificates, \
                sealed under a key of its own kept in the backup key file, which the backup retention destroys as a \
                backup's. Refused while a daemon serves the data directory. The file is written as FILE.partial \
                and renamed when complete. \
                With a --config that keeps the vault in PostgreSQL, moves it back: every daemon of the vault \
                stopped, run this on a daemon's host with its configuration (its root key, its erase epoch key file, \
                the database); the file holds what a backup holds and the session notes, and casevaultctl restore \
                --in FILE --without-ledger --data-dir EMPTY makes the data directory (move the daemon's audit/ into it). \
                Exit 0 written, 1 refused (a daemon serves the directory, or the vault could not be read), 64 bad \
                usage, 66 no vault in the data directory, 73 the file cannot be written, 78 bad configuration.
                """
        )

        @Option(help: "The file to write (must not exist).") var out: String
        @Option(
            help:
                "The data directory of the vault to move (a vault kept there). Default: store.data_directory of --config."
        )
        var dataDir: String?
        @Flag(help: "Read the passphrase from standard input.") var stdin = false
        @Option(help: "The daemon's configuration (data directory, key source, backup key file).") var config: String =
            "Config/casevault.toml"
        @Flag(help: "Print one JSON document.") var json = false

        func run() throws {
            do {
                try self.migrate()
            } catch {
                FileHandle.standardError.write(Data("casevaultctl: \(error.message)\n".utf8))
                throw ExitCode(error.exitCode)
            }
        }

        private func migrate() throws(CLIError) {
            let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
            let configuration: DaemonConfiguration
            var store: StoreConfiguration
            do {
                configuration = try DaemonConfiguration.load(path: self.config)
                store = try configuration.storeConfiguration(relativeTo: base)
            } catch {
                throw CLIError.configuration(error.message)
            }
            let database: Bool
            do {
                database = try configuration.databaseSettings(relativeTo: base) != nil
            } catch {
                throw CLIError.configuration(error.message)
            }
            if let dataDir = self.dataDir {
                guard !database else {
                    throw CLIError.usage(
                        "--data-dir names a vault kept in a data directory; --config keeps this one in PostgreSQL")
                }
                store.dataDirectory = URL(fileURLWithPath: dataDir, relativeTo: base).standardizedFileURL
            }
            guard !FileManager.default.fileExists(atPath: self.out) else {
                throw CLIError.usage("\(self.out) exists; name a new file")
            }
            if database {
                try self.migrateDatabase(configuration, base: base)
                return
            }
            var passphrase: SecureBytes?
            if store.keySource == .passphrase {
                passphrase = try Secret.passphrase(stdin: self.stdin)
            }
            var logger = Logger(label: "casevaultctl")
            logger.logLevel = .warning
            let summary = try self.writing { write throws(CaseVaultError) in
                try RecordStore.writeMigration(
                    of: store, passphrase: passphrase, id: Hex.encode(Random.bytes(count: 16)),
                    keys: BackupKeyFile(path: configuration.backupKeyFile(relativeTo: base)), logger: logger,
                    write: write)
            }
            output(
                json: self.json,
                document: [
                    "migration_id": summary.fileID, "file": self.out, "cases": summary.cases,
                    "records": summary.records,
                    "session_notes": summary.sessionNotes, "attachments": summary.attachments, "holds": summary.holds,
                    "shreds": summary.shreds, "certificates": summary.certificates,
                ],
                rows: [
                    ("migration", summary.fileID), ("file", self.out), ("cases", "\(summary.cases)"),
                    ("records", "\(summary.records) (\(summary.sessionNotes) session notes)"),
                    ("attachments", "\(summary.attachments)"), ("holds", "\(summary.holds)"),
                    ("shreds", "\(summary.shreds) (in the ledger)"), ("certificates", "\(summary.certificates)"),
                ])
        }

        /// Writes the vault kept in PostgreSQL (the storage blocks this thread while the database's tasks run).
        private func migrateDatabase(_ configuration: DaemonConfiguration, base: URL) throws(CLIError) {
            let credentials = ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"]
            let summary = try self.writing { write throws(CaseVaultError) in
                try configuration.writeDatabaseMigration(
                    base: base, credentials: credentials, id: Hex.encode(Random.bytes(count: 16)), write: write)
            }
            output(
                json: self.json,
                document: [
                    "migration_id": summary.backupID, "file": self.out, "records": summary.records,
                    "attachments": summary.attachments,
                ],
                rows: [
                    ("migration", summary.backupID), ("file", self.out), ("records", "\(summary.records)"),
                    ("attachments", "\(summary.attachments)"),
                ])
        }

        /// Runs `body` with a function that writes to `--out` as `FILE.partial`, which is flushed and renamed
        /// once `body` is done, and removed whatever stops it short. What the vault lacks to be read on this
        /// host (`not-found`: no vault; `invalid-configuration`: the root key, the epoch key file, the key
        /// source) exits 66 and 78; any other refusal, 1.
        private func writing<T>(
            _ body: (_ write: (_ bytes: [UInt8]) throws(CaseVaultError) -> Void) throws(CaseVaultError) -> T
        ) throws(CLIError) -> T {
            let partial = self.out + ".partial"
            unlink(partial)
            let descriptor = open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else {
                throw CLIError.unwritable("cannot create \(partial): \(String(cString: strerror(errno)))")
            }
            let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
            var kept = false
            defer { if !kept { unlink(partial) } }
            let result: T
            do {
                result = try body { bytes throws(CaseVaultError) in
                    do {
                        try handle.write(contentsOf: bytes)
                    } catch {
                        throw CaseVaultError(.storageFailure, "cannot write \(partial): \(error)")
                    }
                }
            } catch {
                switch error.code {
                case .notFound: throw CLIError.unreadable(error.message)
                case .invalidConfiguration: throw CLIError.configuration(error.message)
                default: throw CLIError.problem("\(error.code.rawValue): \(error.message)")
                }
            }
            guard fsync(descriptor) == 0 else {
                throw CLIError.unwritable("cannot flush \(partial): \(String(cString: strerror(errno)))")
            }
            guard rename(partial, self.out) == 0 else {
                throw CLIError.unwritable(
                    "cannot rename \(partial) to \(self.out): \(String(cString: strerror(errno)))")
            }
            kept = true
            return result
        }
    }
}

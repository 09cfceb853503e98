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
                Once the file is written, the place the vault was moved from is marked as moved (a file named moved \
                in the data directory, or a mark in the database), and its daemons refuse to start there: served in \
                two places, the copies would drift apart, and a shred in one would leave the record readable in the \
                other. If the move is abandoned, --cancel with the same configuration removes the mark. \
                Exit 0 written (or cancelled), 1 refused (a daemon serves the vault, the vault could not be read, or \
                there is no move to cancel), 64 bad usage, 66 no vault in the data directory, 73 the file cannot be \
                written, 78 bad configuration.
                """
        )

        @Option(help: "The file to write (must not exist).") var out: String?
        @Flag(
            help:
                "Cancel a move instead: remove the mark that keeps daemons from serving the vault where it was moved from."
        )
        var cancel = false
        @Option(
            help:
                "The data directory of the vault to move (a vault kept there). Default: store.data_directory of --config."
        )
        var dataDir: String?
        @Flag(help: "Read the passphrase from standard input.") var stdin = false
        @Option(help: "The daemon's configuration (data directory, key source, backup key file).") var config: String =
            "Config/casevault.toml"
        @Flag(help: "Print one JSON document.") var json = false

        func validate() throws {
            guard (self.out == nil) == self.cancel else {
                throw ValidationError("give either --out FILE to move the vault or --cancel to cancel a move")
            }
        }

        func run() throws {
            do {
                try self.cancel ? self.cancelMove() : self.migrate()
            } catch {
                FileHandle.standardError.write(Data("casevaultctl: \(error.message)\n".utf8))
                throw ExitCode(error.exitCode)
            }
        }

        private func migrate() throws(CLIError) {
            let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
            let (configuration, store, database) = try self.vault(base: base)
            let out = self.out ?? ""
            guard !FileManager.default.fileExists(atPath: out) else {
                throw CLIError.usage("\(out) exists; name a new file")
            }
            if database {
                try self.migrateDatabase(configuration, base: base, out: out)
                return
            }
            var passphrase: SecureBytes?
            if store.keySource == .passphrase {
                passphrase = try Secret.passphrase(stdin: self.stdin)
            }
            var logger = Logger(label: "casevaultctl")
            logger.logLevel = .warning
            let summary = try self.writing(out) { write, finish throws(CaseVaultError) in
                try RecordStore.writeMigration(
                    of: store, passphrase: passphrase, id: Hex.encode(Random.bytes(count: 16)),
                    keys: BackupKeyFile(path: configuration.backupKeyFile(relativeTo: base)), logger: logger,
                    write: write, finish: finish)
            }
            output(
                json: self.json,
                document: [
                    "migration_id": summary.fileID, "file": out, "cases": summary.cases,
                    "records": summary.records,
                    "session_notes": summary.sessionNotes, "attachments": summary.attachments, "holds": summary.holds,
                    "shreds": summary.shreds, "certificates": summary.certificates,
                ],
                rows: [
                    ("migration", summary.fileID), ("file", out), ("cases", "\(summary.cases)"),
                    ("records", "\(summary.records) (\(summary.sessionNotes) session notes)"),
                    ("attachments", "\(summary.attachments)"), ("holds", "\(summary.holds)"),
                    ("shreds", "\(summary.shreds) (in the ledger)"), ("certificates", "\(summary.certificates)"),
                ])
        }

        /// Writes the vault kept in PostgreSQL (the storage blocks this thread while the database's tasks run).
        private func migrateDatabase(_ configuration: DaemonConfiguration, base: URL, out: String) throws(CLIError) {
            let credentials = ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"]
            let summary = try self.writing(out) { write, finish throws(CaseVaultError) in
                try configuration.writeDatabaseMigration(
                    base: base, credentials: credentials, id: Hex.encode(Random.bytes(count: 16)), write: write,
                    finish: finish)
            }
            output(
                json: self.json,
                document: [
                    "migration_id": summary.backupID, "file": out, "records": summary.records,
                    "attachments": summary.attachments,
                ],
                rows: [
                    ("migration", summary.backupID), ("file", out), ("records", "\(summary.records)"),
                    ("attachments", "\(summary.attachments)"),
                ])
        }

        /// The configuration of `--config`, the store it names (its data directory replaced by `--data-dir`),
        /// and whether it keeps the vault in PostgreSQL, where `--data-dir` is bad usage.
        private func vault(base: URL) throws(CLIError) -> (DaemonConfiguration, StoreConfiguration, Bool) {
            let configuration: DaemonConfiguration
            var store: StoreConfiguration
            let database: Bool
            do {
                configuration = try DaemonConfiguration.load(path: self.config)
                store = try configuration.storeConfiguration(relativeTo: base)
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
            return (configuration, store, database)
        }

        /// What the vault lacks to be read on this host (`not-found`: no vault; `invalid-configuration`: the
        /// root key, the epoch key file, the key source) exits 66 and 78; any other refusal, 1.
        private static func refusal(_ error: CaseVaultError) -> CLIError {
            switch error.code {
            case .notFound: CLIError.unreadable(error.message)
            case .invalidConfiguration: CLIError.configuration(error.message)
            default: CLIError.problem("\(error.code.rawValue): \(error.message)")
            }
        }

        /// Runs `body` with a function that writes to `out` as `FILE.partial`, and one that flushes it and
        /// renames it `out` (exit 73 when either fails), which `body` calls once the file is whole and before
        /// it marks the vault as moved; the file is removed whatever stops it short, the mark included. Any
        /// other refusal exits as `refusal` says.
        private func writing<T>(
            _ out: String,
            _ body: (
                _ write: (_ bytes: [UInt8]) throws(CaseVaultError) -> Void,
                _ finish: () throws(CaseVaultError) -> Void
            ) throws(CaseVaultError) -> T
        ) throws(CLIError) -> T {
            let partial = out + ".partial"
            unlink(partial)
            let descriptor = open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else {
                throw CLIError.unwritable("cannot create \(partial): \(String(cString: strerror(errno)))")
            }
            let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
            var (renamed, kept) = (false, false)
            var unwritable: CLIError?
            defer {
                if !kept { unlink(renamed ? out : partial) }
            }
            let result: T
            do {
                result = try body { bytes throws(CaseVaultError) in
                    do {
                        try handle.write(contentsOf: bytes)
                    } catch {
                        unwritable = .unwritable("cannot write \(partial): \(error)")
                        throw CaseVaultError(.storageFailure, "cannot write \(partial)")
                    }
                } _: { () throws(CaseVaultError) in
                    guard fsync(descriptor) == 0 else {
                        unwritable = .unwritable("cannot flush \(partial): \(String(cString: strerror(errno)))")
                        throw CaseVaultError(.storageFailure, "cannot flush \(partial)")
                    }
                    guard rename(partial, out) == 0 else {
                        unwritable = .unwritable(
                            "cannot rename \(partial) to \(out): \(String(cString: strerror(errno)))")
                        throw CaseVaultError(.storageFailure, "cannot rename \(partial)")
                    }
                    renamed = true
                    // The rename itself durable, before the vault is marked as moved.
                    do throws(CaseVaultError) {
                        let directory = DataDirectory.parent(of: out)
                        try DataDirectory.flushDirectory(directory.isEmpty ? "." : directory)
                    } catch {
                        unwritable = .unwritable("cannot flush the directory of \(out): \(error.message)")
                        throw error
                    }
                }
            } catch {
                throw unwritable ?? Self.refusal(error)
            }
            guard renamed else { throw CLIError.problem("the file was never completed") }
            kept = true
            return result
        }

        /// `--cancel`: removes the mark of a move from where the vault was moved from (the data directory, or
        /// the database), so that its daemons serve it there again.
        private func cancelMove() throws(CLIError) {
            let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
            let (configuration, store, database) = try self.vault(base: base)
            let cancelled: Bool
            do {
                cancelled =
                    database
                    ? try configuration.cancelDatabaseMove(
                        base: base, credentials: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"])
                    : try RecordStore.cancelMove(store)
            } catch {
                throw Self.refusal(error)
            }
            guard cancelled else {
                throw CLIError.problem("nothing to cancel: no move of this vault is marked here")
            }
            output(
                json: self.json, document: ["cancelled": true],
                rows: [("cancelled", "the move; the vault's daemons serve it here again")])
        }
    }
}

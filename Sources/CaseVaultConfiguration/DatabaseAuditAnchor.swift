internal import CCaseVaultShims
package import CaseVaultCore
internal import CaseVaultPostgres
package import CaseVaultSealing
package import CaseVaultStore
package import Foundation
internal import Logging

extension DaemonConfiguration.DatabaseSettings {
    /// The database password this configuration names, read as the daemon reads it (`credentials` is
    /// `$CREDENTIALS_DIRECTORY`, for a systemd credential); `nil` when none is configured. Core dumps are
    /// disabled first: the password is held in this process from here.
    package func readPassword(credentials: String?) throws(CaseVaultError) -> String? {
        _ = casevault_disable_core_dumps()
        switch self.password {
        case .none: return nil
        case .file(let path): return try PostgresPassword.read(file: path)
        case .credential(let name): return try PostgresPassword.read(credential: name, directory: credentials)
        }
    }
}

extension DaemonConfiguration {
    /// The audit anchor in the vault's database of the daemon named `daemon` (`nil`: this configuration's
    /// `[storage] daemon_name`), itself `nil` when that daemon has none, its MAC checked under `signer` when
    /// given: what `casevaultctl audit verify --offline` compares a copy of that daemon's log with, from any
    /// host that reaches the database. `invalid-configuration` for a vault kept in a data directory or a
    /// name that is no daemon's; `storage-unavailable` when no server answers as the primary.
    package func databaseAuditAnchor(daemon: String?, base: URL, credentials: String?, signer: AuditSigner?)
        async throws(CaseVaultError) -> AuditAnchor?
    {
        guard let settings = try self.databaseSettings(relativeTo: base) else {
            throw CaseVaultError(
                .invalidConfiguration, "the configuration keeps the vault in a data directory, not in PostgreSQL",
                field: "storage.backend")
        }
        guard let name = try daemon.map({ text throws(CaseVaultError) in try DaemonName(text) }) ?? settings.daemonName
        else {
            throw CaseVaultError(
                .invalidConfiguration, "name the daemon whose log this is (--daemon)", field: "storage.daemon_name")
        }
        var logger = Logger(label: "casevaultctl")
        logger.logLevel = .critical
        let locator = PrimaryLocator(
            location: settings.location, password: try settings.readPassword(credentials: credentials), logger: logger)
        let connection = try await locator.connect().connection
        do {
            let anchor = try await PostgresAuditAnchor.read(name, signer: signer, on: connection, logger: logger)
            try? await connection.close()
            return anchor
        } catch {
            try? await connection.close()
            throw (error as? CaseVaultError)
                ?? CaseVaultError(.storageUnavailable, "the database could not be read (\(type(of: error)))")
        }
    }
}

extension DaemonConfiguration {
    /// Writes the vault this configuration keeps in PostgreSQL as a file a data directory is restored from
    /// (`PostgresStorage.writeMigration`: `casevaultctl migrate`), while no daemon of the vault serves: with
    /// this daemon's root key and its erase epoch key file (`epoch.keys` in its data directory), whose keys
    /// open the records' keys as they are now. The file's key is kept in the backup key file. Blocks its
    /// thread. `invalid-configuration` for a vault kept in a data directory, or with the passphrase key
    /// source, which the vault on PostgreSQL is not served with.
    package func writeDatabaseMigration(
        base: URL, credentials: String?, id: String, write: (_ bytes: [UInt8]) throws(CaseVaultError) -> Void,
        finish: () throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> BackupSummary {
        let storage = try self.storageForMove(base: base, credentials: credentials)
        defer { _ = storage.close() }
        return try storage.writeMigration(
            id: id, keys: BackupKeyFile(path: self.backupKeyFile(relativeTo: base)),
            retentionDays: self.backup.retentionDays ?? 35, write: write, finish: finish)
    }

    /// Removes the mark a move out of the database left (`casevaultctl migrate --cancel`), with every daemon
    /// of the vault stopped, on a daemon's host with its configuration; false when the vault bears none.
    package func cancelDatabaseMove(base: URL, credentials: String?) throws(CaseVaultError) -> Bool {
        let storage = try self.storageForMove(base: base, credentials: credentials)
        defer { _ = storage.close() }
        return try storage.cancelMove()
    }

    /// The vault in PostgreSQL as this daemon's configuration names it, with its root key and its erase
    /// epoch key file, for a move while no daemon serves.
    private func storageForMove(base: URL, credentials: String?) throws(CaseVaultError) -> PostgresStorage {
        guard let settings = try self.databaseSettings(relativeTo: base) else {
            throw CaseVaultError(
                .invalidConfiguration, "the configuration keeps the vault in a data directory, not in PostgreSQL",
                field: "storage.backend")
        }
        let store = try self.storeConfiguration(relativeTo: base)
        let rootKey = try store.databaseRootKey(creating: false)
        // Wiped when the storage is made: what the vault on PostgreSQL uses of it (the subkeys, the check
        // value, the epoch key file's key) is derived from it at init.
        defer { rootKey.wipe() }
        let epochKeys = store.dataDirectory.path + "/epoch.keys"
        guard FileManager.default.fileExists(atPath: epochKeys) else {
            throw CaseVaultError(
                .invalidConfiguration,
                "no erase epoch key file at \(epochKeys): run this on a daemon's host, with its configuration",
                field: "store.data_directory")
        }
        var logger = Logger(label: "casevaultctl")
        logger.logLevel = .warning
        let storage = PostgresStorage(
            sealing: try SealingServices(rootKey: rootKey),
            locator: PrimaryLocator(
                location: settings.location, password: try settings.readPassword(credentials: credentials),
                logger: logger),
            epochKeys: try EpochKeyFile(path: epochKeys, rootKey: rootKey), eraseWindow: settings.eraseWindowSeconds,
            maxContentBytes: store.maxContentBytes, retention: store.retention, sweepBatch: store.sweepBatch,
            logger: logger, clock: store.clock)
        return storage
    }
}

extension StoreConfiguration {
    /// The root key of a daemon of a vault in PostgreSQL, from its source: a file (made on first use when
    /// `creating`, as the first daemon of a vault does; otherwise `invalid-configuration` when missing) or a
    /// systemd credential. `invalid-configuration` for the passphrase source, which the vault on PostgreSQL
    /// is not served with yet.
    package func databaseRootKey(creating: Bool) throws(CaseVaultError) -> RootKey {
        switch self.keySource {
        case .file:
            guard creating || FileManager.default.fileExists(atPath: self.rootKeyFile.path) else {
                throw CaseVaultError(
                    .invalidConfiguration, "no root key at \(self.rootKeyFile.path)", field: "store.root_key_file")
            }
            return try RootKeyFile.loadOrCreate(path: self.rootKeyFile.path, dataDirectory: self.dataDirectory.path)
        case .systemdCredential(let name, let directory):
            return try RootKeyFile.loadCredential(name: name, directory: directory)
        case .passphrase:
            throw CaseVaultError(
                .invalidConfiguration,
                "storage.backend = \"postgresql\" is not served with keys.source = \"passphrase\" yet",
                field: "keys.source")
        }
    }
}

internal import CCaseVaultShims
package import CaseVaultCore
internal import CaseVaultPostgres
internal import CaseVaultSealing
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

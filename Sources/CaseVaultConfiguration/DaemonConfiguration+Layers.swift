internal import CaseVaultAudit
public import CaseVaultCore
public import CaseVaultCrypto
package import CaseVaultStore
public import Foundation
internal import TOMLKit

// What each layer is given: the store's, the server's and the roles' settings, paths resolved.
extension DaemonConfiguration {
    /// The store's settings, with relative paths resolved against `base`.
    package func storeConfiguration(relativeTo base: URL) throws(CaseVaultError) -> StoreConfiguration {
        var configuration = StoreConfiguration(
            dataDirectory: URL(fileURLWithPath: self.store.dataDirectory, relativeTo: base).standardizedFileURL,
            rootKeyFile: URL(fileURLWithPath: self.store.rootKeyFile, relativeTo: base).standardizedFileURL,
            maxContentBytes: self.store.maxContentBytes
        )
        configuration.retention = try self.retentionSchedule()
        if self.keys.source == "systemd-credential" {
            configuration.keySource = .systemdCredential(
                name: self.keys.credential ?? Keys.defaultCredential,
                directory: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"]
            )
        }
        if self.keys.source == "passphrase" {
            configuration.keySource = .passphrase
        }
        configuration.sweepBatch = self.retention.sweepBatch ?? configuration.sweepBatch
        configuration.shredLedgerCopy = URL(fileURLWithPath: self.shredLedgerFile(relativeTo: base))
        if let file = self.testing.clockFile {
            configuration.clock = Self.fileClock(URL(fileURLWithPath: file, relativeTo: base).standardizedFileURL.path)
        }
        return configuration
    }

    /// Test-only: a clock that reads the time from a file (milliseconds since the Unix epoch), so that the
    /// tests of a running daemon move its time without sleeping. It stops the daemon rather than guess when
    /// the file is missing or malformed: a wrong time would dispose records early.
    static func fileClock(_ path: String) -> @Sendable () -> Int64 {
        { () -> Int64 in
            guard let data = FileManager.default.contents(atPath: path),
                let time = Int64(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            else {
                fatalError("testing.clock_file \(path) must hold milliseconds since the Unix epoch")
            }
            return time
        }
    }

    /// The backup key file: `[backup] key_file`, or `backup.keys` beside the root key file.
    public func backupKeyFile(relativeTo base: URL) -> String {
        let rootKey = URL(fileURLWithPath: self.store.rootKeyFile, relativeTo: base).standardizedFileURL
        if let file = self.backup.keyFile {
            return URL(fileURLWithPath: file, relativeTo: base).standardizedFileURL.path
        }
        return rootKey.deletingLastPathComponent().appendingPathComponent("backup.keys").path
    }

    /// The shred ledger's copy: `[backup] ledger_file`, or `shred.ledger` beside the backup key file.
    public func shredLedgerFile(relativeTo base: URL) -> String {
        if let file = self.backup.ledgerFile {
            return URL(fileURLWithPath: file, relativeTo: base).standardizedFileURL.path
        }
        return URL(fileURLWithPath: self.backupKeyFile(relativeTo: base)).deletingLastPathComponent()
            .appendingPathComponent("shred.ledger").path
    }

    /// Argon2id's cost for a new wrapped root key (`[keys]`), libsodium's "moderate" by default.
    public func passphraseLimits() throws(CaseVaultError) -> PasswordHash.Limits {
        PasswordHash.Limits(
            operations: UInt64(self.keys.argon2Operations ?? Int(PasswordHash.Limits.moderate.operations)),
            memoryBytes: (self.keys.argon2MemoryMiB ?? (PasswordHash.Limits.moderate.memoryBytes >> 20)) << 20
        )
    }

    /// The retention schedule: the standard one with `[retention]`'s rules over it.
    public func retentionSchedule() throws(CaseVaultError) -> RetentionSchedule {
        try RetentionSchedule.standard(
            overriddenBy: self.retention.overrides, holdsKeepSessionNotes: self.retention.holdsKeepSessionNotes ?? false
        )
    }

    /// The `[roles]` table with every principal resolved to a uid or gid.
    public func roleMap() throws(CaseVaultError) -> RoleMap {
        try Principals.roleMap(self.roles)
    }

    /// The server's settings, with a relative socket path resolved against `base` and the socket group
    /// resolved to a gid.
    public func serverConfiguration(relativeTo base: URL) throws(CaseVaultError) -> ServerConfiguration {
        var group: UInt32?
        if let name = self.server.socketGroup {
            guard case .gid(let gid) = try Principals.resolve(name, role: "server.socket_group") else {
                throw CaseVaultError(
                    .invalidConfiguration, "server.socket_group must be gid:N or group:NAME",
                    field: "server.socket_group"
                )
            }
            group = gid
        }
        let defaults = ServerConfiguration(socketPath: "")
        return ServerConfiguration(
            socketPath: URL(fileURLWithPath: self.server.socketPath, relativeTo: base).standardizedFileURL.path,
            maxBodyBytes: self.server.maxBodyBytes,
            maxAttachmentBytes: self.server.maxAttachmentBytes ?? defaults.maxAttachmentBytes,
            maxJSONDepth: self.server.maxJSONDepth ?? defaults.maxJSONDepth,
            maxHeaderBytes: self.server.maxHeaderBytes ?? defaults.maxHeaderBytes,
            readTimeoutSeconds: self.server.readTimeoutSeconds ?? defaults.readTimeoutSeconds,
            maxConnections: self.server.maxConnections ?? defaults.maxConnections,
            maxConnectionsPerUser: self.server.maxConnectionsPerUser
                ?? ServerConfiguration.defaultConnectionsPerUser(self.server.maxConnections ?? defaults.maxConnections),
            offices: self.offices,
            socketGroup: group,
            statisticsK: self.statistics.k ?? defaults.statisticsK,
            backupKeyFile: self.backupKeyFile(relativeTo: base),
            backupRetentionDays: self.backup.retentionDays ?? 35,
            readAuditWindow: (self.audit.durableReads ?? false)
                ? nil : .milliseconds(self.audit.readFlushMs ?? ServerConfiguration.defaultReadFlushMilliseconds)
        )
    }
}

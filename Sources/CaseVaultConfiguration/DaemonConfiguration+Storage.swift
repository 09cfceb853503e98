public import CaseVaultCore
package import CaseVaultPostgres
package import CaseVaultSealing
package import Foundation

// `[storage]`: which backend keeps the records, and for PostgreSQL where it is and how the daemon proves
// who it is to it.
extension DaemonConfiguration {
    /// The PostgreSQL side of `[storage]`, checked.
    package struct DatabaseSettings: Sendable {
        package enum Password: Sendable, Equatable {
            /// No password: the server trusts the socket's peer, or the role needs none.
            case none
            case file(String)
            case credential(String)
        }

        package var location: PostgresLocation
        package var password: Password
        /// How long after a shred its residue is unreadable to anyone, in seconds.
        package var eraseWindowSeconds: Int64
        /// This daemon's name among the vault's daemons; the daemon refuses to start without one.
        package var daemonName: DaemonName?
    }

    /// The database settings for `backend = "postgresql"`, relative paths resolved against `base`; nil for
    /// the local backend.
    package func databaseSettings(relativeTo base: URL) throws(CaseVaultError) -> DatabaseSettings? {
        guard self.storage.backend == .postgresql else { return nil }
        guard let connection = self.storage.connection, !connection.isEmpty else {
            throw CaseVaultError(
                .invalidConfiguration, "storage.backend = \"postgresql\" needs storage.connection",
                field: "storage.connection")
        }
        let location: PostgresLocation
        do {
            location = try PostgresLocation(parsing: connection)
        } catch {
            throw CaseVaultError(error.code, "storage.connection: \(error.message)", field: "storage.connection")
        }
        let password: DatabaseSettings.Password
        switch (self.storage.passwordFile, self.storage.passwordCredential) {
        case (nil, nil):
            password = .none
        case (let file?, nil):
            guard !file.isEmpty else {
                throw CaseVaultError(
                    .invalidConfiguration, "storage.password_file must not be empty", field: "storage.password_file")
            }
            password = .file(URL(fileURLWithPath: file, relativeTo: base).standardizedFileURL.path)
        case (nil, let name?):
            guard !name.isEmpty, !name.contains("/"), !name.hasPrefix(".") else {
                throw CaseVaultError(
                    .invalidConfiguration, "storage.password_credential must be a plain file name",
                    field: "storage.password_credential")
            }
            password = .credential(name)
        case (.some, .some):
            throw CaseVaultError(
                .invalidConfiguration, "storage.password_file and storage.password_credential exclude each other",
                field: "storage.password_credential")
        }
        let name: DaemonName?
        do {
            name = try self.storage.daemonName.map { text throws(CaseVaultError) in try DaemonName(text) }
        } catch {
            throw CaseVaultError(
                .invalidConfiguration,
                "storage.daemon_name must be 1 to 64 of a-z, 0-9, '.', '_' and '-', and differ from every other daemon's of the vault",
                field: "storage.daemon_name")
        }
        return DatabaseSettings(
            location: location, password: password,
            eraseWindowSeconds: try self.storage.eraseWindow.map(Self.eraseWindow) ?? Storage.defaultEraseWindow,
            daemonName: name)
    }

    /// `[storage]` checked as far as reading it goes: the PostgreSQL keys only with that backend.
    func validateStorage() throws(CaseVaultError) {
        guard self.storage.backend == .postgresql else {
            let set = [
                ("connection", self.storage.connection), ("password_file", self.storage.passwordFile),
                ("password_credential", self.storage.passwordCredential), ("erase_window", self.storage.eraseWindow),
                ("daemon_name", self.storage.daemonName),
            ].filter { $0.1 != nil }.map(\.0)
            if let key = set.first {
                throw CaseVaultError(
                    .invalidConfiguration, "storage.\(key) applies only to storage.backend = \"postgresql\"",
                    field: "storage.\(key)")
            }
            return
        }
        _ = try self.databaseSettings(relativeTo: URL(fileURLWithPath: "/"))
    }

    /// `"<number> hours|days"` (or `hour`, `day`) in seconds, within `Storage.eraseWindows`.
    static func eraseWindow(_ text: String) throws(CaseVaultError) -> Int64 {
        let words = text.split(separator: " ")
        let units: [String: Int64] = ["hour": 3600, "hours": 3600, "day": 86400, "days": 86400]
        guard words.count == 2, let number = Int64(words[0]), let unit = units[String(words[1])],
            number > 0, number <= Storage.eraseWindows.upperBound / unit,
            Storage.eraseWindows.contains(number * unit)
        else {
            throw CaseVaultError(
                .invalidConfiguration,
                "storage.erase_window reads \"<number> hours|days\", from 1 hour to 30 days (default \"24 hours\")",
                field: "storage.erase_window")
        }
        return number * unit
    }

    /// Refuses what this build's daemon cannot serve: a vault in PostgreSQL whose root key is wrapped under a
    /// passphrase (its daemons would each wait for an unseal; not built yet).
    public func refuseUnservedBackend() throws(CaseVaultError) {
        guard self.storage.backend != .postgresql || self.keys.source != "passphrase" else {
            throw CaseVaultError(
                .invalidConfiguration,
                "storage.backend = \"postgresql\" is not served with keys.source = \"passphrase\" yet: give the root key as a file or a systemd credential",
                field: "keys.source")
        }
    }
}

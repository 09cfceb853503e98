package import CaseVaultCore
package import Logging
internal import NIOCore
internal import NIOSSL
package import PostgresNIO

/// Finds the writable primary among the servers of a `PostgresLocation`: each is tried in the order given,
/// and the first that accepts the credentials and is not in recovery (`pg_is_in_recovery()`, false on a
/// primary, true on a standby) is the one the vault writes to. After a failover the same list finds the
/// promoted standby, with no restart: whoever holds a connection to a server that went away asks again.
package struct PrimaryLocator: Sendable, CustomStringConvertible, CustomReflectable {
    package let location: PostgresLocation
    private let password: String?
    private let logger: Logger

    package init(location: PostgresLocation, password: String?, logger: Logger) {
        self.location = location
        self.password = password
        self.logger = logger
    }

    /// The servers, never the password.
    package var description: String { "PrimaryLocator(\(self.location.servers.count) servers)" }
    package var customMirror: Mirror { Mirror(self, children: ["servers": self.location.servers.count]) }

    /// What became of one server: for the error when none is writable, and for doctor.
    package enum Outcome: Sendable, Equatable {
        case primary
        case standby
        case unreachable
        case credentialsRefused
        case tlsFailed
        case refused
    }

    /// A connection to the writable primary and the server it is; `storage-failure` when no server is one,
    /// with how many servers ended which way (no server's reply and no credential).
    package func connect() async throws(CaseVaultError) -> (
        connection: PostgresConnection, server: PostgresLocation.Server
    ) {
        var outcomes: [Outcome] = []
        for (number, server) in self.location.servers.enumerated() {
            let connection: PostgresConnection
            do {
                connection = try await PostgresConnection.connect(
                    configuration: try self.configuration(server), id: number, logger: self.logger)
            } catch {
                let outcome = Self.outcome(of: error)
                outcomes.append(outcome)
                self.logger.notice(
                    "a PostgreSQL server could not be reached",
                    metadata: ["postgres.server": "\(server)", "postgres.outcome": "\(outcome)"])
                continue
            }
            do {
                let inRecovery = try await Self.isInRecovery(connection, logger: self.logger)
                if !inRecovery {
                    return (connection, server)
                }
                outcomes.append(.standby)
            } catch {
                outcomes.append(.unreachable)
            }
            try? await connection.close()
        }
        throw CaseVaultError(.storageFailure, Self.summary(outcomes))
    }

    /// The outcome of each server in turn, each on a connection of its own that is closed at once: doctor's
    /// view of the list.
    package func survey() async -> [(server: PostgresLocation.Server, outcome: Outcome)] {
        var results: [(PostgresLocation.Server, Outcome)] = []
        for (number, server) in self.location.servers.enumerated() {
            do {
                let connection = try await PostgresConnection.connect(
                    configuration: try self.configuration(server), id: number, logger: self.logger)
                let inRecovery = try? await Self.isInRecovery(connection, logger: self.logger)
                results.append((server, inRecovery.map { $0 ? .standby : .primary } ?? .unreachable))
                try? await connection.close()
            } catch {
                results.append((server, Self.outcome(of: error)))
            }
        }
        return results
    }

    static func isInRecovery(_ connection: PostgresConnection, logger: Logger) async throws -> Bool {
        let rows = try await connection.query("SELECT pg_is_in_recovery()", logger: logger)
        for try await inRecovery in rows.decode(Bool.self) {
            return inRecovery
        }
        return true
    }

    private func configuration(_ server: PostgresLocation.Server) throws -> PostgresConnection.Configuration {
        var configuration: PostgresConnection.Configuration
        switch server {
        case .socket(let directory, let port):
            configuration = PostgresConnection.Configuration(
                unixSocketPath: "\(directory)/.s.PGSQL.\(port)", username: self.location.user,
                password: self.password, database: self.location.database)
        case .tcp(let host, let port):
            // Parsing refuses a TCP server without TLS: here it is always verify-full.
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .fullVerification
            tls.minimumTLSVersion = .tlsv12
            if let path = self.location.rootCertificatePath {
                tls.trustRoots = .file(path)
            }
            configuration = PostgresConnection.Configuration(
                host: host, port: port, username: self.location.user, password: self.password,
                database: self.location.database, tls: .require(try NIOSSLContext(configuration: tls)))
        }
        configuration.options.connectTimeout = .seconds(Int64(self.location.connectTimeoutSeconds))
        return configuration
    }

    private static func outcome(of error: any Error) -> Outcome {
        // A CA file that does not load fails when the context is made; a certificate or host name that does
        // not verify fails in the handshake, inside PostgresNIO's error.
        if error is NIOSSLError || error is NIOSSLExtraError {
            return .tlsFailed
        }
        guard let error = error as? PSQLError else { return .unreachable }
        if error.underlying is NIOSSLError || error.underlying is NIOSSLExtraError {
            return .tlsFailed
        }
        switch error.code {
        case .server:
            // Class 28: invalid authorization specification (a wrong password, an unknown role, pg_hba).
            let state = error.serverInfo?[.sqlState] ?? ""
            return state.hasPrefix("28") ? .credentialsRefused : .refused
        case .sslUnsupported, .failedToAddSSLHandler, .receivedUnencryptedDataAfterSSLRequest:
            return .tlsFailed
        case .unsupportedAuthMechanism, .authMechanismRequiresPassword, .saslError:
            return .credentialsRefused
        default:
            return .unreachable
        }
    }

    static func summary(_ outcomes: [Outcome]) -> String {
        let counts: [(Outcome, String)] = [
            (.standby, "in recovery (a standby)"), (.unreachable, "unreachable"),
            (.credentialsRefused, "refused the credentials"), (.tlsFailed, "failed TLS"),
            (.refused, "refused the connection"),
        ]
        let parts = counts.compactMap { (outcome, words) -> String? in
            let count = outcomes.count { $0 == outcome }
            return count == 0 ? nil : "\(count) \(words)"
        }
        return "no writable PostgreSQL server among the \(outcomes.count) in the connection string: "
            + parts.joined(separator: ", ")
    }
}

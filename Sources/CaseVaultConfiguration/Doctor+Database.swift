internal import CaseVaultCore
internal import CaseVaultPostgres
public import Foundation
internal import Logging
internal import PostgresNIO

// doctor's checks of the database side, for `[storage] backend = "postgresql"`.
extension Doctor {
    /// The connections a daemon opens at its busiest on PostgreSQL: its awaited filings' and other awaited
    /// calls' (`PostgresStorage`), one for each thread of its blocking pool, and one each for its name, its
    /// audit anchor and its certification of erasures.
    static var databaseConnectionsPerDaemon: Int {
        PostgresStorage.awaitedLockConnections + PostgresStorage.awaitedCallConnections
            + ServerConfiguration.defaultBlockingThreads + 3
    }

    /// The database's checks: which listed server is the writable primary, then, asked of it, its version,
    /// whether a commit waits for a standby, the standbys' state, the vault's schema, the erase window,
    /// whether any daemon is behind its erase epoch, and whether the server takes the daemons' connections. None for the local backend. `credentials` is
    /// `$CREDENTIALS_DIRECTORY`, for a password kept as a systemd credential.
    public static func databaseChecks(_ configuration: DaemonConfiguration, base: URL, credentials: String?) async
        -> [Check]
    {
        let settings: DaemonConfiguration.DatabaseSettings
        do {
            guard let found = try configuration.databaseSettings(relativeTo: base) else { return [] }
            settings = found
        } catch {
            return [Check(name: "database", status: .fail, detail: error.message)]
        }
        let password: String?
        let passwordCheck: Check
        do {
            password = try settings.readPassword(credentials: credentials)
            switch settings.password {
            case .none:
                passwordCheck = Check(
                    name: "database password", status: .pass,
                    detail: "none configured: the server must accept the daemon's user without one (peer)")
            case .file(let path):
                passwordCheck = Check(name: "database password", status: .pass, detail: "read from \(path)")
            case .credential(let name):
                passwordCheck = Check(
                    name: "database password", status: .pass, detail: "read from the systemd credential \(name)")
            }
        } catch {
            return [
                Check(
                    name: "database password", status: .fail,
                    detail: error.message
                        + " (doctor reads it as the daemon does: run it as the daemon's user, and for a credential under systemd-run -p LoadCredentialEncrypted=…)"
                )
            ]
        }
        var logger = Logger(label: "casevault.doctor")
        logger.logLevel = .critical
        let locator = PrimaryLocator(location: settings.location, password: password, logger: logger)
        var checks = [passwordCheck, Self.servers(await locator.survey())]
        guard checks[1].status != .fail else { return checks }
        do {
            let (connection, _) = try await locator.connect()
            do {
                checks += try await DatabaseChecks.run(on: connection, logger: logger).map(Check.init)
                let schema = try await PostgresSchema.version(connection, logger: logger)
                checks.append(Self.schema(schema))
                checks.append(Self.eraseWindow(settings.eraseWindowSeconds))
                if schema > 0 {
                    checks.append(
                        Check(
                            try await DatabaseChecks.epochCheck(
                                on: connection, eraseWindow: settings.eraseWindowSeconds, logger: logger)))
                }
                if schema >= PostgresSchema.movedVersion {
                    checks.append(await Self.moved(on: connection, logger: logger))
                }
                checks.append(
                    Check(
                        try await DatabaseChecks.connectionsCheck(
                            on: connection, daemonsTable: schema >= PostgresSchema.daemonsVersion,
                            perDaemon: Self.databaseConnectionsPerDaemon, logger: logger)))
            } catch {
                checks.append(
                    Check(
                        name: "database", status: .fail,
                        detail: "the primary stopped answering the checks: \(String(reflecting: type(of: error)))"))
            }
            try? await connection.close()
        } catch {
            checks.append(Check(name: "database", status: .fail, detail: error.message))
        }
        return checks
    }

    /// Whether `casevaultctl migrate` moved the vault out of the database: every daemon then refuses to
    /// start on it (exit 2), and this says where it went and how to take the move back.
    static func moved(on connection: PostgresConnection, logger: Logger) async -> Check {
        do {
            try await PostgresSchema.refuseMoved(on: connection, logger: logger)
            return Check(name: "vault moved", status: .pass, detail: "no move marked the database")
        } catch let error as CaseVaultError {
            return Check(name: "vault moved", status: .fail, detail: error.message + " (casevaultd exits 2)")
        } catch {
            return Check(
                name: "vault moved", status: .fail,
                detail: "the primary stopped answering: \(String(reflecting: type(of: error)))")
        }
    }

    /// Exactly one server of the list takes writes; a second one would be a split brain.
    static func servers(_ survey: [(server: PostgresLocation.Server, outcome: PrimaryLocator.Outcome)]) -> Check {
        let name = "database servers"
        let listed = survey.map { "\($0.server) \(Self.words($0.outcome))" }.joined(separator: ", ")
        let primaries = survey.filter { $0.outcome == .primary }.count
        switch primaries {
        case 0:
            return Check(name: name, status: .fail, detail: "no server takes writes: \(listed)")
        case 1 where survey.allSatisfy({ $0.outcome == .primary || $0.outcome == .standby }):
            return Check(name: name, status: .pass, detail: listed)
        case 1:
            return Check(
                name: name, status: .warn, detail: "\(listed): a failover could not reach the servers that failed")
        default:
            return Check(
                name: name, status: .fail,
                detail:
                    "\(listed): \(primaries) servers take writes; the daemons would write to the first, the rest is lost"
            )
        }
    }

    static func words(_ outcome: PrimaryLocator.Outcome) -> String {
        switch outcome {
        case .primary: "primary"
        case .standby: "standby"
        case .unreachable: "unreachable"
        case .credentialsRefused: "refused the credentials"
        case .tlsFailed: "failed TLS"
        case .refused: "refused the connection"
        case .untrustedPeer: "held by a process of an untrusted user (requirepeer)"
        }
    }

    static func schema(_ version: Int) -> Check {
        let name = "database schema"
        let current = PostgresSchema.currentVersion
        if version == current {
            return Check(name: name, status: .pass, detail: "version \(version), this build's")
        }
        if version > current {
            return Check(
                name: name, status: .fail,
                detail:
                    "version \(version), newer than this build's \(current): run the newer casevaultctl and casevaultd")
        }
        return Check(
            name: name, status: .warn,
            detail: "version \(version), older than this build's \(current): the first daemon to start migrates it")
    }

    static func eraseWindow(_ seconds: Int64) -> Check {
        Check(
            name: "erase window", status: .pass,
            detail:
                "\(DatabaseChecks.span(seconds)): a shredded record's residue in the database, its WAL, standbys and backups is to be unreadable by the shred's time plus this, which needs an epoch turn every \(DatabaseChecks.span(seconds / 2))"
        )
    }
}

extension Doctor.Check {
    /// The database layer's check, as doctor prints it.
    init(_ check: DatabaseChecks.Check) {
        self.init(
            name: check.name, status: Doctor.Status(rawValue: check.status.rawValue) ?? .fail, detail: check.detail)
    }
}

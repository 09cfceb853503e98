internal import CCaseVaultShims
package import CaseVaultCore
package import Logging
internal import NIOCore
internal import NIOSSL
package import PostgresNIO

#if canImport(Glibc)
internal import Glibc
#endif

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
        /// A local socket held by a process of a user not trusted with the password (`trustedPeers`).
        case untrustedPeer
    }

    /// A local socket's server runs as a user not trusted with the password: nothing was sent to it.
    struct UntrustedPeer: Error {
        /// The server process's uid, when the kernel told it.
        let uid: UInt32?
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
                connection = try await self.open(server, id: number)
            } catch {
                let outcome = Self.outcome(of: error)
                outcomes.append(outcome)
                var metadata: Logger.Metadata = ["postgres.server": "\(server)", "postgres.outcome": "\(outcome)"]
                if let untrusted = error as? UntrustedPeer {
                    metadata["postgres.peer_uid"] = "\(untrusted.uid.map(String.init) ?? "unknown")"
                }
                metadata["postgres.error"] = "\(Self.errorKind(error))"
                self.logger.notice("a PostgreSQL server could not be reached", metadata: metadata)
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
                let connection = try await self.open(server, id: number)
                let inRecovery = try? await Self.isInRecovery(connection, logger: self.logger)
                results.append((server, inRecovery.map { $0 ? .standby : .primary } ?? .unreachable))
                try? await connection.close()
            } catch {
                results.append((server, Self.outcome(of: error)))
            }
        }
        return results
    }

    /// Whether the server is a standby; in the same statement, at no extra round trip, every connection's
    /// session limits, so that a session whose daemon's host died, or whose network went, ends within about
    /// 25 s rather than the kernel's minutes or hours, with its transaction and its locks: the server
    /// probes an idle session's client (after 10 s, every 5 s, three probes), gives up on data its client
    /// has not acknowledged for 25 s (`tcp_user_timeout`), and checks that the client is still there every
    /// 5 s while it runs a statement. The TCP settings do nothing over a local socket, where the server
    /// shares the daemon's host. No limit on a session idle inside a transaction: a daemon (or a test
    /// process) starved of CPU for that long would lose its transaction, and the probes already end a
    /// session whose client is gone. No statement timeout either, whatever the role or database sets: the
    /// daemon bounds its statements itself (`PostgresStorage.bounded`, 30 s), and a one-trip filing's
    /// procedure commits inside its statement, where a timeout firing while the commit waited for the
    /// synchronous standby would end that wait with a warning, the row kept locally, and let the call answer
    /// that it filed (a `COMMIT` of its own turns the timeout off first).
    static func isInRecovery(_ connection: PostgresConnection, logger: Logger) async throws -> Bool {
        let rows = try await connection.query(
            """
            SELECT pg_is_in_recovery(), set_config('tcp_user_timeout', '25000', false),
                set_config('tcp_keepalives_idle', '10', false), set_config('tcp_keepalives_interval', '5', false),
                set_config('tcp_keepalives_count', '3', false),
                set_config('client_connection_check_interval', '5s', false), set_config('statement_timeout', '0', false)
            """, logger: logger)
        for try await (inRecovery, _, _, _, _, _, _) in rows.decode(
            (Bool, String, String, String, String, String, String).self)
        {
            return inRecovery
        }
        return true
    }

    /// A connection to `server`. Over a Unix socket the password goes only to a server running as a trusted
    /// user (`trustedPeers`): before PostgresNIO connects, the socket file must belong to one, and a probe
    /// connection of our own asks the kernel which user's process holds the other end (SO_PEERCRED) and is
    /// closed with nothing sent. Without it, a local user who binds the socket first (the server stopped,
    /// in a directory others can write to, such as /tmp) would be sent the password (PostgreSQL's protocol
    /// lets a server ask for it in clear). A socket the probe found cannot be replaced in between by anyone
    /// but its owner (root, or the directory's owner) where the directory is sticky or theirs alone.
    private func open(_ server: PostgresLocation.Server, id: Int) async throws -> PostgresConnection {
        if case .socket(let directory, _) = server {
            let trusted = try Self.trustedPeers(directory: directory, requirePeer: self.location.requirePeer)
            var info = stat()
            guard lstat(server.description, &info) == 0 else {
                throw UnixConnectFailed(errno: errno)
            }
            guard info.st_mode & S_IFMT == S_IFSOCK, trusted.contains(info.st_uid) else {
                throw UntrustedPeer(uid: info.st_uid)
            }
            let peer = try Self.peerUID(ofSocketAt: server.description)
            guard trusted.contains(peer) else { throw UntrustedPeer(uid: peer) }
        }
        return try await PostgresConnection.connect(
            configuration: try self.configuration(server), id: id, logger: self.logger)
    }

    /// The uid of the process that holds the Unix socket at `path`, which the kernel recorded when it accepted
    /// a probe connection (SO_PEERCRED); the probe is closed with nothing sent. Non-blocking: a server whose
    /// queue is full is unreachable, not waited for.
    static func peerUID(ofSocketAt path: String) throws -> UInt32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw UnixConnectFailed(errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (offset, byte) in bytes.enumerated() { buffer[offset] = byte }
        }
        let socket = Glibc.socket(
            AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socket >= 0 else { throw UnixConnectFailed(errno: errno) }
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(socket, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            let failure = errno
            close(socket)
            throw UnixConnectFailed(errno: failure)
        }
        defer { close(socket) }
        var credentials = casevault_ucred()
        var length = socklen_t(MemoryLayout<casevault_ucred>.size)
        guard getsockopt(socket, SOL_SOCKET, CASEVAULT_SO_PEERCRED, &credentials, &length) == 0,
            Int(length) == MemoryLayout<casevault_ucred>.size
        else { throw UntrustedPeer(uid: nil) }
        return credentials.uid
    }

    /// A local socket could not be connected to (`errno`): the server is unreachable.
    struct UnixConnectFailed: Error {
        let errno: CInt
    }

    /// Who may hold a local server's socket: `requirePeer`'s user alone when it is set (as libpq's
    /// `requirepeer`), else root and the owner of the socket's directory (`postgres` for /run/postgresql;
    /// root alone for /tmp, where a server running as another user needs `requirepeer`).
    static func trustedPeers(directory: String, requirePeer: String?) throws(CaseVaultError) -> Set<UInt32> {
        if let requirePeer {
            var entry = passwd()
            var result: UnsafeMutablePointer<passwd>?
            var buffer = [CChar](repeating: 0, count: 4096)
            guard getpwnam_r(requirePeer, &entry, &buffer, buffer.count, &result) == 0, result != nil else {
                throw CaseVaultError(
                    .invalidConfiguration,
                    "the PostgreSQL connection string's requirepeer names a user this host does not know")
            }
            return [entry.pw_uid]
        }
        var info = stat()
        guard stat(directory, &info) == 0 else {
            throw CaseVaultError(
                .storageFailure, "the PostgreSQL socket directory \(directory) cannot be read (errno \(errno))")
        }
        return [0, info.st_uid]
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
        if error is UntrustedPeer { return .untrustedPeer }
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

    /// What kind of error ended a connection, for the log: a code or an errno, never a server's message
    /// (which may echo what was sent).
    static func errorKind(_ error: any Error) -> String {
        if let failed = error as? UnixConnectFailed { return "connect errno \(failed.errno)" }
        if let error = error as? PSQLError {
            return "\(error.code)" + (error.underlying.map { " (\(type(of: $0)): \($0))" } ?? "")
        }
        return "\(type(of: error))"
    }

    static func summary(_ outcomes: [Outcome]) -> String {
        let counts: [(Outcome, String)] = [
            (.standby, "in recovery (a standby)"), (.unreachable, "unreachable"),
            (.credentialsRefused, "refused the credentials"), (.tlsFailed, "failed TLS"),
            (.refused, "refused the connection"), (.untrustedPeer, "held by a process of an untrusted user"),
        ]
        let parts = counts.compactMap { (outcome, words) -> String? in
            let count = outcomes.count { $0 == outcome }
            return count == 0 ? nil : "\(count) \(words)"
        }
        return "no writable PostgreSQL server among the \(outcomes.count) in the connection string: "
            + parts.joined(separator: ", ")
    }
}

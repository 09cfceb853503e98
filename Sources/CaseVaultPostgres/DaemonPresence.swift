package import CaseVaultCore
internal import CaseVaultCrypto
package import CaseVaultSealing
package import Logging
package import PostgresNIO
internal import Synchronization

/// One live daemon a name: the session advisory lock a daemon holds while it serves, on a connection of its
/// own to the primary, keyed by its name. A second daemon started under the same name (a copied data
/// directory, a cloned host, a name given twice) finds the lock taken and refuses to start: two daemons
/// of one name would replace each other's published key pairs and audit anchor. The lock goes with its
/// session: when the daemon stops or dies, or the primary goes, and is taken again on the new primary at
/// the daemon's next step.
package final class DaemonPresence: Sendable {
    package let daemon: DaemonName
    private let locator: PrimaryLocator
    private let logger: Logger
    /// The connection that holds the lock, while it is open.
    private let holder = Mutex<PostgresConnection?>(nil)

    package init(daemon: DaemonName, locator: PrimaryLocator, logger: Logger) {
        self.daemon = daemon
        self.locator = locator
        self.logger = logger
    }

    deinit {
        if let connection = self.holder.withLock({ $0 }) {
            connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
        }
    }

    /// The lock's key: the first eight bytes of a BLAKE2b digest of the name under a label of its own, in
    /// PostgreSQL's single 64-bit key space (where the vault's other locks are ASCII words).
    package static func key(_ daemon: DaemonName) -> Int64 {
        let digest = Hash.blake2b(Array("casevault daemon presence\0\(daemon.rawValue)".utf8), length: 16)
        return Int64(bitPattern: digest.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }

    /// Probes of an idle presence session's client by the server: after 10 s idle, every 5 s, 3 unanswered
    /// ending the session.
    static let keepalives: PostgresQuery = """
        SELECT set_config('tcp_keepalives_idle', '10', false), set_config('tcp_keepalives_interval', '5', false),
            set_config('tcp_keepalives_count', '3', false)
        """

    /// Holds the lock: at once when this daemon's connection that holds it is still open, else on a new
    /// connection to the primary. Returns that connection, on which the daemon's steps of the erase epochs
    /// run too (one connection for both, not a new one every step); `nil` when another session holds the
    /// lock: another daemon of this name.
    package func hold() async throws(CaseVaultError) -> PostgresConnection? {
        if let connection = self.holder.withLock({ $0 }), !connection.isClosed { return connection }
        let connection = try await self.locator.connect().connection
        var taken = false
        do {
            // The server probes this session's client every few seconds once idle, so that the session of a
            // daemon whose host died (power lost, network cut) ends, and its lock with it, within about
            // 25 s, not the kernel's two hours: the daemon started again takes its name back (ignored on a
            // local socket, where the server shares the host's fate).
            try await connection.perform(Self.keepalives, logger: self.logger)
            for try await value in try await connection.query(
                "SELECT pg_try_advisory_lock(\(Self.key(self.daemon)))", logger: self.logger
            ).decode(Bool.self) {
                taken = value
            }
        } catch {
            try? await connection.close()
            throw CaseVaultError(.storageFailure, "the daemon's presence could not be taken in the database")
        }
        guard taken else {
            try? await connection.close()
            return nil
        }
        let replaced = self.holder.withLock { holder in
            defer { holder = connection }
            return holder
        }
        try? await replaced?.close()
        return connection
    }

    /// Lets the lock go (its connection closed), for a daemon that stops, or whose step on it hung: the
    /// next `hold` takes it again on a new connection.
    package func release() async {
        let connection = self.holder.withLock { holder in
            defer { holder = nil }
            return holder
        }
        try? await connection?.close()
    }

    /// What a daemon that finds its name taken is told.
    package var taken: CaseVaultError {
        CaseVaultError(
            .invalidConfiguration,
            "a daemon named \(self.daemon.rawValue) already serves this vault: every daemon needs a storage.daemon_name and a data directory of its own",
            field: "storage.daemon_name")
    }
}

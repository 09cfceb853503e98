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
///
/// Beside its name, a serving daemon holds the vault's serving lock shared (`servingLock`), which a move
/// out of the database and its cancel take alone (`PostgresStorage.writeMigration`, `cancelMove`): a move
/// cannot begin while any daemon holds its place, one of a name the database does not know yet included,
/// and no daemon takes its place while a move is under way, nor, once a move marked the vault, after it.
package final class DaemonPresence: Sendable {
    /// The advisory lock every serving daemon holds shared, on the session that holds its name, and a move
    /// out of the database takes alone (`CVSERVES` in ASCII).
    package static let servingLock: Int64 = 0x4356_5345_5256_4553

    /// What `hold` found.
    package enum Hold: Sendable {
        /// The name and the serving lock are held on this connection.
        case held(PostgresConnection)
        /// Neither is kept, and why: another daemon of this name (`taken`), a move out of the database, or
        /// its cancel, under way (`moving`), or a move that marked the vault (`vault-moved`, saying where it
        /// went).
        case refused(CaseVaultError)

        /// The connection that holds the name, when it is held.
        package var connection: PostgresConnection? {
            if case .held(let connection) = self { connection } else { nil }
        }
    }

    package let daemon: DaemonName
    private let locator: PrimaryLocator
    private let logger: Logger
    /// The connection that holds the lock, while it is open.
    private let holder = Mutex<PostgresConnection?>(nil)
    /// A server process of a session, and when it started (a process id alone may be reused).
    struct Session: Sendable {
        let pid: Int32
        let start: String
    }
    /// The session that last held the lock.
    private let session = Mutex<Session?>(nil)

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

    /// The lock's key as `pg_locks` shows a 64-bit key: its high half in `classid`, its low half in `objid`
    /// (with `objsubid` 1), each read as unsigned.
    package static func lockHalves(_ daemon: DaemonName) -> (high: Int64, low: Int64) {
        let key = UInt64(bitPattern: Self.key(daemon))
        return (Int64(key >> 32), Int64(key & 0xFFFF_FFFF))
    }

    /// Holds the lock, and the serving lock shared: at once when this daemon's connection that holds them
    /// is still open, else on a new connection to the primary. Returns that connection, on which the
    /// daemon's steps of the erase epochs run too (one connection for both, not a new one every step);
    /// refused with `moving` when a move holds the serving lock alone, with `taken` when another session
    /// holds the name (another daemon of this name), and with `vault-moved` when, both held, a move has
    /// marked the vault; then the new connection is closed, letting both locks go. A session of this daemon's own that still holds
    /// the name (its connection closed here while the server was busy with it) is ended first, and the lock
    /// taken again.
    package func hold() async throws(CaseVaultError) -> Hold {
        if let connection = self.holder.withLock({ $0 }), !connection.isClosed { return .held(connection) }
        let connection = try await self.locator.connect().connection
        let key = Self.key(self.daemon)
        var taken = false
        var serves = false
        var moved: CaseVaultError?
        var session = Session(pid: 0, start: "")
        do {
            // A step waits at most 20 s for a lock (the turn's, the filing lock), less than its limit
            // (`EpochService.stepLimit`), so that the server's side of it ends before the daemon gives up on it.
            for try await (pid, start, _) in try await connection.query(
                """
                SELECT pid, backend_start::text, set_config('lock_timeout', '20s', false)
                FROM pg_stat_activity WHERE pid = pg_backend_pid()
                """, logger: self.logger
            ).decode((Int32, String, String).self) {
                session = Session(pid: pid, start: start)
            }
            // The serving lock first: a move holds every known daemon's name too, and a daemon that finds
            // one under way is told so rather than that its name is taken.
            serves = try await Self.tryLock(Self.servingLock, shared: true, on: connection, logger: self.logger)
            if serves { taken = try await Self.tryLock(key, on: connection, logger: self.logger) }
            if serves, !taken, let previous = self.session.withLock({ $0 }) {
                let halves = Self.lockHalves(self.daemon)
                // That session only: its process and start time, holding this name's lock in this database.
                try await connection.perform(
                    """
                    SELECT pg_terminate_backend(l.pid, 5000) FROM pg_locks l
                    JOIN pg_stat_activity a ON a.pid = l.pid
                    WHERE l.pid = \(previous.pid) AND a.backend_start::text = \(previous.start)
                    AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                    AND l.classid::int8 = \(halves.high) AND l.objid::int8 = \(halves.low)
                    """, logger: self.logger)
                taken = try await Self.tryLock(key, on: connection, logger: self.logger)
            }
            // Then the mark of a move that ended while this daemon was away from the database (its session
            // ended by a failover, or by a step that hung): it serves nothing of a vault that moved.
            if serves, taken {
                do {
                    try await PostgresSchema.refuseMoved(on: connection, logger: self.logger)
                } catch let error as CaseVaultError where error.code == .vaultMoved {
                    moved = error
                }
            }
        } catch {
            try? await connection.close()
            throw CaseVaultError(.storageFailure, "the daemon's presence could not be taken in the database")
        }
        guard serves, taken, moved == nil else {
            try? await connection.close()
            return .refused(moved ?? (serves ? self.taken : Self.moving))
        }
        self.session.withLock { $0 = session }
        let replaced = self.holder.withLock { holder in
            defer { holder = connection }
            return holder
        }
        try? await replaced?.close()
        return .held(connection)
    }

    private static func tryLock(_ key: Int64, shared: Bool = false, on connection: PostgresConnection, logger: Logger)
        async throws -> Bool
    {
        let query: PostgresQuery =
            shared ? "SELECT pg_try_advisory_lock_shared(\(key))" : "SELECT pg_try_advisory_lock(\(key))"
        for try await taken in try await connection.query(query, logger: logger).decode(Bool.self) {
            return taken
        }
        return false
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

    /// What a daemon that finds a move holding the serving lock is told.
    package static var moving: CaseVaultError {
        CaseVaultError(
            .storageFailure,
            "a move of the vault out of the database (casevaultctl migrate or migrate --cancel) is under way: this daemon serves nothing until it ends"
        )
    }

    /// What a daemon that finds its name taken is told.
    package var taken: CaseVaultError {
        CaseVaultError(
            .invalidConfiguration,
            "a daemon named \(self.daemon.rawValue) already serves this vault: every daemon needs a storage.daemon_name and a data directory of its own",
            field: "storage.daemon_name")
    }
}

internal import CaseVaultConfiguration
internal import CaseVaultCore
internal import CaseVaultFiles
internal import CaseVaultPostgres
internal import CaseVaultSealing
internal import CaseVaultStore
internal import Dispatch
internal import Foundation
internal import Logging
internal import ServiceLifecycle

#if canImport(Glibc)
internal import Glibc
#endif

/// A vault kept in PostgreSQL (`[storage] backend = "postgresql"`), opened for this daemon: the root key
/// from the key source (a file or a systemd credential), this daemon's epoch key file in its data
/// directory (`epoch.keys`, beside its audit log), the primary found among the listed servers, the schema
/// migrated, and one step of the erase epochs' schedule taken before the first request (the first daemon of
/// a vault turns to epoch 1; a joining one publishes its pair and files once another daemon has sealed the
/// current epoch's key to it).
enum DatabaseVault {
    struct Opened: Sendable {
        let storage: PostgresStorage
        /// Where this daemon's audit log is anchored: its row in the database.
        let anchor: PostgresAuditAnchor
        /// The schedule's steps, every `EpochService.period` while the daemon serves.
        let epochs: EpochService
    }

    /// The name of this daemon's epoch key file in its data directory.
    static let epochKeyFile = "epoch.keys"
    /// The file in the data directory that names the daemon whose directory it is.
    static let nameFile = "daemon.name"

    /// This daemon's name: `storage.daemon_name`, which must be given, and which the data directory keeps
    /// from the first start on (`daemon.name`), so that a directory cannot change names: its epoch key
    /// file and its audit log are that daemon's, and its name is how the other daemons and the database
    /// know them.
    static func name(_ settings: DaemonConfiguration.DatabaseSettings, _ store: StoreConfiguration)
        throws(CaseVaultError) -> DaemonName
    {
        guard let name = settings.daemonName else {
            throw CaseVaultError(
                .invalidConfiguration,
                "storage.backend = \"postgresql\" needs storage.daemon_name, this daemon's own name among the vault's daemons",
                field: "storage.daemon_name")
        }
        let path = store.dataDirectory.path + "/" + Self.nameFile
        guard DataDirectory.exists(path) else {
            try RootKeyFile.writeNew(path: path, bytes: Array(name.rawValue.utf8))
            return name
        }
        try DataDirectory.checkPrivateFile(path)
        let kept = String(decoding: try PosixFile(path: path, flags: O_RDONLY).readAll(), as: UTF8.self)
        guard kept == name.rawValue else {
            throw CaseVaultError(
                .invalidConfiguration,
                "this data directory is daemon \(kept)'s (\(path)), but storage.daemon_name says \(name.rawValue): a daemon's name cannot change",
                field: "storage.daemon_name")
        }
        return name
    }

    /// Takes this daemon's presence (`DaemonPresence`), waiting up to 30 seconds for the session of a
    /// daemon of this name that died to end (its host's death included: `PrimaryLocator.isInRecovery` sets every session's limits),
    /// or for a move out of the database to end; `invalid-configuration` when another daemon of this name
    /// still holds it, `storage-failure` while the move goes on (exit 3: systemd starts the daemon again, and
    /// once the move has marked the vault it stops with `vault-moved`).
    static func holdPresence(_ presence: DaemonPresence) async throws(CaseVaultError) {
        var refusal = presence.taken
        for _ in 0..<120 {
            switch try await presence.hold() {
            case .held: return
            case .refused(let error) where error.code == .vaultMoved: throw error
            case .refused(let error): refusal = error
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
        throw refusal
    }

    static func open(
        _ settings: DaemonConfiguration.DatabaseSettings, _ store: StoreConfiguration, logger: Logger
    ) async throws(CaseVaultError) -> Opened {
        let password: String? =
            switch settings.password {
            case .none: nil
            case .file(let path): try PostgresPassword.read(file: path)
            case .credential(let name):
                try PostgresPassword.read(
                    credential: name, directory: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"])
            }
        let name = try Self.name(settings, store)
        // The passphrase source is refused with the configuration (`refuseUnservedBackend`).
        let rootKey = try store.databaseRootKey(creating: true)
        defer { rootKey.wipe() }
        let file = try EpochKeyFile(path: store.dataDirectory.path + "/" + Self.epochKeyFile, rootKey: rootKey)
        let locator = PrimaryLocator(location: settings.location, password: password, logger: logger)
        let storage = PostgresStorage(
            sealing: try SealingServices(rootKey: rootKey), locator: locator, epochKeys: file,
            eraseWindow: settings.eraseWindowSeconds, maxContentBytes: store.maxContentBytes,
            retention: store.retention, sweepBatch: store.sweepBatch, logger: logger, clock: store.clock)
        let presence = DaemonPresence(daemon: name, locator: locator, logger: logger)
        let epochs = EpochService(
            schedule: storage.schedule(EpochExchange(daemon: name, file: file, logger: logger)),
            storage: storage, presence: presence, logger: logger)
        let check = storage.sealing.rootKeyCheck
        let connection = try await locator.connect().connection
        do {
            let found = try await PostgresSchema.migrate(connection, logger: logger)
            try await PostgresSchema.checkRootKey(check, on: connection, logger: logger)
            try await PostgresSchema.refuseMoved(on: connection, logger: logger)
            if found < PostgresSchema.currentVersion {
                logger.notice(
                    "migrated the vault's schema in the database",
                    metadata: ["schema.from": "\(found)", "schema.to": "\(PostgresSchema.currentVersion)"])
            }
            try? await connection.close()
        } catch {
            try? await connection.close()
            throw EpochService.failure(error)
        }
        // Holding its name reads the mark again (`DaemonPresence.hold`): a daemon that waited behind a move
        // for its name sees the mark the move committed before letting go.
        try await Self.holdPresence(presence)
        await epochs.step()
        return Opened(
            storage: storage, anchor: PostgresAuditAnchor(storage: storage, daemon: name),
            epochs: epochs)
    }
}

/// This daemon's part in turning erase epochs (`EpochSchedule`): a step every `period`, on the connection
/// that holds the daemon's name (`DaemonPresence`; a new one to the primary when that one ended), then the second certificates of the shreds whose epoch every
/// daemon has destroyed (`certifyErasures`). The schedule needs a step only every `EpochSchedule.interval`
/// (up to a minute); stepping every two seconds, a few small queries each, means a daemon that joins, or
/// comes back without the current epoch's key, gets it sealed to it within seconds rather than a minute.
/// A step that fails is logged and tried again at the next; the schedule's own margins (a turn two
/// intervals early) absorb many. Only epoch numbers are logged.
struct EpochService: Service {
    /// How often a daemon steps.
    static var period: Duration { .seconds(2) }

    let schedule: EpochSchedule
    let storage: PostgresStorage
    /// This daemon's lock on its name, taken again at each step when its session has ended (a failover).
    let presence: DaemonPresence
    let logger: Logger

    /// How long a daemon serves without its name before it stops: longer than the database takes to end
    /// the session of a daemon of this name whose host died (the session limits `PrimaryLocator.isInRecovery` sets), after which
    /// only another live daemon can hold it.
    static var nameGrace: Duration { .seconds(60) }
    /// How long a step may take before its connection is closed: one whose server went away unseen (a
    /// half-open socket) would otherwise wait for the kernel to give up on it.
    static var stepLimit: Duration { .seconds(30) }

    /// Steps until the daemon stops; throws, stopping the daemon (exit 3), once another
    /// daemon has held this one's name for `nameGrace`: two daemons of one name would replace each other's
    /// pairs, keys and audit anchor, and the erasures certified for that name would not be this one's.
    func run() async throws {
        try await cancelWhenGracefulShutdown {
            var lostSince: ContinuousClock.Instant?
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.period)
                guard !Task.isCancelled else { return }
                let refusal: CaseVaultError
                switch await self.step() {
                case .held:
                    lostSince = nil
                    continue
                case .unknown:
                    // No answer from the database: whether the name is held is not known, and the grace
                    // that began goes on (a database away is answered with 503s, not by stopping).
                    continue
                case .refused(let error) where error.code == .vaultMoved:
                    self.logger.critical(
                        "the vault was moved out of the database: this daemon stops",
                        metadata: ["daemon.name": "\(self.presence.daemon.rawValue)"])
                    throw error
                case .refused(let error):
                    refusal = error
                }
                if let since = lostSince, since.duration(to: .now) >= Self.nameGrace {
                    self.logger.critical(
                        "this daemon has been without its place in the vault for a minute: this one stops",
                        metadata: [
                            "daemon.name": "\(self.presence.daemon.rawValue)", "error.code": "\(refusal.code.rawValue)",
                        ])
                    throw refusal
                }
                lostSince = lostSince ?? .now
            }
        }
        await self.presence.release()
    }

    /// What a step found of this daemon's place in the vault (`DaemonPresence.hold`).
    enum Place {
        /// Its name and the serving lock held.
        case held
        /// Not held, and why: another daemon of its name, a move under way, or a move done.
        case refused(CaseVaultError)
        /// The database did not answer.
        case unknown
    }

    /// One step, then certifying; never throws. No step while another daemon holds this daemon's name:
    /// its pairs and keys would be mixed with this one's; nor while a move out of the database holds the
    /// vault, or once one has marked it. Returns what it found of the daemon's place.
    @discardableResult
    func step() async -> Place {
        let hold: DaemonPresence.Hold
        do {
            hold = try await self.presence.hold()
        } catch {
            self.stepFailed(error)
            return .unknown
        }
        switch hold {
        case .refused(let refusal):
            if refusal.code != .vaultMoved {
                self.logger.error(
                    "this daemon does not hold its place in the vault (\(refusal.message)): it takes no step of the erase epochs, and stops unless it has it back within a minute",
                    metadata: ["daemon.name": "\(self.presence.daemon.rawValue)"])
            }
            return .refused(refusal)
        case .held(let connection):
            do {
                let step = try await self.limited { try await self.schedule.step(on: connection) }
                if step.rejoinedForgotten {
                    self.logger.warning(
                        "an operator forgot this daemon as a host gone for good: it destroyed every erase epoch key its file held and rejoins with the current key from a live daemon",
                        metadata: [
                            "daemon.name": "\(self.presence.daemon.rawValue)", "epoch.destroyed": "\(step.destroyed)",
                        ])
                }
                if !step.retired.isEmpty {
                    self.logger.warning(
                        "daemons away from the vault retired from the erase epochs: they rejoin with the current key from a live daemon",
                        metadata: ["epoch.retired": "\(step.retired)"])
                }
                if step.turnedTo != nil || !step.received.isEmpty || !step.destroyed.isEmpty || step.rewrapped > 0 {
                    self.logger.notice(
                        "erase epochs stepped",
                        metadata: [
                            "epoch.turned_to": "\(step.turnedTo.map(String.init) ?? "none")",
                            "epoch.received": "\(step.received)", "epoch.destroyed": "\(step.destroyed)",
                            "epoch.rewrapped": "\(step.rewrapped)",
                        ])
                }
                if let waiting = step.waiting {
                    self.logger.info("erase epochs wait", metadata: ["epoch.waiting": "\(waiting)"])
                }
            } catch {
                self.stepFailed(Self.failure(error))
            }
        }
        let storage = self.storage
        let certified = await withCheckedContinuation { continuation in
            // The storage blocks its thread; never one of the cooperative pool's.
            DispatchQueue.global().async {
                continuation.resume(returning: Result { () throws(CaseVaultError) in try storage.certifyErasures() })
            }
        }
        switch certified {
        case .success(let issued) where issued > 0:
            self.logger.notice("erasures certified", metadata: ["certificates.count": "\(issued)"])
        case .success:
            break
        case .failure(let error):
            self.logger.warning(
                "certifying erasures failed; the next step tries again",
                metadata: ["error.code": "\(error.code.rawValue)"])
        }
        return .held
    }

    private func stepFailed(_ error: CaseVaultError) {
        // A wrapped key that does not open stops every turn at it: the operator needs to know which record's
        // (its error names it by id, never by content).
        guard error.code == .integrityFailure else {
            self.logger.warning(
                "an erase epoch step failed; the next one tries again",
                metadata: ["error.code": "\(error.code.rawValue)"])
            return
        }
        self.logger.error(
            "an erase epoch step met a wrapped key that does not open; the next one tries again",
            metadata: ["error.code": "\(error.code.rawValue)", "error.detail": "\(error.message)"])
    }

    /// Runs `body` for at most `stepLimit`: past it, the presence's connection, on which the body runs, is
    /// closed, which fails what waits on it, and the next step takes the name again on a new connection.
    private func limited<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let presence = self.presence
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: Self.stepLimit)
                await presence.release()
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let done = first else {
                throw CaseVaultError(
                    .storageUnavailable, "a step of the erase epochs took too long: its connection was closed")
            }
            return done
        }
    }

    static func failure(_ error: any Error) -> CaseVaultError {
        (error as? CaseVaultError) ?? CaseVaultError(.storageFailure, "the database failed (\(type(of: error)))")
    }
}

internal import CCaseVaultShims
package import CaseVaultAudit
public import CaseVaultConfiguration
public import CaseVaultCore
internal import CaseVaultFiles
internal import CaseVaultSealing
internal import CaseVaultServer
package import CaseVaultStore
public import Foundation
public import Logging
internal import NIOCore
internal import NIOPosix
internal import ServiceLifecycle
internal import Synchronization
internal import UnixSignals

#if canImport(Glibc)
internal import Glibc
#endif

/// The daemon's lifecycle: refuse to run dumpable, open the store (which recovers from any crash), serve
/// the socket until SIGTERM or SIGINT (graceful: requests in flight finish), then close the store and
/// remove the socket.
public enum Daemon {
    /// Makes the event loops that serve the socket Swift's global executor too, so that a request's
    /// handler runs on the loop its connection reads on instead of hopping to the cooperative pool and
    /// back (two thread switches per request). Call once, first thing in `main`, before anything async.
    /// What may block for long (a store's flush, Argon2id, a backup's stream, a user-name lookup) runs on
    /// the daemon's blocking pool; the audit log's rotations and directory flushes on its writer queue.
    public static func takeOverConcurrency() {
        let installed = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        Self.loopsRunTasks.store(installed, ordering: .relaxed)
    }

    /// Whether `takeOverConcurrency` installed the loops as the executor (logged at start when not).
    private static let loopsRunTasks = Atomic<Bool>(false)

    /// Runs the daemon until it is stopped. If it cannot start, clients already waiting on a socket systemd
    /// passed are answered with a 503 problem before the error is thrown (`SystemdSocket.refuseWaiting`).
    public static func run(
        configuration: DaemonConfiguration, base: URL, logger: Logger, acceptAuditBreak: Bool = false
    ) async throws(CaseVaultError) {
        let startup = Startup()
        do throws(CaseVaultError) {
            try await Self.serve(
                configuration: configuration, base: base, logger: logger, acceptAuditBreak: acceptAuditBreak,
                startup: startup)
        } catch {
            if !startup.isServing { SystemdSocket.refuseWaiting(socket: startup.socket, code: error.code) }
            logger.critical(
                startup.isServing ? "stopped with an error" : "cannot start",
                metadata: ["error.code": "\(error.code.rawValue)"])
            throw error
        }
    }

    /// How far the start got: the socket systemd passed, once taken (its environment is gone then), and
    /// whether it has served. Until it serves, clients waiting on it are nobody else's to answer.
    private final class Startup: Sendable {
        private let state = Mutex<(socket: CInt?, serving: Bool)>((nil, false))
        var socket: CInt? { self.state.withLock { $0.socket } }
        var isServing: Bool { self.state.withLock { $0.serving } }
        func took(_ socket: CInt?) { self.state.withLock { $0.socket = socket } }
        func serving() { self.state.withLock { $0.serving = true } }
    }

    private static func serve(
        configuration: DaemonConfiguration, base: URL, logger: Logger, acceptAuditBreak: Bool, startup: Startup
    ) async throws(CaseVaultError) {
        umask(0o077)
        guard casevault_disable_core_dumps() == 0 else {
            throw CaseVaultError(
                .keyUnavailable, "core dumps could not be disabled; refusing to hold keys in a dumpable process")
        }
        // casevaultd refuses it before this too; a daemon started any other way must not open the data
        // directory when the operator asked for the database.
        try configuration.refuseUnservedBackend()
        let roleMap = try configuration.roleMap()
        let storeConfiguration = try configuration.storeConfiguration(relativeTo: base)
        let serverConfiguration = try configuration.serverConfiguration(relativeTo: base)
        if !Self.loopsRunTasks.load(ordering: .relaxed) {
            logger.notice("requests run on Swift's cooperative pool: the event loops could not be made its executor")
        }
        if configuration.testing.clockFile != nil {
            logger.warning("testing.clock_file is set: the daemon's clock reads a file; never set it on a real host")
        }
        // One daemon per data directory, before anything in it is opened: a second one's recovery would
        // scrub key slots of puts the first has not committed yet.
        _ = try RecordStore.prepareDirectories(storeConfiguration)
        let lock = try DataDirectoryLock(directory: storeConfiguration.dataDirectory.path)
        // Held until serve returns, whichever way: everything below writes in the data directory.
        defer { withExtendedLifetime(lock) {} }
        if try configuration.databaseSettings(relativeTo: base) == nil {
            // A vault that casevaultctl migrate wrote out for PostgreSQL is served there, not here too.
            try RecordStore.refuseMoved(storeConfiguration)
        }
        // Socket activation: systemd bound the socket and owns its path; otherwise the daemon binds its own.
        let inherited = try SystemdSocket.take(socketPath: serverConfiguration.socketPath)
        startup.took(inherited)
        if let database = try configuration.databaseSettings(relativeTo: base) {
            // The vault in PostgreSQL: the data directory keeps this daemon's audit log and epoch key file.
            let opened = try await DatabaseVault.open(database, storeConfiguration, logger: logger)
            try await Self.serve(
                keeper: VaultKeeper(unsealed: opened.storage, logger: logger), anchor: { _ in opened.anchor },
                services: [opened.epochs], configuration: configuration, storeConfiguration: storeConfiguration,
                serverConfiguration: serverConfiguration, roleMap: roleMap, inherited: inherited,
                acceptAuditBreak: acceptAuditBreak, startup: startup, logger: logger)
            return
        }
        // The passphrase source starts sealed: no key, no store, until an operator's init or unseal.
        let keeper: VaultKeeper<RecordStore>
        if storeConfiguration.keySource == .passphrase {
            keeper = VaultKeeper(
                sealed: storeConfiguration, limits: try configuration.passphraseLimits(), logger: logger)
        } else {
            keeper = VaultKeeper(unsealed: try RecordStore.open(storeConfiguration, logger: logger), logger: logger)
        }
        try await Self.serve(
            keeper: keeper, anchor: { $0 }, services: [], configuration: configuration,
            storeConfiguration: storeConfiguration, serverConfiguration: serverConfiguration, roleMap: roleMap,
            inherited: inherited, acceptAuditBreak: acceptAuditBreak, startup: startup, logger: logger)
    }

    /// Serves `keeper`'s vault until the daemon is stopped: the audit log anchored where `anchor` says (the
    /// local store itself, or this daemon's row in the database), the server, and `services` beside them
    /// (the erase epochs' schedule on PostgreSQL).
    private static func serve<Storage: ServedStorage>(
        keeper: VaultKeeper<Storage>, anchor: @escaping @Sendable (Storage) -> any AuditAnchorKeeper,
        services extra: [any Service], configuration: DaemonConfiguration, storeConfiguration: StoreConfiguration,
        serverConfiguration: ServerConfiguration, roleMap: RoleMap, inherited: CInt?, acceptAuditBreak: Bool,
        startup: Startup, logger: Logger
    ) async throws(CaseVaultError) {
        let vault = VaultService(keeper: keeper, ownSocket: inherited == nil ? serverConfiguration.socketPath : nil)
        let audit: AuditLog
        do throws(CaseVaultError) {
            // On a thread that may block: attaching reads the anchor, which on PostgreSQL waits for a task that
            // the loop running this one would have to run.
            audit = try await Self.blocking {
                () throws(CaseVaultError) in
                try Self.openAudit(
                    configuration, storeConfiguration, keeper: keeper, anchor: anchor,
                    acceptAuditBreak: acceptAuditBreak, logger: logger)
            }
        } catch {
            vault.stop()
            throw error
        }
        let notifier = SystemdNotifier()
        let socketPath = serverConfiguration.socketPath
        let application: any Service
        do throws(CaseVaultError) {
            application = try buildApplication(
                configuration: serverConfiguration, keeper: keeper, audit: audit, roleMap: roleMap, logger: logger,
                services: [SystemdWatchdog(notifier: notifier, keeper: keeper, logger: logger)] + extra,
                listeningSocket: inherited,
                onReady: {
                    startup.serving()
                    notifier.send("READY=1", "STATUS=serving on \(socketPath)", logger: logger)
                }
            )
        } catch {
            await Self.closing(audit)
            vault.stop()
            throw error
        }
        // Shut down in the reverse order: the server stops taking requests and finishes those in flight,
        // the audit log signs its last checkpoint, the store closes and its keys are zeroed. The server
        // ending by itself, or failing, shuts the group down the same way.
        let services = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: vault),
                    .init(service: AuditLogService(audit: audit)),
                    .init(
                        service: application, successTerminationBehavior: .gracefullyShutdownGroup,
                        failureTerminationBehavior: .gracefullyShutdownGroup
                    ),
                    .init(
                        service: IndexLossWatch(keeper: keeper, logger: logger),
                        failureTerminationBehavior: .gracefullyShutdownGroup
                    ),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        let outcome: Result<Void, any Error>
        do {
            try await services.run()
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        // A graceful shutdown has closed both already (each close is done once); a cancelled group has
        // not, and they are closed here, in order: the last checkpoint is anchored before the store closes.
        await Self.closing(audit)
        vault.stop()
        // A loss the watch did not see before a stop (it stops first) still ends in a failure.
        if keeper.indexLost, case .success = outcome { throw RecordStore.indexLossError }
        if case .failure(let error) = outcome {
            if let error = error as? CaseVaultError { throw error }
            throw CaseVaultError(.socketUnavailable, "the server stopped with an error: \(error)")
        }
        logger.info("stopped")
    }

    /// Closes the audit log on a thread of its own: its last checkpoint is anchored first, which on
    /// PostgreSQL waits for a task that the event loops run.
    static func closing(_ audit: AuditLog) async {
        _ = try? await Self.blocking { () throws(CaseVaultError) in audit.close() }
    }

    /// Runs `body` on a thread of its own and waits for it without holding an executor's thread.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () throws(CaseVaultError) -> T)
        async throws(CaseVaultError) -> T
    {
        let result = await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: Result { () throws(CaseVaultError) in try body() }) }.start()
        }
        return try result.get()
    }

    /// Opens the audit log (finishing or undoing what a crash interrupted), and attaches the open store to
    /// it, or has the keeper attach the store it opens later (init, unseal): a store is served only once
    /// the log checks out against its anchor.
    package static func openAudit(
        _ configuration: DaemonConfiguration, _ storeConfiguration: StoreConfiguration,
        keeper: VaultKeeper<RecordStore>, acceptAuditBreak: Bool, logger: Logger
    ) throws(CaseVaultError) -> AuditLog {
        try Self.openAudit(
            configuration, storeConfiguration, keeper: keeper, anchor: { $0 }, acceptAuditBreak: acceptAuditBreak,
            logger: logger)
    }

    /// `openAudit` for any storage, the log anchored where `anchor` says.
    static func openAudit<Storage: ServedStorage>(
        _ configuration: DaemonConfiguration, _ storeConfiguration: StoreConfiguration,
        keeper: VaultKeeper<Storage>, anchor: @escaping @Sendable (Storage) -> any AuditAnchorKeeper,
        acceptAuditBreak: Bool, logger: Logger
    ) throws(CaseVaultError) -> AuditLog {
        let (audit, recovery) = try AuditLog.open(
            directory: try RecordStore.prepareDirectories(storeConfiguration),
            checkpointInterval: configuration.audit.checkpointEvery ?? AuditLog.defaultCheckpointInterval,
            retention: configuration.audit.retention,
            acceptBreak: acceptAuditBreak,
            clock: storeConfiguration.clock
        )
        if recovery.discardedBytes > 0 {
            logger.warning(
                "cut a torn last entry from the audit log", metadata: ["audit.bytes": "\(recovery.discardedBytes)"])
        }
        if let aside = recovery.tornEndSetAside {
            // Recorded as a break in the log at the first attach (at once, or at unseal).
            logger.warning(
                "set aside the audit log's torn end",
                metadata: ["audit.file": "\(aside)", "audit.entries": "\(recovery.entries)"])
        }
        keeper.admit { store in try audit.attach(to: anchor(store)) }
        if let store = try? keeper.store() {
            // A log that does not check out is left as it is (not closed, no checkpoint) for the operator.
            try audit.attach(to: anchor(store))
        } else {
            logger.notice(
                keeper.isInitialised
                    ? "sealed: waiting for casevaultctl unseal" : "not initialised: waiting for casevaultctl init")
        }
        return audit
    }
}

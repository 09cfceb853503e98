internal import CaseVaultAudit
internal import CaseVaultCore
internal import CaseVaultSealing
internal import CaseVaultStore
internal import Logging
internal import ServiceLifecycle
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// The vault's store as a service of the daemon's group, which shuts it down last: after the server has
/// stopped taking requests and the audit log has signed its last checkpoint. The open store (when the
/// vault is unsealed) is then closed and its keys zeroed, as at seal, and a socket the daemon bound
/// itself is removed. A cancelled group does nothing here: the daemon stops the vault after the group
/// has returned, in order (`Daemon.serve`).
final class VaultService<Storage: ServedStorage>: Service, Sendable {
    let keeper: VaultKeeper<Storage>
    /// The socket's path when the daemon bound it itself; `nil` when systemd passed it (systemd owns it).
    let ownSocket: String?
    private let stopped = Atomic<Bool>(false)

    init(keeper: VaultKeeper<Storage>, ownSocket: String?) {
        self.keeper = keeper
        self.ownSocket = ownSocket
    }

    func run() async {
        do {
            try await gracefulShutdown()
        } catch {
            return
        }
        self.stop()
    }

    /// Closes the store, zeroes its keys and removes the socket, once: at the end of a graceful shutdown,
    /// after the group has returned, or when the start fails before the group runs.
    func stop() {
        guard !self.stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if let store = try? self.keeper.store() {
            store.close()
            store.wipeKeys()
        }
        if let ownSocket { unlink(ownSocket) }
    }
}

/// The audit log as a service, shut down after the server and before the store: its last checkpoint
/// follows every request's entries and is anchored in the still open index. A cancelled group does
/// nothing here (`VaultService`); closing twice is harmless.
struct AuditLogService: Service {
    let audit: AuditLog

    func run() async {
        do {
            try await gracefulShutdown()
        } catch {
            return
        }
        await Daemon.closing(self.audit)
    }
}

/// Stops the daemon once its store's index may have lost commits the disk refused (`VaultKeeper.indexLost`,
/// also after a seal closed that store): the store refuses every call from then on, and only a start mends
/// the index (from the segments' frames).
/// Throwing shuts the group down gracefully, and casevaultd exits with a failure, which systemd's
/// `Restart=on-failure` answers by starting it again (sealed again, with the passphrase key source).
struct IndexLossWatch<Storage: ServedStorage>: Service {
    let keeper: VaultKeeper<Storage>
    let logger: Logger
    /// How often the store is asked; requests are refused meanwhile, so this bounds only the stop's delay.
    static var interval: Duration { .milliseconds(250) }
    /// What casevaultd stops with (exit 3): the store's own refusal.
    static var error: CaseVaultError { RecordStore.indexLossError }

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                if self.keeper.indexLost {
                    self.logger.critical(
                        "the disk refused a write of the index: stopping, so that the next start rebuilds it from the segments"
                    )
                    throw Self.error
                }
                try? await Task.sleep(for: Self.interval)
            }
        }
    }
}

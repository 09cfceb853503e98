internal import CaseVaultAudit
internal import CaseVaultStore
internal import ServiceLifecycle

#if canImport(Glibc)
internal import Glibc
#endif

/// The vault's store as a service of the daemon's group, which shuts it down last: after the server has
/// stopped taking requests and the audit log has signed its last checkpoint. The open store (when the
/// vault is unsealed) is then closed and its keys zeroed, as at seal, and a socket the daemon bound
/// itself is removed.
struct VaultService: Service {
    let keeper: VaultKeeper
    /// The socket's path when the daemon bound it itself; `nil` when systemd passed it (systemd owns it).
    let ownSocket: String?

    func run() async {
        // Returns when the group shuts down gracefully, or at once when it is cancelled.
        try? await gracefulShutdown()
        self.stop()
    }

    /// Closes the store, zeroes its keys and removes the socket: at the end of `run`, or when the start
    /// fails before the group runs.
    func stop() {
        if let store = try? self.keeper.store() {
            store.close()
            store.wipeKeys()
        }
        if let ownSocket { unlink(ownSocket) }
    }
}

/// The audit log as a service, shut down after the server and before the store: its last checkpoint
/// follows every request's entries and is anchored in the still open index.
struct AuditLogService: Service {
    let audit: AuditLog

    func run() async {
        try? await gracefulShutdown()
        self.audit.close()
    }
}

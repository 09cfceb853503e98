internal import CCaseVaultShims
internal import CaseVaultStore
internal import Foundation
internal import Logging
internal import ServiceLifecycle

#if canImport(Glibc)
internal import Glibc
#endif

/// The service manager's notification protocol (sd_notify(3)), written by hand: libsystemd would be a
/// dependency for one datagram. Inactive unless systemd set NOTIFY_SOCKET, so the daemon behaves the same
/// on a terminal, under cron-less hosts and in tests that give no socket.
struct SystemdNotifier: Sendable {
    let socketPath: String?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
    }

    var isActive: Bool { self.socketPath != nil }

    /// Sends `fields` (`READY=1`, `STATUS=…`) as one message; a failure is logged, never fatal.
    func send(_ fields: String..., logger: Logger) {
        guard let socketPath else { return }
        let message = fields.joined(separator: "\n")
        if casevault_sd_notify(socketPath, message) != 0 {
            logger.warning("the service manager could not be notified", metadata: ["errno": "\(errno)"])
        }
    }
}

/// Keeps systemd's watchdog fed while the store answers (`WatchdogSec=` sets WATCHDOG_USEC), and says
/// STOPPING=1 when a graceful shutdown begins. A store that hangs (a stuck disk) stops the pings, and
/// systemd restarts the daemon.
struct SystemdWatchdog: Service {
    let notifier: SystemdNotifier
    let interval: Duration?
    let store: RecordStore
    let logger: Logger

    init(notifier: SystemdNotifier, store: RecordStore, logger: Logger, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.notifier = notifier
        self.store = store
        self.logger = logger
        // WATCHDOG_PID, when set, names the process meant; another process (a child) must not answer.
        let forUs = environment["WATCHDOG_PID"].map { $0 == String(getpid()) } ?? true
        if forUs, let microseconds = environment["WATCHDOG_USEC"].flatMap(UInt64.init), microseconds > 0 {
            self.interval = .microseconds(Int64(microseconds / 2))
        } else {
            self.interval = nil
        }
    }

    func run() async throws {
        if let interval = self.interval, self.notifier.isActive {
            await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    if self.store.isResponsive() {
                        self.notifier.send("WATCHDOG=1", logger: self.logger)
                    }
                    try? await Task.sleep(for: interval)
                }
            }
        } else {
            try? await gracefulShutdown()
        }
        self.notifier.send("STOPPING=1", "STATUS=stopping: finishing the requests in flight", logger: self.logger)
    }
}

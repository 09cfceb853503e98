internal import CCaseVaultShims
public import CaseVaultCore
internal import CaseVaultSealing
internal import CaseVaultStore
public import Foundation
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
struct SystemdWatchdog<Storage: ServedStorage>: Service {
    let notifier: SystemdNotifier
    let interval: Duration?
    let keeper: VaultKeeper<Storage>
    let logger: Logger

    init(
        notifier: SystemdNotifier, keeper: VaultKeeper<Storage>, logger: Logger,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.notifier = notifier
        self.keeper = keeper
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
                    // A sealed daemon has no store to ask; it answers health all the same.
                    if (try? self.keeper.store())?.isResponsive() ?? true {
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

/// Socket activation (sd_listen_fds(3)), by hand: the listening socket systemd passes as fd 3 when
/// LISTEN_PID names this process. Exactly one is expected (casevault.socket), a listening Unix stream
/// socket bound to the configured socket_path, which others cannot reach.
public enum SystemdSocket {
    static let first: CInt = 3

    static func take(socketPath: String, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws(CaseVaultError) -> CInt?
    {
        guard let pid = environment["LISTEN_PID"], let count = environment["LISTEN_FDS"], pid == String(getpid()) else {
            return nil
        }
        guard count == "1" else {
            throw CaseVaultError(
                .socketUnavailable, "systemd passed \(count) sockets; casevault.socket must pass exactly one")
        }
        let fd = Self.first
        guard Self.option(fd, SO_TYPE) == CInt(SOCK_STREAM.rawValue), Self.option(fd, SO_ACCEPTCONN) == 1,
            Self.option(fd, SO_DOMAIN) == AF_UNIX
        else {
            throw CaseVaultError(
                .socketUnavailable, "the socket systemd passed is not a listening Unix stream socket (ListenStream=)")
        }
        var bound = stat()
        var configured = stat()
        guard let path = Self.path(of: fd), stat(path, &bound) == 0, stat(socketPath, &configured) == 0,
            bound.st_dev == configured.st_dev, bound.st_ino == configured.st_ino
        else {
            throw CaseVaultError(
                .socketUnavailable,
                "the socket systemd passed is not bound to server.socket_path \(socketPath); make ListenStream= name it"
            )
        }
        guard bound.st_mode & 0o007 == 0 else {
            throw CaseVaultError(
                .socketUnavailable,
                "the socket systemd passed is reachable by others; give it SocketMode=0660 and a SocketGroup="
            )
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        // Not for any process this one might start. (Refused above, the socket stays named by them, for
        // `refuseWaiting`.)
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { unsetenv(name) }
        return fd
    }

    /// When the daemon cannot start: answers every client waiting on the socket systemd passed with a 503
    /// problem and closes it. With `Accept=no` a socket that still has a connection waiting starts the
    /// service again at once; answered, nobody waits, and a configuration error fails the service once
    /// (`RestartPreventExitStatus=2`) instead of looping until the socket unit gives up. The detail says
    /// only that the daemon cannot start; why is in the journal, for the operator. Without socket
    /// activation nothing happens: `socket` is the one `take` returned, or else the environment names it.
    public static func refuseWaiting(
        socket: CInt? = nil, code: CaseVaultError.Code,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        let fd: CInt
        if let socket {
            fd = socket
        } else if let pid = environment["LISTEN_PID"], pid == String(getpid()), environment["LISTEN_FDS"] == "1" {
            fd = Self.first
        } else {
            return
        }
        let body =
            #"{"type":"urn:casevault:problem:\#(code.rawValue)","title":"casevaultd cannot start","status":503,"#
            + #""detail":"the daemon cannot start; the operator finds why in its journal (journalctl -u casevault.service)"}"#
        let response = Array(
            ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
                + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body).utf8
        )
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return  // EAGAIN: nobody else is waiting
            }
            // The request, as far as it came within a moment, is read and dropped; then the answer.
            var ready = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            if poll(&ready, 1, 200) > 0 {
                var scratch = [UInt8](repeating: 0, count: 16 << 10)
                _ = recv(client, &scratch, scratch.count, Int32(MSG_DONTWAIT))
            }
            _ = response.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            close(client)
        }
    }

    private static func option(_ fd: CInt, _ name: CInt) -> CInt? {
        var value: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        return getsockopt(fd, SOL_SOCKET, name, &value, &length) == 0 ? value : nil
    }

    /// The path a Unix socket is bound to.
    private static func path(of fd: CInt) -> String? {
        var address = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let named = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0, address.sun_family == sa_family_t(AF_UNIX) else { return nil }
        return withUnsafeBytes(of: &address.sun_path) { bytes in
            let used = bytes.prefix(while: { $0 != 0 })
            return used.isEmpty ? nil : String(decoding: used, as: UTF8.self)
        }
    }
}

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The service manager's side of sd_notify(3): a datagram socket the test binds, handed to a real daemon
/// as NOTIFY_SOCKET.
final class NotifySocket {
    let path: String
    let fd: Int32

    init(path: String) throws {
        self.path = path
        self.fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard self.fd >= 0 else { throw POSIXError(.EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(self.fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next message, or nil when none came within 200 ms.
    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
        return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : nil
    }

    /// Messages until one contains `field`, or `seconds` pass.
    func wait(for field: String, seconds: Double) -> [String] {
        var seen: [String] = []
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let message = self.receive() {
                seen.append(message)
                if message.split(separator: "\n").contains(Substring(field)) { return seen }
            }
        }
        return seen
    }

    deinit {
        close(self.fd)
        unlink(self.path)
    }
}

@Suite("systemd integration", .serialized)
struct SystemdTests {
    @Test("READY=1 comes only once the socket answers; the watchdog is fed; SIGTERM says STOPPING=1")
    func notifyProtocol() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let notify = try NotifySocket(path: root + "/notify.sock")
        let daemon = try DaemonProcess(
            roles: #"operator = ["self"]"#, socketGroup: nil, root: root,
            environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"]
        )
        let beforeReady = notify.wait(for: "READY=1", seconds: 30)
        #expect(beforeReady.last?.contains("READY=1") == true, "no READY=1: \(beforeReady) \(daemon.log)")
        // The moment READY=1 arrives, the socket answers.
        let health = try Client.request(daemon, "GET", "/v1/health")
        #expect(health.status == 200)
        #expect(beforeReady.last?.contains("STATUS=serving on ") == true)
        // WATCHDOG_USEC=400000: a ping at least every 200 ms.
        let pings = notify.wait(for: "WATCHDOG=1", seconds: 2)
        #expect(pings.last == "WATCHDOG=1", "no watchdog ping: \(pings)")
        kill(daemon.process.processIdentifier, SIGTERM)
        let stopping = notify.wait(for: "STOPPING=1", seconds: 10)
        #expect(stopping.last?.contains("STOPPING=1") == true, "no STOPPING=1: \(stopping)")
        #expect(daemon.stop() == 0)
    }

    @Test("without NOTIFY_SOCKET the daemon sends nothing and serves as usual")
    func noNotifySocket() throws {
        let daemon = try DaemonProcess(roles: #"operator = ["self"]"#, socketGroup: nil, environment: ["NOTIFY_SOCKET": ""])
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        #expect(!daemon.log.contains("could not be notified"))
        #expect(daemon.stop() == 0)
    }
}

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Acting as other uids needs root (CI runs as root).
let isRoot = getuid() == 0

@Suite("The daemon on its socket", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct SocketAndIdentityTests {
    static let roles = """
        director = ["uid:4001"]
        statistician = ["gid:5001"]
        "office:title-ix" = ["gid:5002"]
        """

    @Test("health answers anyone; whoami gives the kernel's uid and groups and the mapped roles")
    func identityComesFromTheKernel() throws {
        let daemon = try DaemonProcess(roles: Self.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")

        #expect(try Client.request(daemon, "GET", "/v1/health", as: Peer(uid: 4999)).status == 200)

        let director = try Client.request(daemon, "GET", "/v1/whoami", as: Peer(uid: 4001))
        #expect(director.status == 200)
        #expect(director.json["uid"] as? Int == 4001)
        #expect(director.json["roles"] as? [String] == ["director"])

        let grouped = try Client.request(daemon, "GET", "/v1/whoami", as: Peer(uid: 4002, groups: [5001, 5002]))
        #expect(grouped.json["groups"] as? [Int] == [5001, 5002])
        #expect(grouped.json["roles"] as? [String] == ["office:title-ix", "statistician"])

        let root = try Client.request(daemon, "GET", "/v1/whoami")
        #expect(root.json["roles"] as? [String] == ["operator"], "root is an operator unless mapped otherwise")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("a peer with no role, or a role the action does not allow, gets a 403 problem")
    func refusalsAreProblems() throws {
        let daemon = try DaemonProcess(roles: Self.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        for (peer, path) in [(Peer(uid: 4999), "/v1/whoami"), (Peer(uid: 4001), "/v1/admin/status")] {
            let reply = try Client.request(daemon, "GET", path, as: peer)
            #expect(reply.status == 403)
            #expect(reply.contentType.hasPrefix("application/problem+json"))
            #expect(reply.json["type"] as? String == "urn:casevault:problem:forbidden")
        }
        #expect(try Client.request(daemon, "GET", "/v1/admin/status").status == 200)
        let unknown = try Client.request(daemon, "GET", "/v1/../etc/passwd")
        #expect(unknown.status == 404)
        #expect(unknown.json["type"] as? String == "urn:casevault:problem:route-not-found")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("the socket is 0660 in a 0750 directory of the clients' group; SIGTERM removes it")
    func socketModes() throws {
        let daemon = try DaemonProcess(roles: Self.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        var info = stat()
        #expect(lstat(daemon.socket, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o660)
        #expect(info.st_gid == DaemonProcess.clientsGroup)
        #expect(lstat(daemon.root + "/run", &info) == 0)
        #expect(info.st_mode & 0o777 == 0o750)
        #expect(info.st_gid == DaemonProcess.clientsGroup)
        // Not in the clients' group: cannot even reach the socket.
        #expect(try Client.request(daemon, "GET", "/v1/health", as: Peer(uid: 4999, gid: 4999)).status == 0)
        #expect(daemon.stop() == 0, "\(daemon.log)")
        #expect(lstat(daemon.socket, &info) != 0, "the socket should be gone after SIGTERM")
    }

    @Test("a stale socket left by a crash is replaced; a path that is not our socket is refused")
    func staleAndForeignSockets() throws {
        let first = try DaemonProcess(roles: Self.roles)
        #expect(first.waitUntilServing(), "\(first.log)")
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        var info = stat()
        #expect(
            lstat(first.socket, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK, "SIGKILL leaves the socket behind")

        let second = try DaemonProcess(roles: Self.roles) { root in
            try FileManager.default.createDirectory(atPath: root + "/run", withIntermediateDirectories: false)
            chmod(root + "/run", 0o750)
            #expect(makeStaleSocket(root + "/run/casevault.sock"))
        }
        #expect(second.waitUntilServing(), "\(second.log)")
        #expect(second.stop() == 0)

        let foreign = try DaemonProcess(roles: Self.roles) { root in
            try FileManager.default.createDirectory(atPath: root + "/run", withIntermediateDirectories: false)
            chmod(root + "/run", 0o750)
            _ = FileManager.default.createFile(
                atPath: root + "/run/casevault.sock", contents: Data("not a socket".utf8))
        }
        foreign.process.waitUntilExit()
        #expect(foreign.process.terminationStatus == 3)
        #expect(foreign.log.contains("is not a socket of this user"))

        // A directory its group may write: a member could replace the socket with their own and catch
        // what clients send (a passphrase). Refused, as a directory others may write is.
        for mode: mode_t in [0o770, 0o2770, 0o757] {
            let open = try DaemonProcess(roles: Self.roles) { root in
                try FileManager.default.createDirectory(atPath: root + "/run", withIntermediateDirectories: false)
                chmod(root + "/run", mode)
            }
            if open.waitUntilServing() {
                Issue.record("the daemon serves in a socket directory of mode \(String(mode, radix: 8))")
                _ = open.stop()
                continue
            }
            open.process.waitUntilExit()
            #expect(open.process.terminationStatus == 3, "mode \(String(mode, radix: 8))")
            #expect(open.log.contains("not writable by its group or others"), "\(open.log)")
        }
    }
}

/// Binds a Unix socket at `path` and closes it without unlinking: what a crashed daemon leaves.
func makeStaleSocket(_ path: String) -> Bool {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
        for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
    }
    return withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    } == 0
}

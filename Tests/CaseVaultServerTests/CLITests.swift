import Foundation
import Testing

/// `casevaultctl` against a real daemon, as different users: output and exit codes.
@Suite("casevaultctl", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct CLITests {
    /// Runs casevaultctl as `peer`; returns its exit code and standard output.
    static func ctl(_ arguments: [String], as peer: Peer) throws -> (Int32, String) {
        let (status, output) = try peer.run(DaemonProcess.binary("casevaultctl"), arguments)
        return (status, String(decoding: output, as: UTF8.self))
    }

    @Test("whoami and status: a table or JSON; exit 77 when refused, 69 when the socket cannot be reached")
    func whoamiAndStatus() throws {
        let daemon = try DaemonProcess(roles: #"director = ["uid:4001"]"#)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let socket = ["--socket", daemon.socket]

        let (code, text) = try Self.ctl(["whoami", "--json"] + socket, as: Peer(uid: 4001))
        #expect(code == 0)
        let document = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
        #expect(document?["uid"] as? Int == 4001 && document?["roles"] as? [String] == ["director"], "\(text)")

        let (tableCode, table) = try Self.ctl(["whoami"] + socket, as: Peer(uid: 4001))
        #expect(tableCode == 0 && table.contains("roles") && table.contains("director"), "\(table)")

        #expect(try Self.ctl(["whoami"] + socket, as: Peer(uid: 4999)).0 == 77, "no role: refused")
        #expect(try Self.ctl(["status"] + socket, as: Peer(uid: 4001)).0 == 77, "a director is not an operator")
        let (statusCode, status) = try Self.ctl(["status", "--json"] + socket, as: Peer(uid: 0, gid: 0, groups: [0]))
        #expect(statusCode == 0 && status.contains(#""state":"serving""#), "\(status)")
        #expect(try Self.ctl(["status", "--socket", daemon.root + "/missing.sock"], as: Peer(uid: 4001)).0 == 69)
        #expect(try Self.ctl(["status", "--config", daemon.root + "/missing.toml"], as: Peer(uid: 4001)).0 == 78)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test(
        "daemon forget: nothing is sent without --key-file-destroyed (exit 64); a director is refused (77); the local store, one daemon, answers not-on-this-backend (exit 1)"
    )
    func forgetDaemon() throws {
        let daemon = try DaemonProcess(roles: #"director = ["uid:4001"]"#)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let socket = ["--socket", daemon.socket]
        let root = Peer(uid: 0, gid: 0, groups: [0])
        let ctl = DaemonProcess.binary("casevaultctl")
        let forget = ["daemon", "forget", "vault-b", "--key-file-destroyed"] + socket
        let unsaid = try root.run(ctl, ["daemon", "forget", "vault-b"] + socket, input: nil)
        #expect(unsaid.0 == 64 && unsaid.2.contains("--key-file-destroyed"), "\(unsaid.2)")
        #expect(try root.run(ctl, forget, input: nil).0 != 64, "the flag given, the request is sent")
        #expect(try Self.ctl(forget, as: Peer(uid: 4001)).0 == 77)
        let local = try root.run(ctl, forget, input: nil)
        #expect(local.0 == 1 && local.2.contains("not-on-this-backend"), "\(local.2)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }
}

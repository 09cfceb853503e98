import Foundation
import Testing

/// `examples/client.py`, Python's standard library alone, against the real daemon as real uids: the API
/// is HTTP/1.1 + JSON on a Unix socket, not a Swift library.
@Suite("The Python example client")
struct ExampleClientTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("examples/client.py").path

    @Test(
        "files a record and reads it back, lists cases, and exits 1 with the problem when refused, 2 without a daemon",
        .enabled(if: isRoot, "acting as other uids needs root"),
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "needs python3"))
    func pythonClient() throws {
        let daemon = try DaemonProcess(roles: AuthorizationMatrixTests.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        // A copy the other uids may read, wherever the checkout lies.
        let directory = NSTemporaryDirectory() + "/casevault-client-\(UUID().uuidString)"
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let client = directory + "/client.py"
        try FileManager.default.copyItem(atPath: Self.script, toPath: client)
        chmod(client, 0o644)
        let python = { (peer: Peer, arguments: [String]) throws -> (Int32, String, String) in
            try peer.run("/usr/bin/python3", [client, "--socket", daemon.socket] + arguments, input: nil)
        }
        let director = AuthorizationMatrixTests.peers[.director]!

        let (status, output, errors) = try python(director, ["demo"])
        #expect(status == 0, "\(output)\(errors)")
        let filed = output.split(separator: "\n").first { $0.hasPrefix("filed intake_form ") }.map {
            String($0.dropFirst("filed intake_form ".count))
        }
        let recordID = try #require(filed, "\(output)")
        #expect(output.contains("read it back: {\"dispute_category\": \"roommate\""), "\(output)")
        // The record it filed is there for the director, through curl too.
        let read = try daemon.call("GET", "/v1/records/\(recordID)", as: director, expect: 200)
        #expect(read.string("type") == "intake_form")

        let (listed, list, _) = try python(director, ["cases"])
        #expect(listed == 0 && list.contains("intake") && list.contains("intake_form 1"), "\(list)")
        let (got, content, _) = try python(director, ["get", recordID])
        #expect(got == 0 && content.contains("no safety concerns raised"), "\(content)")

        // Refused: exit 1, the problem's type and detail on standard error, nothing on standard output.
        let (refused, nothing, problem) = try python(AuthorizationMatrixTests.peers[.submitter]!, ["get", recordID])
        #expect(refused == 1 && nothing.isEmpty, "\(nothing)")
        #expect(problem.contains("403 forbidden"), "\(problem)")
        let (unknown, _, missing) = try python(director, ["get", String(repeating: "0", count: 32)])
        #expect(unknown == 1 && missing.contains("404 not-found"), "\(missing)")

        // No daemon on that socket: exit 2.
        let (unreachable, _, why) = try director.run(
            "/usr/bin/python3", [client, "--socket", directory + "/none.sock", "cases"], input: nil)
        #expect(unreachable == 2 && why.contains("cannot reach the daemon"), "\(why)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }
}

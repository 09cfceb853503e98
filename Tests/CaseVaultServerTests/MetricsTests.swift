import Foundation
import Testing

/// The operator's metrics: they count what happened, by route template and operation, and carry no id, no
/// name and no content after a case's whole life has gone through the daemon.
@Suite("Metrics", .serialized)
struct MetricsTests {
    static let peers = AuthorizationMatrixTests.peers

    /// The value of the sample `name{labels}` (labels as the exposition writes them), 0 when absent.
    static func sample(_ exposition: String, _ name: String, _ labels: String = "") -> Double {
        let prefix = labels.isEmpty ? name + " " : name + "{" + labels + "} "
        let line = exposition.split(separator: "\n").first { $0.hasPrefix(prefix) }
        return line.flatMap { Double($0.dropFirst(prefix.count)) } ?? 0
    }

    /// What the exposition must never hold: the content's marker, a participant's name, a 32-hex id.
    static func expectNothingIdentifying(_ exposition: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!exposition.contains(LeakCheck.marker), "content in the metrics", sourceLocation: sourceLocation)
        #expect(!exposition.contains("Person 1"), "a name in the metrics", sourceLocation: sourceLocation)
        #expect(
            exposition.range(of: "[0-9a-fA-F]{32}", options: .regularExpression) == nil,
            "an id in the metrics:\n\(exposition)", sourceLocation: sourceLocation)
        for category in ["sexual_harassment", "discrimination", "intent_to_harm", "title-ix", "equity"] {
            #expect(!exposition.contains(category), "\(category) in the metrics", sourceLocation: sourceLocation)
        }
    }

    static func metrics(_ vault: some VaultTransport) async throws -> String {
        let reply = try await vault.call("GET", "/v1/metrics", as: Self.peers[.operator]!, expect: 200)
        #expect(reply.contentType.hasPrefix("text/plain; version=0.0.4"))
        return String(decoding: reply.body, as: UTF8.self)
    }

    static func scenario(_ vault: some VaultTransport) async throws {
        // A case's life: filings of every type, an attachment, reads, a refused read, shreds, a hold.
        let fixture = try await AuthorizationMatrixTests.fixture(vault)
        let director = Self.peers[.director]!
        try await vault.call("GET", "/v1/records/\(fixture.intake)", as: director, expect: 200)
        try await vault.call("GET", "/v1/records/\(fixture.note)", as: director, expect: 403)
        try await vault.call("GET", "/v1/cases?limit=5", as: director, expect: 200)
        let before = try await Self.metrics(vault)
        Self.expectNothingIdentifying(before)

        // Each filing, read and refusal is counted under its route template and its operation.
        for _ in 0..<3 {
            try await vault.file(fixture.caseA, Bodies.intake, as: director)
        }
        try await vault.file(fixture.caseA, Bodies.intake, as: Self.peers[.submitter]!, expect: 403)
        try await vault.call("GET", "/v1/records/\(fixture.intake)", as: director, expect: 200)
        let after = try await Self.metrics(vault)
        Self.expectNothingIdentifying(after)
        let delta = { (name: String, labels: String) in
            Self.sample(after, name, labels) - Self.sample(before, name, labels)
        }
        #expect(delta("casevault_operations_total", #"operation="put",outcome="done""#) == 3)
        #expect(delta("casevault_operations_total", #"operation="put",outcome="refused""#) == 1)
        #expect(delta("casevault_operations_total", #"operation="get",outcome="done""#) == 1)
        #expect(delta("casevault_requests_total", #"route="POST /v1/cases/{case_id}/records",status="201""#) == 3)
        #expect(delta("casevault_requests_total", #"route="POST /v1/cases/{case_id}/records",status="403""#) == 1)
        #expect(
            Self.sample(after, "casevault_requests_total", #"route="GET /v1/records/{record_id}",status="403""#) >= 1)
        #expect(delta("casevault_request_duration_seconds_count", #"route="POST /v1/cases/{case_id}/records""#) == 4)
        #expect(Self.sample(after, "casevault_operations_total", #"operation="shred",outcome="done""#) >= 1)
        // The state.
        #expect(after.contains("\ncasevault_sealed 0"))
        #expect(after.contains("\ncasevault_audit_writable 1"))
        #expect(Self.sample(after, "casevault_live_records") >= 10)
        let bytes = Self.sample(after, "casevault_store_bytes")
        #expect(bytes > 0 && bytes.truncatingRemainder(dividingBy: 1_048_576) == 0, "whole MiB only: \(bytes)")
        #expect(Self.sample(after, "casevault_audit_entries") > Self.sample(before, "casevault_audit_entries"))
        // Only the operator reads them.
        for who in [AuthorizationMatrixTests.Who.director, .mediator, .statistician, .nobody] {
            try await vault.call("GET", "/v1/metrics", as: Self.peers[who]!, expect: 403)
        }
    }

    @Test("counts by route template and operation, the daemon's state, and no id, name or content, in process")
    func inProcess() async throws {
        try await InProcess.withVault(roles: AuthorizationMatrixTests.roles, extra: AuthorizationMatrixTests.offices) {
            vault in try await Self.scenario(vault)
        }
    }

    @Test(
        "over the socket, and casevaultctl metrics --textfile replaces DIR/casevault.prom whole for node_exporter",
        .enabled(if: isRoot, "acting as other uids needs root"))
    func overTheSocket() async throws {
        let daemon = try DaemonProcess(roles: AuthorizationMatrixTests.roles, extra: AuthorizationMatrixTests.offices)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        try await Self.scenario(OverTheSocket(daemon: daemon))

        let directory = NSTemporaryDirectory() + "/casevault-textfile-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ctl = DaemonProcess.binary("casevaultctl")
        for _ in 0..<2 {
            let (status, output) = try Peer.root.run(
                ctl, ["metrics", "--socket", daemon.socket, "--textfile", directory])
            #expect(status == 0, "\(String(decoding: output, as: UTF8.self))")
        }
        let file = directory + "/casevault.prom"
        let written = try String(contentsOfFile: file, encoding: .utf8)
        #expect(written.contains("casevault_requests_total{route=\"GET /v1/metrics\",status=\"200\"}"))
        Self.expectNothingIdentifying(written)
        let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
        #expect(mode == 0o644)
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: directory) == ["casevault.prom"],
            "a temporary file left")
        // Standard output without --textfile; a directory that is not there: an error that says so.
        let (printed, text) = try Peer.root.run(ctl, ["metrics", "--socket", daemon.socket])
        #expect(
            printed == 0 && String(decoding: text, as: UTF8.self).contains("# TYPE casevault_requests_total counter"))
        let (failed, _, why) = try Peer.root.run(
            ctl, ["metrics", "--socket", daemon.socket, "--textfile", directory + "/none"], input: nil)
        #expect(failed != 0 && why.contains("cannot write in"), "\(why)")
        // Not an operator: refused with the problem, nothing written.
        let (refused, _, problem) = try Self.peers[.director]!.run(
            ctl, ["metrics", "--socket", daemon.socket], input: nil)
        #expect(refused == 77 && problem.hasPrefix("casevaultctl: forbidden: "), "\(problem)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
        LeakCheck.record(log: daemon.log)
    }
}

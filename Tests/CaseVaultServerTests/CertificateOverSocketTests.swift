import Foundation
import Testing

/// Every shred yields a signed certificate naming who authorised it, and `casevaultctl` verifies it offline.
@Suite("Destruction certificates over the socket", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct CertificateOverSocketTests {
    static let director = Peer(uid: 4001)
    static let mediator = Peer(uid: 4002)

    @Test(
        "a shred on request, a final agreement and a close each yield a certificate that verifies offline and holds no content"
    )
    func everyShredIsCertified() throws {
        let daemon = try DaemonProcess(roles: LifecycleOverSocketTests.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        // A shred on request, by the director.
        let first = try LifecycleOverSocketTests.agreedCase(daemon)
        let intake = try daemon.file(first, Bodies.intake, as: Self.director).string("record_id")
        try daemon.call(
            "DELETE", "/v1/records/\(intake)", as: Self.director, body: #"{"reason": "participant_request"}"#,
            expect: 200)
        // A final agreement, by the mediator.
        let notes = try (0..<2).map { _ in try daemon.file(first, Bodies.note, as: Self.mediator).string("record_id") }
        try daemon.file(first, Bodies.finalAgreement(), as: Self.mediator)
        // A close without agreement, by the director.
        let second = try LifecycleOverSocketTests.agreedCase(daemon)
        let note = try daemon.file(second, Bodies.note, as: Self.mediator).string("record_id")
        try daemon.call(
            "POST", "/v1/cases/\(second)/close", as: Self.director, body: #"{"outcome": "withdrawn"}"#, expect: 200)

        let listing = try daemon.call("GET", "/v1/certificates", as: Self.director, expect: 200)
        #expect(
            !String(decoding: listing.body, as: UTF8.self).contains(LeakCheck.marker), "a certificate holds content")
        let documents = (listing.json["certificates"] as? [[String: Any]]) ?? []
        let certificates = documents.compactMap { $0["certificate"] as? [String: Any] }
        #expect(certificates.count == 3)
        func find(_ method: String) -> [String: Any] { certificates.first { $0["method"] as? String == method } ?? [:] }
        func ids(_ certificate: [String: Any]) -> Set<String> {
            Set((certificate["records"] as? [[String: Any]] ?? []).compactMap { $0["record_id"] as? String })
        }
        let request = find("shred_request")
        #expect(ids(request) == [intake] && request["reason"] as? String == "participant_request")
        #expect((request["authorised_by"] as? [String: Any])?["uid"] as? Int == 4001)
        #expect((request["authorised_by"] as? [String: Any])?["role"] as? String == "director")
        let final = find("final_agreement")
        #expect(ids(final) == Set(notes) && final["case_id"] as? String == first)
        #expect((final["authorised_by"] as? [String: Any])?["role"] as? String == "mediator")
        #expect(ids(find("case_closed")) == [note])

        // Offline: fetch one document and the key, stop the daemon, verify; then alter one byte.
        let key = try CLITests.ctl(["pubkey", "--socket", daemon.socket], as: Self.director).1.trimmingCharacters(
            in: .whitespacesAndNewlines)
        #expect(key.count == 64)
        let id = final["certificate_id"] as? String ?? ""
        let (fetched, document) = try CLITests.ctl(
            ["certificate", "get", id, "--socket", daemon.socket], as: Self.director)
        #expect(fetched == 0)
        #expect(daemon.stop() == 0, "\(daemon.log)")
        let file = daemon.root + "/certificate.json"
        try document.write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o644)
        #expect(try CLITests.ctl(["certificate", "verify", file, "--pubkey", key], as: Self.director).0 == 0)
        let altered = document.replacingOccurrences(of: "final_agreement", with: "final_agreemenu")
        try altered.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try CLITests.ctl(["certificate", "verify", file, "--pubkey", key], as: Self.director).0 == 1)
    }
}

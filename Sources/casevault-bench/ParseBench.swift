import CaseVaultConfiguration
import CaseVaultCore
import CaseVaultCrypto
import Foundation

extension Bench {
    /// What parsing a record's content costs (`JSONValue.parse`, the hand-written `JSONParser`), beside
    /// Foundation's `JSONSerialization` on the same bytes (its parse alone: the parse it replaced also
    /// converted Foundation's objects value by value): the bench's own 4 KiB content, one long string, and
    /// a record of 40 text fields with escapes and non-ASCII text, an object and an array.
    func parseFigures() {
        let text = String(repeating: "x", count: self.size - 11)
        var fields = (0..<40).map {
            #""field\#($0)":"Some words of a mediation record, with an accent é and a \"quoted\" phrase.""#
        }
        fields.append(#""acknowledgements":{"confidentiality":true,"no_recording":true},"marks":[1,2,3,4.5,-6e3]"#)
        let documents = [
            ("one string", Array(#"{"text":"\#(text)"}"#.utf8)),
            ("40 fields", Array("{\(fields.joined(separator: ","))}".utf8)),
        ]
        var parts: [String] = []
        for (label, bytes) in documents {
            let ours = Self.microseconds { _ = JSONValue.parse(bytes) }
            let foundation = Self.microseconds {
                _ = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
            }
            parts.append(
                String(
                    format: "%@ (%d bytes) %.1f us (JSONSerialization alone %.1f us)", label, bytes.count, ours,
                    foundation))
        }
        print("parse    record content: " + parts.joined(separator: "; "))
        self.bodyFigure()
        self.certificateFigures()
    }

    /// A PUT's body read as the route reads it (`readBody`): the depth check on the bytes, the parse, and the
    /// content's span in the body; each passes over the content's long string.
    func bodyFigure() {
        let body = self.putBody
        let read = Self.microseconds { _ = Self.readBody(body) }
        print(String(format: "parse    a PUT's body of %d bytes as the route reads it: %.1f us", body.count, read))
        Figures.record("parse_put_body_us", read)
    }

    /// The body `scripts/bench-socket.sh` sends: an intake form of about `size` bytes.
    var putBody: [UInt8] {
        let screening = String(repeating: "x", count: max(1, self.size - 96))
        return Array(
            #"{"type": "intake_form", "content": {"dispute_category": "roommate", "screening": "\#(screening)"}}"#.utf8)
    }

    /// `body` read as `Request.jsonObject` and `Routes.fileRecord` read it (not the check of unknown fields,
    /// the copy out of the request's buffer and its wipes, which are the server's): its type, the parsed
    /// content and the content's bytes as sent.
    static func readBody(_ body: [UInt8]) -> (type: RecordType, content: JSONValue, bytes: ArraySlice<UInt8>) {
        guard !body.withUnsafeBytes({ JSONValue.nestsDeeper(than: Self.maxJSONDepth, $0) }),
            let document = JSONValue.parse(body),
            let type = try? RecordType.parse(try document.requireText("type")),
            let content = try? document.requireObject("content"),
            let bytes = JSONValue.uniqueRawMember("content", of: body, parsed: document)
        else { fatalError("the bench's body did not parse") }
        return (type, content, bytes)
    }

    private static let maxJSONDepth = ServerConfiguration(socketPath: "").maxJSONDepth

    /// What a destruction certificate of a hundred records costs, the size of a sweep's certificate of a
    /// case: its bytes as `DestructionCertificate` writes them by hand, the same from `JSONEncoder` with
    /// sorted keys (what it wrote before), and the Ed25519 signature over them.
    private func certificateFigures() {
        let records = (0..<100).map { _ in
            (RecordID(bytes: Random.bytes(count: RecordID.byteCount)), RecordType.evaluation)
        }
        let certificate = DestructionCertificate(
            id: Hex.encode(Random.bytes(count: 16)), caseID: CaseID(bytes: Random.bytes(count: CaseID.byteCount)),
            issuedAt: "2026-01-01T00:00:00.000Z",
            order: ShredOrder(method: .retentionSweep, authority: .daemon, reason: "retention_expired"),
            records: records)
        let key = try! SigningKey(seed: SecureBytes.random(count: 32))
        let body = certificate.document(signedWith: { _ in [] })
        let written = Self.microseconds { _ = certificate.document(signedWith: { _ in [] }) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let encoded = Self.microseconds { _ = try? encoder.encode(certificate) }
        let signed = Self.microseconds { _ = key.signature(for: body) }
        print(
            String(
                format:
                    "certify  a certificate of 100 records (%d bytes): written %.1f us (JSONEncoder alone %.1f us), signed %.1f us",
                body.count, written, encoded, signed))
    }

    /// The mean time of `body` over enough calls to take about a quarter of a second, after a warm-up.
    private static func microseconds(_ body: () -> Void) -> Double {
        for _ in 0..<100 { body() }
        var calls = 0
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .milliseconds(250) {
            for _ in 0..<100 { body() }
            calls += 100
        }
        let elapsed = ContinuousClock.now - start
        return (Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12)
            / Double(calls)
    }
}

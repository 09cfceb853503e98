import CaseVaultCore
import CaseVaultCrypto
import Foundation
import Testing

@Suite("Destruction certificates")
struct CertificateTests {
    static func signed() throws -> (document: [UInt8], publicKey: [UInt8]) {
        let key = try SigningKey(seed: SecureBytes.random(count: 32))
        let certificate = DestructionCertificate(
            id: String(repeating: "c", count: 32), caseID: try CaseID(String(repeating: "a", count: 32)),
            issuedAt: "2026-11-23T01:00:00.000Z",
            order: ShredOrder(method: .finalAgreement, authority: Authority(uid: 4002, role: "mediator")),
            records: [(try RecordID(String(repeating: "b", count: 32)), .sessionNote)]
        )
        return (certificate.document(signedWith: key.signature(for:)), key.publicKey)
    }

    @Test("a certificate verifies offline with the public key, and not with another key")
    func verifies() throws {
        let (document, publicKey) = try Self.signed()
        let certificate = try #require(DestructionCertificate.verify(document: document, publicKey: publicKey))
        #expect(certificate.method == "final_agreement" && certificate.authorisedBy.uid == 4002)
        #expect(certificate.records.map(\.type) == ["session_note"])
        let other = try SigningKey(seed: SecureBytes.random(count: 32)).publicKey
        #expect(DestructionCertificate.verify(document: document, publicKey: other) == nil)
    }

    @Test("changing any byte of a certificate makes verification fail")
    func everyByteCounts() throws {
        let (document, publicKey) = try Self.signed()
        for index in document.indices {
            for flip: UInt8 in [0x01, 0x20] {
                var altered = document
                altered[index] ^= flip
                #expect(
                    DestructionCertificate.verify(document: altered, publicKey: publicKey) == nil,
                    "byte \(index) ^ \(flip)")
            }
        }
        #expect(DestructionCertificate.verify(document: Array(document.dropLast()), publicKey: publicKey) == nil)
        #expect(DestructionCertificate.verify(document: document + Array(" ".utf8), publicKey: publicKey) == nil)
    }

    @Test(
        "the signed bytes are those JSONEncoder writes with sorted keys, for every version and every optional",
        arguments: [
            (ShredOrder(method: .retentionSweep, authority: .daemon, reason: "retention_expired"), nil),
            (ShredOrder(method: .request, authority: Authority(uid: 4002, role: "mediator"), reason: "policy"), nil),
            (ShredOrder(method: .recovery, authority: Authority(uid: 0, role: "a\"b/c\n\u{1}é")), nil),
            (
                ShredOrder(method: .finalAgreement, authority: Authority(uid: 4002, role: "mediator")),
                DestructionCertificate.Erasure(epoch: 7, completeBy: "2026-11-24T01:00:00.000Z")
            ),
            (
                ShredOrder(method: .request, authority: .daemon, reason: "filed_in_error"),
                DestructionCertificate.Erasure(epoch: 8, completes: "c1", completedAt: "2026-11-25T01:00:00.000Z")
            ),
            (
                ShredOrder(method: .caseClosed, authority: .daemon),
                DestructionCertificate.Erasure(
                    epoch: UInt64.max, completes: "c2", completedAt: "2026-11-25T01:00:00.000Z",
                    attested: ["host-b", "host-a"])
            ),
            (
                ShredOrder(method: .request, authority: Authority(uid: 7, role: "coordinator"), reason: "policy"),
                {
                    // Every member at once, which no initialiser makes: the order of all of them.
                    var erasure = DestructionCertificate.Erasure(epoch: 9, completeBy: "2026-11-24T01:00:00.000Z")
                    erasure.completes = "c3"
                    erasure.completedAt = "2026-11-25T01:00:00.000Z"
                    erasure.attested = ["host-a"]
                    return erasure
                }()
            ),
        ] as [(ShredOrder, DestructionCertificate.Erasure?)]
    )
    func canonicalBytes(order: ShredOrder, erasure: DestructionCertificate.Erasure?) throws {
        for count in [0, 1, 100] {
            let records = (0..<count).map { _ in
                (RecordID(bytes: Random.bytes(count: RecordID.byteCount)), RecordType.allCases.randomElement()!)
            }
            let certificate = DestructionCertificate(
                id: Hex.encode(Random.bytes(count: 16)), caseID: CaseID(bytes: Random.bytes(count: CaseID.byteCount)),
                issuedAt: "2026-11-23T01:00:00.000Z", order: order, records: records, erasure: erasure)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let expected =
                Array(#"{"certificate":"#.utf8) + [UInt8](try encoder.encode(certificate))
                + Array(#","signature":""}"#.utf8)
            // Byte for byte; the message shows both as text, which reads as JSON where two arrays of bytes
            // would not.
            let written = certificate.document(signedWith: { _ in [] })
            let same = written == expected
            #expect(
                same,
                "\(count) records: \(String(decoding: written, as: UTF8.self)) against \(String(decoding: expected, as: UTF8.self))"
            )
        }
    }
}

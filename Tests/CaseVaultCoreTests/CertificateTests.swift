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
}

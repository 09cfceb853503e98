import CaseVaultCrypto
import Testing

@Suite("Known-answer tests from published vectors")
struct KnownAnswerTests {
    @Test("XChaCha20-Poly1305 matches draft-irtf-cfrg-xchacha-03 §A.3.1")
    func xchachaDraftVector() throws {
        let plaintext = Array(
            "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it."
                .utf8
        )
        let ad = [UInt8](hex: "50515253c0c1c2c3c4c5c6c7")
        let key = try SecureBytes(
            copying: [UInt8](hex: "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"))
        let nonce = [UInt8](hex: "404142434445464748494a4b4c4d4e4f5051525354555657")
        let expected = [UInt8](
            hex: """
                bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
                2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e
                c0875924c1c7987947deafd8780acf49
                """
        )
        let sealed = try AEAD.encrypt(plaintext, key: key, nonce: nonce, associatedData: ad)
        #expect(sealed == expected)
        #expect(try AEAD.decrypt(expected, key: key, nonce: nonce, associatedData: ad) == plaintext)
    }

    @Test("BLAKE2b-512 of \"abc\" matches RFC 7693 Appendix A")
    func blake2bRFC7693() {
        let expected = [UInt8](
            hex: """
                ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d17d87c5392aab792dc252d5de4533cc95
                18d38aa8dbf1925ab92386edd4009923
                """
        )
        #expect(Hash.blake2b(Array("abc".utf8), length: 64) == expected)
        // Hashed in two parts (as the audit chain hashes the previous entry's hash and the JSON), the same.
        #expect(Hash.blake2b(Array("a".utf8), then: Array("bc".utf8), length: 64) == expected)
        #expect(Hash.blake2b([UInt8](), then: Array("abc".utf8), length: 64) == expected)
        #expect(Hash.blake2b(Array("abc".utf8), then: [UInt8](), length: 64) == expected)
    }

    @Test("Ed25519 matches RFC 8032 §7.1 test 1")
    func ed25519RFC8032Test1() throws {
        let seed = try SecureBytes(
            copying: [UInt8](hex: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
        let key = try SigningKey(seed: seed)
        #expect(key.publicKey == [UInt8](hex: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"))
        let expected = [UInt8](
            hex: """
                e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b
                d25bf5f0595bbe24655141438e7a100b
                """
        )
        #expect(key.signature(for: [UInt8]()) == expected)
        #expect(SigningKey.isValidSignature(expected, for: [UInt8](), publicKey: key.publicKey))
    }
}

import CaseVaultCrypto
import Testing

@Suite("Sealed boxes: what only one key pair opens")
struct SealedBoxTests {
    @Test("a pair made from a secret key has RFC 7748 §6.1's public key")
    func publicKeyFromSecret() throws {
        let secret = try SecureBytes(
            copying: [UInt8](hex: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
        let pair = try SealedBox.KeyPair(secretKey: secret)
        #expect(pair.publicKey == [UInt8](hex: "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
        #expect(throws: CryptoError.invalidLength(what: "X25519 secret key", expected: 32, actual: 31)) {
            try SealedBox.KeyPair(secretKey: SecureBytes.random(count: 31))
        }
    }

    @Test("a box opens with its pair alone, and not at all once the pair's secret half is wiped")
    func opensWithItsPairAlone() throws {
        let pair = try SealedBox.KeyPair()
        let other = try SealedBox.KeyPair()
        let message = Random.bytes(count: 32)
        let sealed = try SealedBox.seal(message, to: pair.publicKey)
        #expect(sealed.count == message.count + SealedBox.overhead)
        #expect(try SealedBox.open(sealed, with: pair).constantTimeEquals(SecureBytes(copying: message)))
        // Two boxes of one message differ: each has its own ephemeral key.
        #expect(try SealedBox.seal(message, to: pair.publicKey) != sealed)

        #expect(throws: CryptoError.authenticationFailed) { try SealedBox.open(sealed, with: other) }
        var altered = sealed
        altered[altered.count - 1] ^= 1
        #expect(throws: CryptoError.authenticationFailed) { try SealedBox.open(altered, with: pair) }
        #expect(throws: CryptoError.authenticationFailed) {
            try SealedBox.open(Array(sealed.prefix(SealedBox.overhead)), with: pair)
        }
        #expect(throws: CryptoError.invalidLength(what: "X25519 public key", expected: 32, actual: 31)) {
            try SealedBox.seal(message, to: Array(pair.publicKey.dropLast()))
        }

        pair.wipe()
        #expect(throws: CryptoError.authenticationFailed) { try SealedBox.open(sealed, with: pair) }
    }
}

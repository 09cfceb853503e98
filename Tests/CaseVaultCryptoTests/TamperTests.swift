import CaseVaultCrypto
import Testing

@Suite("Tampering is detected")
struct TamperTests {
    let key = SecureBytes.random(count: 32)
    let ad = Array("record-1|case-1|session_note|v1".utf8)
    let message = Array("the mediator's note".utf8)

    @Test("flipping any byte of a sealed message makes it fail to open")
    func aeadDetectsEveryFlippedByte() throws {
        let sealed = AEAD.seal(self.message, key: self.key, associatedData: self.ad)
        #expect(try AEAD.open(sealed, key: self.key, associatedData: self.ad) == self.message)
        for position in sealed.indices {
            var altered = sealed
            altered[position] ^= 0x01
            #expect(throws: CryptoError.authenticationFailed) {
                try AEAD.open(altered, key: self.key, associatedData: self.ad)
            }
        }
    }

    @Test("a sealed message opened with other associated data, another key, or cut short fails")
    func aeadBindsAssociatedDataAndKey() {
        let sealed = AEAD.seal(self.message, key: self.key, associatedData: self.ad)
        #expect(throws: CryptoError.authenticationFailed) {
            try AEAD.open(sealed, key: self.key, associatedData: Array("record-2|case-1|session_note|v1".utf8))
        }
        #expect(throws: CryptoError.authenticationFailed) {
            try AEAD.open(sealed, key: SecureBytes.random(count: 32), associatedData: self.ad)
        }
        #expect(throws: CryptoError.authenticationFailed) {
            try AEAD.open(Array(sealed.dropLast()), key: self.key, associatedData: self.ad)
        }
        #expect(throws: CryptoError.authenticationFailed) {
            try AEAD.open(Array(sealed.prefix(10)), key: self.key, associatedData: self.ad)
        }
    }

    @Test("an empty message seals and opens, and its tag still binds it")
    func aeadEmptyMessage() throws {
        let sealed = AEAD.seal([UInt8](), key: self.key, associatedData: self.ad)
        #expect(sealed.count == AEAD.overhead)
        #expect(try AEAD.open(sealed, key: self.key, associatedData: self.ad) == [])
        var altered = sealed
        altered[AEAD.nonceByteCount] ^= 0x01
        #expect(throws: CryptoError.authenticationFailed) {
            try AEAD.open(altered, key: self.key, associatedData: self.ad)
        }
    }

    @Test("opening into secure memory: the exact size only, and the same checks as open")
    func aeadOpenInto() throws {
        let dataKey = SecureBytes.random(count: 32)
        let sealed = AEAD.seal(dataKey, key: self.key, associatedData: self.ad)
        let opened = try SecureBytes(count: 32) { secret in
            try AEAD.open(sealed, key: self.key, associatedData: self.ad, into: secret)
        }
        #expect(opened.constantTimeEquals(dataKey))
        for count in [31, 33] {
            #expect(throws: CryptoError.authenticationFailed) {
                _ = try SecureBytes(count: count) { secret in
                    try AEAD.open(sealed, key: self.key, associatedData: self.ad, into: secret)
                }
            }
        }
        var altered = sealed
        altered[sealed.count - 1] ^= 0x80
        #expect(throws: CryptoError.authenticationFailed) {
            _ = try SecureBytes(count: 32) { secret in
                try AEAD.open(altered, key: self.key, associatedData: self.ad, into: secret)
            }
        }
        #expect(throws: CryptoError.authenticationFailed) {
            _ = try SecureBytes(count: 32) { secret in
                try AEAD.open(sealed, key: self.key, associatedData: [], into: secret)
            }
        }
    }

    @Test("two seals of one message differ (random nonces)")
    func aeadNoncesAreFresh() {
        #expect(
            AEAD.seal(self.message, key: self.key, associatedData: self.ad)
                != AEAD.seal(self.message, key: self.key, associatedData: self.ad))
    }

    @Test("a signature fails for a changed message or a changed signature byte")
    func signatureTampering() throws {
        let signer = try SigningKey(seed: SecureBytes.random(count: 32))
        let signature = signer.signature(for: self.message)
        #expect(SigningKey.isValidSignature(signature, for: self.message, publicKey: signer.publicKey))
        var altered = signature
        altered[10] ^= 0x04
        #expect(!SigningKey.isValidSignature(altered, for: self.message, publicKey: signer.publicKey))
        #expect(!SigningKey.isValidSignature(signature, for: self.message + [0], publicKey: signer.publicKey))
    }
}

@Suite("Secretstream for large data")
struct SecretStreamTests {
    func encrypt(_ chunks: [[UInt8]], key: SecureBytes) throws -> (header: [UInt8], chunks: [[UInt8]]) {
        let encryptor = try SecretStream.Encryptor(key: key)
        let sealed = chunks.enumerated().map { index, chunk in encryptor.push(chunk, isFinal: index == chunks.count - 1)
        }
        return (encryptor.header, sealed)
    }

    @Test("chunks round-trip and the stream finishes on its final tag")
    func roundTrip() throws {
        let key = SecureBytes.random(count: 32)
        let plain = (0..<5).map { n in [UInt8](repeating: UInt8(n), count: 65536) }
        let (header, sealed) = try self.encrypt(plain, key: key)
        let decryptor = try SecretStream.Decryptor(key: key, header: header)
        #expect(try sealed.map { try decryptor.pull($0) } == plain)
        try decryptor.finish()
    }

    @Test("a stream without its final chunk is refused")
    func truncatedStreamIsRefused() throws {
        let key = SecureBytes.random(count: 32)
        let (header, sealed) = try self.encrypt([[1, 2, 3], [4, 5, 6], [7, 8, 9]], key: key)
        let decryptor = try SecretStream.Decryptor(key: key, header: header)
        for chunk in sealed.dropLast() {
            _ = try decryptor.pull(chunk)
        }
        #expect(throws: CryptoError.streamTruncated) { try decryptor.finish() }
    }

    @Test("reordered or altered chunks are refused")
    func reorderedChunksAreRefused() throws {
        let key = SecureBytes.random(count: 32)
        let (header, sealed) = try self.encrypt([[1, 2, 3], [4, 5, 6], [7, 8, 9]], key: key)
        let reordered = try SecretStream.Decryptor(key: key, header: header)
        #expect(throws: CryptoError.authenticationFailed) { try reordered.pull(sealed[1]) }
        let altered = try SecretStream.Decryptor(key: key, header: header)
        var chunk = sealed[0]
        chunk[chunk.count - 1] ^= 1
        #expect(throws: CryptoError.authenticationFailed) { try altered.pull(chunk) }
    }
}

@Suite("Keys and key derivation")
struct KeyTests {
    @Test("crypto_kdf subkeys are deterministic and separated by context and id")
    func kdfSeparation() throws {
        let master = SecureBytes.random(count: 32)
        let a = try KeyDerivation.deriveKey(from: master, context: "cv-kek01", id: 1)
        let again = try KeyDerivation.deriveKey(from: master, context: "cv-kek01", id: 1)
        let otherID = try KeyDerivation.deriveKey(from: master, context: "cv-kek01", id: 2)
        let otherContext = try KeyDerivation.deriveKey(from: master, context: "cv-audit", id: 1)
        #expect(a.constantTimeEquals(again))
        #expect(!a.constantTimeEquals(otherID))
        #expect(!a.constantTimeEquals(otherContext))
    }

    @Test("Argon2id is deterministic for one passphrase and salt, and differs with either")
    func argon2id() throws {
        let limits = PasswordHash.Limits(operations: 1, memoryBytes: 8 << 20)
        let salt = [UInt8](repeating: 1, count: 16)
        let a = try PasswordHash.deriveKey(passphrase: Array("correct horse".utf8), salt: salt, limits: limits)
        let b = try PasswordHash.deriveKey(passphrase: Array("correct horse".utf8), salt: salt, limits: limits)
        let c = try PasswordHash.deriveKey(passphrase: Array("correct horsf".utf8), salt: salt, limits: limits)
        let d = try PasswordHash.deriveKey(
            passphrase: Array("correct horse".utf8), salt: [UInt8](repeating: 2, count: 16), limits: limits)
        #expect(a.constantTimeEquals(b))
        #expect(!a.constantTimeEquals(c))
        #expect(!a.constantTimeEquals(d))
        #expect(throws: CryptoError.self) {
            try PasswordHash.deriveKey(passphrase: [UInt8](), salt: [1, 2], limits: limits)
        }
    }

    @Test("secure bytes never print their contents, and compare in constant time")
    func secureBytesAreRedacted() throws {
        let key = try SecureBytes(copying: [UInt8](repeating: 0x41, count: 32))
        #expect("\(key)" == "SecureBytes(32 bytes, redacted)")
        #expect(!String(reflecting: key).contains("41"))
        #expect(key.constantTimeEquals(try SecureBytes(copying: [UInt8](repeating: 0x41, count: 32))))
        #expect(!key.constantTimeEquals(try SecureBytes(copying: [UInt8](repeating: 0x42, count: 32))))
        #expect(Memory.constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!Memory.constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!Memory.constantTimeEquals([1, 2, 3], [1, 2]))
    }

    @Test("wrong key and nonce lengths are refused with a length error")
    func lengthsAreChecked() throws {
        let short = SecureBytes.random(count: 16)
        #expect(throws: CryptoError.invalidLength(what: "AEAD key", expected: 32, actual: 16)) {
            try AEAD.encrypt([1], key: short, nonce: [UInt8](repeating: 0, count: 24), associatedData: [UInt8]())
        }
        #expect(throws: CryptoError.self) {
            try AEAD.encrypt([1], key: SecureBytes.random(count: 32), nonce: [1, 2, 3], associatedData: [UInt8]())
        }
        #expect(throws: CryptoError.self) { try SigningKey(seed: short) }
    }
}

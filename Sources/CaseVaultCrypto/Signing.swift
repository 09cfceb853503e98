internal import CSodium

/// An Ed25519 signing key. The secret half lives in secure memory.
public final class SigningKey: Sendable {
    public static let seedByteCount = 32
    public static let signatureByteCount = 64

    private let secretKey: SecureBytes
    /// The 32-byte public key.
    public let publicKey: [UInt8]

    /// The key pair determined by a 32-byte seed (RFC 8032's "private key").
    public init(seed: SecureBytes) throws(CryptoError) {
        Sodium.ready()
        guard seed.count == Self.seedByteCount else {
            throw .invalidLength(what: "Ed25519 seed", expected: Self.seedByteCount, actual: seed.count)
        }
        var publicKey = [UInt8](repeating: 0, count: Int(crypto_sign_PUBLICKEYBYTES))
        do {
            self.secretKey = try SecureBytes(count: Int(crypto_sign_SECRETKEYBYTES)) { secret in
                seed.withUnsafeBytes { seedBytes in
                    _ = crypto_sign_seed_keypair(
                        &publicKey, secret.u8,
                        seedBytes.u8
                    )
                }
            }
        } catch {
            throw .secureAllocationFailed
        }
        self.publicKey = publicKey
    }

    /// Zeroes the secret half now (sealing); later signatures are worthless.
    public func wipe() {
        self.secretKey.wipe()
    }

    /// A detached 64-byte signature of `message`.
    public func signature(for message: some CryptoBytes) -> [UInt8] {
        message.withUnsafeBytes { messageBytes in
            self.secretKey.withUnsafeBytes { secret in
                var signature = [UInt8](repeating: 0, count: Self.signatureByteCount)
                _ = crypto_sign_detached(
                    &signature, nil,
                    messageBytes.u8, UInt64(messageBytes.count),
                    secret.u8
                )
                return signature
            }
        }
    }

    /// Whether `signature` is a valid Ed25519 signature of `message` under `publicKey`.
    public static func isValidSignature(
        _ signature: some CryptoBytes,
        for message: some CryptoBytes,
        publicKey: some CryptoBytes
    ) -> Bool {
        Sodium.ready()
        return signature.withUnsafeBytes { sig in
            message.withUnsafeBytes { messageBytes in
                publicKey.withUnsafeBytes { pk in
                    guard sig.count == Self.signatureByteCount, pk.count == Int(crypto_sign_PUBLICKEYBYTES) else {
                        return false
                    }
                    return crypto_sign_verify_detached(
                        sig.u8,
                        messageBytes.u8, UInt64(messageBytes.count),
                        pk.u8
                    ) == 0
                }
            }
        }
    }
}

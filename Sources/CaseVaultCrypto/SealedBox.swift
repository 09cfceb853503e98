internal import CSodium

/// Anonymous public-key encryption (libsodium's sealed boxes: X25519, XSalsa20-Poly1305, an ephemeral
/// sender key): a message only the holder of a key pair's secret half can open. Once that half is
/// destroyed, every box ever sealed to the pair opens for no one, wherever copies of the box lie.
public enum SealedBox {
    public static let publicKeyByteCount = Int(crypto_box_PUBLICKEYBYTES)
    /// Bytes a sealed box adds to its message: the ephemeral public key and the tag.
    public static let overhead = Int(crypto_box_sealbytes())

    /// An X25519 key pair: the secret half in secure memory, read-only once made.
    public final class KeyPair: Sendable {
        public let publicKey: [UInt8]
        private let secretKey: SecureBytes

        /// A new pair from the system's CSPRNG.
        public init() throws(CryptoError) {
            Sodium.ready()
            var publicKey = [UInt8](repeating: 0, count: SealedBox.publicKeyByteCount)
            do {
                self.secretKey = try SecureBytes(count: Int(crypto_box_SECRETKEYBYTES)) { secret in
                    _ = crypto_box_keypair(&publicKey, secret.u8)
                }
            } catch {
                throw .secureAllocationFailed
            }
            self.publicKey = publicKey
        }

        /// The pair whose secret half is `secretKey` (32 bytes), its public half computed from it.
        public init(secretKey: SecureBytes) throws(CryptoError) {
            Sodium.ready()
            guard secretKey.count == Int(crypto_box_SECRETKEYBYTES) else {
                throw .invalidLength(
                    what: "X25519 secret key", expected: Int(crypto_box_SECRETKEYBYTES), actual: secretKey.count)
            }
            var publicKey = [UInt8](repeating: 0, count: SealedBox.publicKeyByteCount)
            secretKey.withUnsafeBytes { secret in
                _ = crypto_scalarmult_base(&publicKey, secret.u8)
            }
            self.publicKey = publicKey
            self.secretKey = secretKey
        }

        /// The secret half, for the one file that keeps it.
        package var secret: SecureBytes { self.secretKey }

        /// Zeroes the secret half now; boxes sealed to the pair no longer open in this process.
        public func wipe() {
            self.secretKey.wipe()
        }
    }

    /// Seals `message` to the holder of `publicKey`'s secret half; `authenticationFailed` for a public key
    /// libsodium refuses (one of small order, to which nothing can be sealed).
    public static func seal(_ message: some CryptoBytes, to publicKey: [UInt8]) throws(CryptoError) -> [UInt8] {
        Sodium.ready()
        guard publicKey.count == Self.publicKeyByteCount else {
            throw .invalidLength(what: "X25519 public key", expected: Self.publicKeyByteCount, actual: publicKey.count)
        }
        let sealed = message.withUnsafeBytes { message -> [UInt8]? in
            var sealed = [UInt8](repeating: 0, count: message.count + Self.overhead)
            return crypto_box_seal(&sealed, message.u8, UInt64(message.count), publicKey) == 0 ? sealed : nil
        }
        // libsodium refuses a public key of small order: a box sealed to it would open for no one.
        guard let sealed else { throw .authenticationFailed }
        return sealed
    }

    /// Opens a box sealed to `pair` into secure memory (its message is a key); throws
    /// `authenticationFailed` for a box sealed to another pair, altered or cut short.
    public static func open(_ sealed: some CryptoBytes, with pair: KeyPair) throws(CryptoError) -> SecureBytes {
        Sodium.ready()
        let count = sealed.withUnsafeBytes { $0.count }
        guard count > Self.overhead else { throw .authenticationFailed }
        var opened = false
        let message: SecureBytes
        do {
            message = try SecureBytes(count: count - Self.overhead) { output in
                sealed.withUnsafeBytes { sealed in
                    pair.secret.withUnsafeBytes { secret in
                        opened =
                            crypto_box_seal_open(
                                output.u8, sealed.u8, UInt64(sealed.count), pair.publicKey, secret.u8) == 0
                    }
                }
            }
        } catch {
            throw .secureAllocationFailed
        }
        guard opened else {
            message.wipe()
            throw .authenticationFailed
        }
        return message
    }
}

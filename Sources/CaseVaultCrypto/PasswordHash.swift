internal import CSodium

/// Argon2id (libsodium's crypto_pwhash, version 1.3): a key from a passphrase and a 16-byte salt.
public enum PasswordHash {
    public static let saltByteCount = 16

    /// Cost parameters. `interactive` suits tests; `moderate` suits unsealing a vault.
    public struct Limits: Sendable, Equatable {
        public var operations: UInt64
        public var memoryBytes: Int

        public init(operations: UInt64, memoryBytes: Int) {
            self.operations = operations
            self.memoryBytes = memoryBytes
        }

        public static let interactive = Limits(operations: 2, memoryBytes: 64 << 20)
        public static let moderate = Limits(operations: 3, memoryBytes: 256 << 20)
        /// The least cost a root key is wrapped under: libsodium's interactive limits.
        public static let floor = interactive

        /// Whether both costs reach `floor`.
        public var meetsFloor: Bool {
            self.operations >= Self.floor.operations && self.memoryBytes >= Self.floor.memoryBytes
        }
    }

    /// Derives a `length`-byte key from `passphrase` and `salt` with Argon2id.
    public static func deriveKey(
        passphrase: some CryptoBytes,
        salt: [UInt8],
        limits: Limits,
        length: Int = 32
    ) throws(CryptoError) -> SecureBytes {
        Sodium.ready()
        guard salt.count == Self.saltByteCount else {
            throw .invalidLength(what: "Argon2id salt", expected: Self.saltByteCount, actual: salt.count)
        }
        var failed = false
        let key: SecureBytes
        do {
            key = try SecureBytes(count: length) { output in
                passphrase.withUnsafeBytes { password in
                    let status = crypto_pwhash(
                        output.u8, UInt64(length),
                        password.cchar, UInt64(password.count),
                        salt, limits.operations, limits.memoryBytes, crypto_pwhash_ALG_ARGON2ID13
                    )
                    failed = status != 0
                }
            }
        } catch {
            throw .secureAllocationFailed
        }
        guard !failed else { throw .passwordHashFailed }
        return key
    }
}

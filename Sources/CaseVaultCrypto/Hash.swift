internal import CSodium

/// BLAKE2b (libsodium's crypto_generichash), optionally keyed.
public enum Hash {
    /// The BLAKE2b digest of `input`, `length` bytes long (16 to 64).
    public static func blake2b(_ input: some CryptoBytes, length: Int = 32) -> [UInt8] {
        Sodium.ready()
        precondition((16...64).contains(length), "BLAKE2b output must be 16 to 64 bytes")
        return input.withUnsafeBytes { message in
            var digest = [UInt8](repeating: 0, count: length)
            _ = crypto_generichash(
                &digest, length, message.u8, UInt64(message.count), nil, 0
            )
            return digest
        }
    }

    /// Keyed BLAKE2b (a MAC), `length` bytes long.
    public static func blake2b(_ input: some CryptoBytes, key: SecureBytes, length: Int = 32) -> [UInt8] {
        Sodium.ready()
        precondition((16...64).contains(length), "BLAKE2b output must be 16 to 64 bytes")
        return input.withUnsafeBytes { message in
            key.withUnsafeBytes { keyBytes in
                var digest = [UInt8](repeating: 0, count: length)
                _ = crypto_generichash(
                    &digest, length, message.u8, UInt64(message.count),
                    keyBytes.u8, keyBytes.count
                )
                return digest
            }
        }
    }
}

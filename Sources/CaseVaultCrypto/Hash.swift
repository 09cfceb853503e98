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

    /// The BLAKE2b digest of `first` followed by `second`, without joining them: an audit entry's hash
    /// covers the previous entry's and its JSON, which lies in the middle of its batch's bytes.
    public static func blake2b(_ first: some CryptoBytes, then second: some CryptoBytes, length: Int = 32) -> [UInt8] {
        Sodium.ready()
        precondition((16...64).contains(length), "BLAKE2b output must be 16 to 64 bytes")
        // The state is a 64-byte-aligned struct that Swift sees as opaque: its size comes from libsodium.
        return withUnsafeTemporaryAllocation(byteCount: crypto_generichash_statebytes(), alignment: 64) { memory in
            let state = OpaquePointer(memory.baseAddress!)
            var digest = [UInt8](repeating: 0, count: length)
            _ = crypto_generichash_init(state, nil, 0, length)
            first.withUnsafeBytes { _ = crypto_generichash_update(state, $0.u8, UInt64($0.count)) }
            second.withUnsafeBytes { _ = crypto_generichash_update(state, $0.u8, UInt64($0.count)) }
            _ = crypto_generichash_final(state, &digest, length)
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

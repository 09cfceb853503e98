internal import CSodium

/// Randomness from libsodium's CSPRNG (getrandom on Linux).
public enum Random {
    /// `count` random bytes in ordinary memory: for nonces, identifiers and overwrite patterns, not keys.
    public static func bytes(count: Int) -> [UInt8] {
        Sodium.ready()
        var result = [UInt8](repeating: 0, count: count)
        if count > 0 {
            result.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, count) }
        }
        return result
    }

    /// Fills `buffer` with random bytes.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        Sodium.ready()
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        randombytes_buf(base, buffer.count)
    }
}

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

/// A fast source of overwrite patterns: the ChaCha20 keystream under a random key that is never stored,
/// a fresh nonce per call. As unpredictable as `Random.bytes` for overwriting shredded regions, without a
/// system call and a kernel ChaCha round per region (which dominated a sweep's overwrite step).
public final class OverwriteStream: @unchecked Sendable {
    private let key = SecureBytes.random(count: Int(crypto_stream_chacha20_ietf_KEYBYTES), ephemeral: true)
    private var counter: UInt64 = 0

    public init() {}

    /// Fills `buffer` with keystream. Not thread-safe: one stream per writer.
    public func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        self.counter += 1
        var nonce = [UInt8](repeating: 0, count: Int(crypto_stream_chacha20_ietf_NONCEBYTES))
        withUnsafeBytes(of: self.counter.littleEndian) { counter in
            for index in 0..<counter.count { nonce[index] = counter[index] }
        }
        self.key.withUnsafeBytes { key in
            _ = crypto_stream_chacha20_ietf(
                base.assumingMemoryBound(to: UInt8.self), UInt64(buffer.count), nonce,
                key.baseAddress!.assumingMemoryBound(to: UInt8.self)
            )
        }
    }
}

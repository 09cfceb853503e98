internal import CSodium

/// Helpers for non-key buffers that held secrets (plaintext, wrapped keys).
public enum Memory {
    /// Zeroes `bytes` in a way the compiler will not optimise away.
    public static func zero(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            sodium_memzero(base, buffer.count)
        }
    }

    /// Constant-time equality of two byte strings of the same length; `false` when lengths differ.
    public static func constantTimeEquals(_ lhs: some CryptoBytes, _ rhs: some CryptoBytes) -> Bool {
        Sodium.ready()
        return lhs.withUnsafeBytes { left in
            rhs.withUnsafeBytes { right in
                guard left.count == right.count else { return false }
                guard left.count > 0 else { return true }
                return sodium_memcmp(left.baseAddress!, right.baseAddress!, left.count) == 0
            }
        }
    }
}

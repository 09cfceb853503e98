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

/// Raw regions from `sodium_malloc` (locked against swap, guarded, zeroed when freed) for a buffer type
/// outside this layer that lets its memory be provided (NIO's `ByteBufferAllocator`), so that bytes which
/// must leave through it (recovery shares in an answer) never lie in the ordinary heap.
public enum LockedMemory {
    /// `size` bytes (at least 1, rounded up to 16). NIO cannot take a failure here, so running out of
    /// locked memory stops the process with a message rather than a crash without one.
    public static func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
        Sodium.ready()
        guard let region = sodium_malloc((max(1, size) + 15) & ~15) else {
            fatalError("out of locked memory for \(size) bytes (RLIMIT_MEMLOCK; LimitMEMLOCK= in the unit)")
        }
        return region
    }

    /// A new region of `newSize` bytes holding the first bytes of `pointer` (freed, so zeroed).
    public static func reallocate(_ pointer: UnsafeMutableRawPointer?, oldSize: Int, newSize: Int)
        -> UnsafeMutableRawPointer?
    {
        guard let fresh = Self.allocate(newSize) else { return nil }
        if let pointer {
            fresh.copyMemory(from: pointer, byteCount: min(oldSize, newSize))
            sodium_free(pointer)
        }
        return fresh
    }

    /// Zeroes and frees a region from `allocate`.
    public static func free(_ pointer: UnsafeMutableRawPointer) {
        sodium_free(pointer)
    }
}

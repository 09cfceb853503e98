internal import CSodium

/// Secret bytes (keys) in memory from `sodium_malloc`: guarded by no-access pages, locked against
/// swapping where the system allows, read-only once initialised, and zeroed and freed on release.
///
/// The bytes are reachable only through `withUnsafeBytes`; `description` never shows them.
/// Equality is constant-time.
public final class SecureBytes: @unchecked Sendable {
    // Sendable: the region is written only inside `init` and is read-only (mprotect) afterwards.
    private let pointer: UnsafeMutableRawPointer
    /// The number of secret bytes.
    public let count: Int

    /// Allocates `count` bytes and lets `initializer` fill them; the region is made read-only afterwards.
    public init(
        count: Int,
        initializer: (UnsafeMutableRawBufferPointer) throws -> Void
    ) throws {
        precondition(count > 0, "SecureBytes needs at least one byte")
        Sodium.ready()
        guard let pointer = sodium_malloc(count) else {
            throw CryptoError.secureAllocationFailed
        }
        sodium_memzero(pointer, count)
        do {
            try initializer(UnsafeMutableRawBufferPointer(start: pointer, count: count))
        } catch {
            sodium_free(pointer)
            throw error
        }
        sodium_mprotect_readonly(pointer)
        self.pointer = pointer
        self.count = count
    }

    /// `count` bytes from the system's CSPRNG.
    public static func random(count: Int) -> SecureBytes {
        // Allocation of a few bytes only fails when the process is out of address space.
        try! SecureBytes(count: count) { buffer in
            randombytes_buf(buffer.baseAddress!, buffer.count)
        }
    }

    /// Copies `bytes` into secure memory. The caller remains responsible for zeroing its own copy.
    public convenience init(copying bytes: some CryptoBytes) throws {
        let count = bytes.withUnsafeBytes { $0.count }
        try self.init(count: count) { destination in
            bytes.withUnsafeBytes { source in
                destination.copyMemory(from: source)
            }
        }
    }

    deinit {
        // sodium_free makes the region writable, checks its canary, zeroes it, unlocks it and frees it.
        sodium_free(self.pointer)
    }

    /// Calls `body` with the secret bytes. Do not let the pointer escape.
    public func withUnsafeBytes<Result>(
        _ body: (UnsafeRawBufferPointer) throws -> Result
    ) rethrows -> Result {
        try body(UnsafeRawBufferPointer(start: self.pointer, count: self.count))
    }

    /// Constant-time comparison of two secrets.
    public func constantTimeEquals(_ other: SecureBytes) -> Bool {
        guard self.count == other.count else { return false }
        return sodium_memcmp(self.pointer, other.pointer, self.count) == 0
    }
}

extension SecureBytes: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "SecureBytes(\(self.count) bytes, redacted)" }
    public var debugDescription: String { self.description }
}

/// Byte containers the crypto layer accepts. Kept small on purpose: `[UInt8]` and `ArraySlice<UInt8>`.
public protocol CryptoBytes {
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: CryptoBytes where Element == UInt8 {}
extension ArraySlice: CryptoBytes where Element == UInt8 {}
extension UnsafeRawBufferPointer: CryptoBytes {
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(self)
    }
}

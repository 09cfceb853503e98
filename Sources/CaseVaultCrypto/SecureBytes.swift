internal import CSodium

/// Secret bytes (keys) in memory from `sodium_malloc`: guarded by no-access pages, locked against
/// swapping where the system allows, and zeroed on release.
///
/// Two lifetimes, two placements:
/// - long-lived keys (root, epoch and signing keys) get a region of their own that is made read-only
///   (mprotect) once initialised;
/// - ephemeral keys (one record's data key, alive for one request) take a 32-byte cell of a shared,
///   locked `sodium_malloc` arena, because a region of their own costs an mmap, mprotect and mlock per
///   request (about 35 µs here, measured by `make bench`'s get figure).
///
/// The bytes are reachable only through `withUnsafeBytes`; `description` never shows them.
/// Equality is constant-time.
public final class SecureBytes: @unchecked Sendable {
    // Sendable: the bytes are written only inside `init` and never after.
    private let pointer: UnsafeMutableRawPointer
    private let arenaCell: Int?
    /// The number of secret bytes.
    public let count: Int

    /// Allocates `count` bytes and lets `initializer` fill them. With `ephemeral` (and 32 bytes), the bytes
    /// live in the shared key arena; otherwise in a region of their own, read-only afterwards.
    public init(
        count: Int,
        ephemeral: Bool = false,
        initializer: (UnsafeMutableRawBufferPointer) throws -> Void
    ) throws {
        precondition(count > 0, "SecureBytes needs at least one byte")
        Sodium.ready()
        if ephemeral, count == KeyArena.cellSize, let cell = KeyArena.shared.take() {
            let pointer = KeyArena.shared.pointer(cell)
            do {
                try initializer(UnsafeMutableRawBufferPointer(start: pointer, count: count))
            } catch {
                KeyArena.shared.give(cell)
                throw error
            }
            self.pointer = pointer
            self.arenaCell = cell
            self.count = count
            return
        }
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
        self.arenaCell = nil
        self.count = count
    }

    /// `count` bytes from the system's CSPRNG.
    public static func random(count: Int, ephemeral: Bool = false) -> SecureBytes {
        // Allocation of a few bytes only fails when the process is out of address space.
        try! SecureBytes(count: count, ephemeral: ephemeral) { buffer in
            randombytes_buf(buffer.baseAddress!, buffer.count)
        }
    }

    /// Copies `bytes` into secure memory. The caller remains responsible for zeroing its own copy.
    public convenience init(copying bytes: some CryptoBytes, ephemeral: Bool = false) throws {
        let count = bytes.withUnsafeBytes { $0.count }
        try self.init(count: count, ephemeral: ephemeral) { destination in
            bytes.withUnsafeBytes { source in
                destination.copyMemory(from: source)
            }
        }
    }

    /// Lets `fill` write up to `capacity` bytes into locked scratch memory and return how many it wrote,
    /// and keeps exactly those (the scratch is zeroed and freed): for a secret whose length is known only
    /// once it is read, such as a line typed at a terminal. `nil` when `fill` wrote nothing.
    public static func collecting(capacity: Int, _ fill: (UnsafeMutableRawBufferPointer) throws -> Int) throws
        -> SecureBytes?
    {
        precondition(capacity > 0, "a scratch region needs at least one byte")
        Sodium.ready()
        guard let scratch = sodium_malloc(capacity) else {
            throw CryptoError.secureAllocationFailed
        }
        // sodium_free zeroes the region before it frees it.
        defer { sodium_free(scratch) }
        let buffer = UnsafeMutableRawBufferPointer(start: scratch, count: capacity)
        let count = min(capacity, max(0, try fill(buffer)))
        guard count > 0 else { return nil }
        return try SecureBytes(count: count) { destination in
            destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
    }

    deinit {
        if let cell = self.arenaCell {
            // The arena zeroes the cell before anyone can take it again.
            KeyArena.shared.give(cell)
        } else {
            // sodium_free makes the region writable, checks its canary, zeroes it, unlocks it and frees it.
            sodium_free(self.pointer)
        }
    }

    /// Calls `body` with the secret bytes. Do not let the pointer escape.
    public func withUnsafeBytes<Result>(
        _ body: (UnsafeRawBufferPointer) throws -> Result
    ) rethrows -> Result {
        try body(UnsafeRawBufferPointer(start: self.pointer, count: self.count))
    }

    /// Zeroes the bytes now, before release: for keys that must be gone at once (sealing the vault) while
    /// something may still hold a reference. Later reads see zeros, so whatever used the key fails to
    /// authenticate instead of crashing.
    public func wipe() {
        if self.arenaCell != nil {
            sodium_memzero(self.pointer, self.count)
            return
        }
        sodium_mprotect_readwrite(self.pointer)
        sodium_memzero(self.pointer, self.count)
        sodium_mprotect_readonly(self.pointer)
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
extension SecureBytes: CryptoBytes {}
extension ArraySlice: CryptoBytes where Element == UInt8 {}
extension UnsafeRawBufferPointer: CryptoBytes {
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(self)
    }
}

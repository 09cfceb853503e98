// libsodium's headers mark their pointer parameters nonnull, and an empty Swift buffer has no base
// address; these accessors give every buffer a typed, non-nil pointer (one static byte when empty).

nonisolated(unsafe) private let emptyBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)

extension UnsafeRawBufferPointer {
    var u8: UnsafePointer<UInt8> {
        UnsafePointer((self.baseAddress ?? UnsafeRawPointer(emptyBuffer)).assumingMemoryBound(to: UInt8.self))
    }

    var cchar: UnsafePointer<CChar> {
        (self.baseAddress ?? UnsafeRawPointer(emptyBuffer)).assumingMemoryBound(to: CChar.self)
    }
}

extension UnsafeMutableRawBufferPointer {
    var u8: UnsafeMutablePointer<UInt8> {
        (self.baseAddress ?? UnsafeMutableRawPointer(emptyBuffer)).assumingMemoryBound(to: UInt8.self)
    }
}

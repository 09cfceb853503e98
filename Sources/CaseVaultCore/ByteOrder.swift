/// Fixed-width integers as bytes, in one place for every file format: key slots and their associated
/// data are little-endian; the wrapped root key, backup files, backup keys and the audit chain's signed
/// messages are big-endian. Inlinable, so that each caller gets a specialized loop: as plain generics
/// across modules they cost a metadata lookup and an array per call, on every read's key slot.
extension FixedWidthInteger {
    @inlinable
    package var littleEndianBytes: [UInt8] {
        withUnsafeBytes(of: self.littleEndian) { Array($0) }
    }

    @inlinable
    package var bigEndianBytes: [UInt8] {
        withUnsafeBytes(of: self.bigEndian) { Array($0) }
    }

    /// The integer whose little-endian bytes are `bytes` (at most `bitWidth / 8` of them).
    @inlinable
    package init(littleEndianBytes bytes: some Collection<UInt8>) {
        var value: Self = 0
        var shift = 0
        for byte in bytes {
            value |= Self(truncatingIfNeeded: byte) << shift
            shift += 8
        }
        self = value
    }

    /// The integer whose big-endian bytes are `bytes` (at most `bitWidth / 8` of them).
    @inlinable
    package init(bigEndianBytes bytes: some Collection<UInt8>) {
        var value: Self = 0
        for byte in bytes {
            value = value << 8 | Self(truncatingIfNeeded: byte)
        }
        self = value
    }
}

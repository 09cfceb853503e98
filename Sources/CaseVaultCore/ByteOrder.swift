/// Fixed-width integers as bytes, in one place for every file format: key slots and their associated
/// data are little-endian; the wrapped root key, backup files, backup keys and the audit chain's signed
/// messages are big-endian.
extension FixedWidthInteger {
    package var littleEndianBytes: [UInt8] {
        withUnsafeBytes(of: self.littleEndian) { Array($0) }
    }

    package var bigEndianBytes: [UInt8] {
        withUnsafeBytes(of: self.bigEndian) { Array($0) }
    }

    /// The integer whose little-endian bytes are `bytes` (at most `bitWidth / 8` of them).
    package init(littleEndianBytes bytes: some Collection<UInt8>) {
        self = bytes.reversed().reduce(0) { $0 << 8 | Self(truncatingIfNeeded: $1) }
    }

    /// The integer whose big-endian bytes are `bytes` (at most `bitWidth / 8` of them).
    package init(bigEndianBytes bytes: some Collection<UInt8>) {
        self = bytes.reduce(0) { $0 << 8 | Self(truncatingIfNeeded: $1) }
    }
}

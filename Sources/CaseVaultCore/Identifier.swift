/// Opaque identifiers: 32 lowercase hexadecimal characters (128 random bits).
///
/// The form is checked on every way in, so an identifier can never carry a path separator, a NUL or
/// anything a client chose.
public struct Identifier<Tag>: Hashable, Sendable, CustomStringConvertible, Comparable {
    public static var byteCount: Int { 16 }
    public let rawValue: String
    /// The 16 bytes the text spells, read once when the id is made: every get binds its record's and
    /// case's ids into associated data four times, and decoding the text each time was a tenth of it.
    private let high: UInt64
    private let low: UInt64

    /// Parses `text`; throws `invalid-identifier` for anything but 32 lowercase hex characters.
    public init(_ text: String) throws(CaseVaultError) {
        // Swift's native strings are contiguous; a bridged one is copied first.
        let words =
            text.utf8.withContiguousStorageIfAvailable({ Self.parse($0) })
            ?? Array(text.utf8).withUnsafeBufferPointer { Self.parse($0) }
        guard let words else {
            throw CaseVaultError(.invalidIdentifier, "an id is 32 lowercase hexadecimal characters")
        }
        self.rawValue = text
        (self.high, self.low) = words
    }

    /// The identifier whose raw bytes are `bytes` (16 bytes).
    public init(bytes: [UInt8]) {
        precondition(bytes.count == Self.byteCount, "an identifier is 16 bytes")
        self.rawValue = Hex.encode(bytes)
        self.high = bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        self.low = bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The 16 raw bytes.
    public var bytes: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.byteCount)
        self.appendBytes(to: &bytes)
        return bytes
    }

    /// Appends the 16 raw bytes to `bytes`, without an array of their own.
    public func appendBytes(to bytes: inout [UInt8]) {
        withUnsafeBytes(of: self.high.bigEndian) { bytes += $0 }
        withUnsafeBytes(of: self.low.bigEndian) { bytes += $0 }
    }

    /// The two words 32 lowercase hexadecimal digits spell, or `nil` for any other text.
    private static func parse(_ utf8: UnsafeBufferPointer<UInt8>) -> (high: UInt64, low: UInt64)? {
        guard utf8.count == 2 * Self.byteCount else { return nil }
        var words: (UInt64, UInt64) = (0, 0)
        for index in 0..<(2 * Self.byteCount) {
            let digit = Hex.value(utf8[index])
            guard digit < 0x10 else { return nil }
            if index < Self.byteCount {
                words.0 = words.0 << 4 | UInt64(digit)
            } else {
                words.1 = words.1 << 4 | UInt64(digit)
            }
        }
        return words
    }

    public var description: String { self.rawValue }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

public enum RecordTag {}
public enum CaseTag {}

public typealias RecordID = Identifier<RecordTag>
public typealias CaseID = Identifier<CaseTag>
public enum HoldTag {}
public typealias HoldID = Identifier<HoldTag>

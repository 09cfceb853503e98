/// Opaque identifiers: 32 lowercase hexadecimal characters (128 random bits).
///
/// The form is checked on every way in, so an identifier can never carry a path separator, a NUL or
/// anything a client chose.
public struct Identifier<Tag>: Hashable, Sendable, CustomStringConvertible, Comparable {
    public static var byteCount: Int { 16 }
    public let rawValue: String

    /// Parses `text`; throws `invalid-identifier` for anything but 32 lowercase hex characters.
    public init(_ text: String) throws(CaseVaultError) {
        let utf8 = text.utf8
        guard utf8.count == 2 * Self.byteCount,
            utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) })
        else {
            throw CaseVaultError(.invalidIdentifier, "an id is 32 lowercase hexadecimal characters")
        }
        self.rawValue = text
    }

    /// The identifier whose raw bytes are `bytes` (16 bytes).
    public init(bytes: [UInt8]) {
        precondition(bytes.count == Self.byteCount, "an identifier is 16 bytes")
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(2 * Self.byteCount)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        self.rawValue = String(decoding: text, as: UTF8.self)
    }

    /// The 16 raw bytes.
    public var bytes: [UInt8] {
        var result = [UInt8]()
        result.reserveCapacity(Self.byteCount)
        var high: UInt8 = 0
        for (index, character) in self.rawValue.utf8.enumerated() {
            let nibble = character <= UInt8(ascii: "9") ? character - UInt8(ascii: "0") : character - UInt8(ascii: "a") + 10
            if index % 2 == 0 {
                high = nibble << 4
            } else {
                result.append(high | nibble)
            }
        }
        return result
    }

    public var description: String { self.rawValue }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

public enum RecordTag {}
public enum CaseTag {}

public typealias RecordID = Identifier<RecordTag>
public typealias CaseID = Identifier<CaseTag>

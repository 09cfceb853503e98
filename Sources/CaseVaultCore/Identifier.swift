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
            utf8.allSatisfy({
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                    || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0)
            })
        else {
            throw CaseVaultError(.invalidIdentifier, "an id is 32 lowercase hexadecimal characters")
        }
        self.rawValue = text
    }

    /// The identifier whose raw bytes are `bytes` (16 bytes).
    public init(bytes: [UInt8]) {
        precondition(bytes.count == Self.byteCount, "an identifier is 16 bytes")
        self.rawValue = Hex.encode(bytes)
    }

    /// The 16 raw bytes.
    public var bytes: [UInt8] {
        Hex.decode(self.rawValue) ?? []
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

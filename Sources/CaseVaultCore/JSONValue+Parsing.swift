/// The JSON parser behind `JSONValue.parse`: RFC 8259, straight from UTF-8 bytes to `JSONValue`.
///
/// Written by hand rather than through Foundation: `JSONSerialization` builds Foundation objects that are
/// then converted value by value, and a profile of durable puts found that parse and conversion to be a
/// third of a put's CPU; no package on this machine parses JSON into a value of our own. It accepts
/// what `JSONSerialization` accepted (`JSONParsingTests` compares the two on edge cases and random
/// documents), except:
/// - a trailing comma in an array or object, which RFC 8259 does not allow, is refused, except by
///   `parseStored` (content an earlier build stored as its client sent it);
/// - only UTF-8 is read (`JSONSerialization` also read UTF-16 and UTF-32, with or without a byte-order
///   mark), and a member whose value is refused is refused even when a later one of its name follows;
/// - an integer past `Int64` is a number (`JSONSerialization`'s unsigned 64-bit value became a negative
///   integer), and one within it stays exact (it made a 19-digit negative one a `Double`);
/// - a string or a name keeps a leading byte-order mark (`JSONSerialization` dropped it);
/// - a decimal is read exactly, as `Double` reads it (`JSONSerialization` read some of them a few units in
///   the last place off).
/// Like it, it skips a byte-order mark before the document, keeps the last of two members of one name,
/// and refuses nesting deeper than 512.
struct JSONParser: ~Copyable {
    private let bytes: UnsafeRawBufferPointer
    private let stored: Bool
    private var index = 0
    private var depth = 0
    /// With `stored`: numbers out of range read so far and not since replaced by a later member of their
    /// name; the document is refused unless none is left.
    private var unreplacedOutOfRange = 0

    static let maxDepth = 512

    private init(_ bytes: UnsafeRawBufferPointer, stored: Bool) {
        self.bytes = bytes
        self.stored = stored
    }

    /// The document in `bytes`, or `nil` when they are not exactly one JSON value (whitespace around it).
    /// With `stored`, content a build before this parser stored as its client sent it, it is read as that
    /// build's parser (Foundation's) read it when it validated the content: a comma may also end an array's
    /// items or an object's members, a byte-order mark that begins a string or follows an escape in it is
    /// dropped, and a number out of `Double`'s range is taken (as null) when a later member of the same name
    /// replaces the member it is in, since Foundation checked numbers only after it merged such members.
    static func parse(_ bytes: UnsafeRawBufferPointer, stored: Bool = false) -> JSONValue? {
        var parser = JSONParser(bytes, stored: stored)
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF {
            parser.index = 3
        }
        guard let value = parser.value() else { return nil }
        parser.skipWhitespace()
        return parser.index == bytes.count && parser.unreplacedOutOfRange == 0 ? value : nil
    }

    private mutating func skipWhitespace() {
        while self.index < self.bytes.count {
            switch self.bytes[self.index] {
            case 0x20, 0x09, 0x0A, 0x0D: self.index += 1
            default: return
            }
        }
    }

    private mutating func value() -> JSONValue? {
        self.skipWhitespace()
        guard self.index < self.bytes.count else { return nil }
        switch self.bytes[self.index] {
        case UInt8(ascii: "{"): return self.object()
        case UInt8(ascii: "["): return self.array()
        case UInt8(ascii: "\""): return self.string().map { .string($0) }
        case UInt8(ascii: "t"): return self.literal("true", .bool(true))
        case UInt8(ascii: "f"): return self.literal("false", .bool(false))
        case UInt8(ascii: "n"): return self.literal("null", .null)
        default: return self.number()
        }
    }

    private mutating func literal(_ word: StaticString, _ value: JSONValue) -> JSONValue? {
        let count = word.utf8CodeUnitCount
        guard self.index + count <= self.bytes.count else { return nil }
        for offset in 0..<count where self.bytes[self.index + offset] != word.utf8Start[offset] {
            return nil
        }
        self.index += count
        return value
    }

    private mutating func object() -> JSONValue? {
        guard self.enter() else { return nil }
        defer { self.depth -= 1 }
        self.index += 1
        var members: [String: JSONValue] = [:]
        // With `stored`: how many numbers out of range each member's value holds.
        var outOfRange: [String: Int] = [:]
        while true {
            self.skipWhitespace()
            // An empty object ends here; after a comma, only stored content may (a trailing comma).
            if members.isEmpty || self.stored, self.index < self.bytes.count,
                self.bytes[self.index] == UInt8(ascii: "}")
            {
                self.index += 1
                return .object(members)
            }
            guard self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "\""),
                let name = self.string()
            else { return nil }
            self.skipWhitespace()
            guard self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: ":") else { return nil }
            self.index += 1
            let before = self.unreplacedOutOfRange
            guard let member = self.value() else { return nil }
            if self.stored {
                self.unreplacedOutOfRange -= outOfRange[name] ?? 0
                outOfRange[name] = self.unreplacedOutOfRange - before
            }
            members[name] = member
            self.skipWhitespace()
            guard self.index < self.bytes.count else { return nil }
            switch self.bytes[self.index] {
            case UInt8(ascii: ","): self.index += 1
            case UInt8(ascii: "}"):
                self.index += 1
                return .object(members)
            default: return nil
            }
        }
    }

    private mutating func array() -> JSONValue? {
        guard self.enter() else { return nil }
        defer { self.depth -= 1 }
        self.index += 1
        var items: [JSONValue] = []
        while true {
            self.skipWhitespace()
            // An empty array ends here; after a comma, only stored content may (a trailing comma).
            if items.isEmpty || self.stored, self.index < self.bytes.count,
                self.bytes[self.index] == UInt8(ascii: "]")
            {
                self.index += 1
                return .array(items)
            }
            guard let item = self.value() else { return nil }
            items.append(item)
            self.skipWhitespace()
            guard self.index < self.bytes.count else { return nil }
            switch self.bytes[self.index] {
            case UInt8(ascii: ","): self.index += 1
            case UInt8(ascii: "]"):
                self.index += 1
                return .array(items)
            default: return nil
            }
        }
    }

    /// One level deeper, unless that passes `maxDepth`.
    private mutating func enter() -> Bool {
        self.depth += 1
        if self.depth > Self.maxDepth {
            self.depth -= 1
            return false
        }
        return true
    }

    /// The string literal at `index` (its opening quote): valid UTF-8 only, no control character, only
    /// the escapes RFC 8259 names, surrogates only in pairs.
    private mutating func string() -> String? {
        let start = self.index
        // Locals rather than `self.bytes` in the loop, which runs over every byte of every string.
        let bytes = self.bytes.assumingMemoryBound(to: UInt8.self)
        let count = bytes.count
        var cursor = start + 1
        var escaped = false
        guard let base = bytes.baseAddress else { return nil }
        while cursor < count {
            cursor = JSONScan.stringStop(base, from: cursor, to: count)
            guard cursor < count else { break }
            let byte = bytes[cursor]
            if byte == UInt8(ascii: "\"") { break }
            if byte < 0x20 { return nil }
            escaped = true
            cursor += 2
        }
        guard cursor < count else { return nil }
        self.index = cursor + 1
        if self.stored {
            return Self.withoutMarks(UnsafeBufferPointer(rebasing: bytes[start...cursor]))
        }
        guard escaped else {
            return String(validating: UnsafeBufferPointer(rebasing: bytes[(start + 1)..<cursor]), as: UTF8.self)
        }
        return Self.decode(UnsafeRawBufferPointer(rebasing: self.bytes[start...cursor]))
    }

    /// The string literal `literal` (quotes included) decoded, its escapes with it.
    private static func decode(_ literal: UnsafeRawBufferPointer) -> String? {
        guard let length = JSONValue.decodeString(literal, into: nil) else { return nil }
        return withUnsafeTemporaryAllocation(byteCount: max(length, 1), alignment: 1) { output -> String? in
            let decoded = UnsafeMutableRawBufferPointer(rebasing: output[0..<length])
            guard JSONValue.decodeString(literal, into: decoded) == length else { return nil }
            return String(validating: UnsafeRawBufferPointer(decoded), as: UTF8.self)
        }
    }

    /// The string literal `literal` as Foundation's parser read it: one byte-order mark (raw, not escaped)
    /// at the start of the text or right after an escape dropped.
    private static func withoutMarks(_ literal: UnsafeBufferPointer<UInt8>) -> String? {
        var kept: [UInt8] = []
        kept.reserveCapacity(literal.count)
        var index = 0
        var stretchStarts = false
        while index < literal.count {
            if stretchStarts, literal.count - index >= 3, literal[index] == 0xEF, literal[index + 1] == 0xBB,
                literal[index + 2] == 0xBF
            {
                // One mark only: a second one right after it is text.
                index += 3
                stretchStarts = false
                continue
            }
            let byte = literal[index]
            let length: Int
            if index == 0 {
                length = 1
            } else if byte == UInt8(ascii: "\\"), index + 1 < literal.count {
                length = literal[index + 1] == UInt8(ascii: "u") ? 6 : 2
            } else {
                length = 1
            }
            let end = min(index + length, literal.count)
            kept.append(contentsOf: literal[index..<end])
            stretchStarts = index == 0 || length > 1
            index = end
        }
        return kept.withUnsafeBytes { Self.decode($0) }
    }

    /// A number as RFC 8259 writes it: an integer that fits `Int64` stays exact; any other number is a
    /// `Double`, refused when it is out of range; a whole one up to 2^53 is an integer, as JSON Schema
    /// counts it.
    private mutating func number() -> JSONValue? {
        let start = self.index
        var cursor = start
        func digits() -> Int {
            let first = cursor
            while cursor < self.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self.bytes[cursor]) {
                cursor += 1
            }
            return cursor - first
        }
        if cursor < self.bytes.count, self.bytes[cursor] == UInt8(ascii: "-") { cursor += 1 }
        let integerStart = cursor
        let integerDigits = digits()
        guard integerDigits > 0, integerDigits == 1 || self.bytes[integerStart] != UInt8(ascii: "0") else { return nil }
        var whole = true
        if cursor < self.bytes.count, self.bytes[cursor] == UInt8(ascii: ".") {
            cursor += 1
            guard digits() > 0 else { return nil }
            whole = false
        }
        if cursor < self.bytes.count, self.bytes[cursor] | 0x20 == UInt8(ascii: "e") {
            cursor += 1
            if cursor < self.bytes.count,
                self.bytes[cursor] == UInt8(ascii: "+") || self.bytes[cursor] == UInt8(ascii: "-")
            {
                cursor += 1
            }
            guard digits() > 0 else { return nil }
            whole = false
        }
        self.index = cursor
        let text = UnsafeRawBufferPointer(rebasing: self.bytes[start..<cursor])
        if whole, let integer = Self.int64(text) {
            return .integer(integer)
        }
        guard let value = Double(String(decoding: text, as: UTF8.self)), value.isFinite else {
            guard self.stored else { return nil }
            self.unreplacedOutOfRange += 1
            return .null
        }
        if value.rounded(.towardZero) == value, abs(value) <= 9_007_199_254_740_992 {
            return .integer(Int64(value))
        }
        return .number(value)
    }

    /// The integer `text` (an optional minus, then digits) writes, or `nil` past `Int64`.
    private static func int64(_ text: UnsafeRawBufferPointer) -> Int64? {
        let negative = text.first == UInt8(ascii: "-")
        var value: Int64 = 0
        for byte in text.dropFirst(negative ? 1 : 0) {
            let digit = Int64(byte - UInt8(ascii: "0"))
            let (shifted, overflowA) = value.multipliedReportingOverflow(by: 10)
            let (next, overflowB) =
                negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
            guard !overflowA, !overflowB else { return nil }
            value = next
        }
        return value
    }
}

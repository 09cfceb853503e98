/// JSON written by hand where Foundation's encoder costs too much: the audit log's entries, the hot
/// routes' answers and destruction certificates.
public enum JSONText {
    /// Appends `text` as a JSON string literal, escaped as `JSONEncoder` escapes it: the quote and the
    /// backslash, `\b \f \n \r \t`, the other control characters as `\u00XX`; `/` left as it is, as
    /// `.withoutEscapingSlashes` leaves it.
    public static func appendString(_ text: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        // Most strings written (ids, times, names of types) need no escape: one check, one copy.
        let plain = text.utf8.withContiguousStorageIfAvailable { bytes in
            guard !bytes.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else {
                return false
            }
            out.append(contentsOf: bytes)
            return true
        }
        if plain == true {
            out.append(UInt8(ascii: "\""))
            return
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x08: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
            case 0x0c: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
            case 0x0a: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0d: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case ..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0x0f)]])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Appends `value` in decimal, as `String(value)` spells it, without making the string: every audit
    /// entry writes three to six numbers.
    public static func appendInteger(_ value: some BinaryInteger, to out: inout [UInt8]) {
        // Wider than 64 bits (none is written today): spelled by `String`.
        guard var magnitude = UInt64(exactly: value.magnitude) else {
            out.append(contentsOf: String(value).utf8)
            return
        }
        if value < 0 { out.append(UInt8(ascii: "-")) }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var start = digits.count
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            out.append(contentsOf: digits[start...])
        }
    }
}

/// A JSON object written member by member, for the answers of the hot routes (on a PUT, Foundation's
/// `JSONEncoder` cost more than the rest of the answer) and destruction certificates (a sweep's thousand). The
/// caller gives the members in sorted order, as `JSONResponse.make` and a certificate sort them; strings are
/// escaped as their encoder escapes them (`JSONText`).
public struct JSONObjectWriter {
    private var bytes: [UInt8]
    private var empty = true

    public init(capacity: Int = 256) {
        self.bytes = [UInt8(ascii: "{")]
        self.bytes.reserveCapacity(capacity)
    }

    /// A writer that goes on after `bytes`, for an object nested in another's buffer.
    private init(continuing bytes: consuming [UInt8]) {
        self.bytes = bytes
        self.bytes.append(UInt8(ascii: "{"))
    }

    /// A member whose value is a string.
    public mutating func string(_ key: String, _ value: String) {
        self.key(key)
        JSONText.appendString(value, to: &self.bytes)
    }

    /// A member whose value is an array of strings.
    public mutating func strings(_ key: String, _ values: [String]) {
        self.key(key)
        self.bytes.append(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { self.bytes.append(UInt8(ascii: ",")) }
            JSONText.appendString(value, to: &self.bytes)
        }
        self.bytes.append(UInt8(ascii: "]"))
    }

    /// A member whose value is an integer.
    public mutating func integer(_ key: String, _ value: some BinaryInteger) {
        self.key(key)
        JSONText.appendInteger(value, to: &self.bytes)
    }

    /// A member whose value is an object, its members written by `body` into the same buffer.
    public mutating func object(_ key: String, _ body: (inout JSONObjectWriter) -> Void) {
        self.key(key)
        self.nested(body)
    }

    /// A member whose value is an array of objects, one for each of `elements`, written by `body`.
    public mutating func objects<Element>(
        _ key: String, _ elements: some Sequence<Element>, _ body: (inout JSONObjectWriter, Element) -> Void
    ) {
        self.key(key)
        self.bytes.append(UInt8(ascii: "["))
        var first = true
        for element in elements {
            if !first { self.bytes.append(UInt8(ascii: ",")) }
            first = false
            self.nested { writer in body(&writer, element) }
        }
        self.bytes.append(UInt8(ascii: "]"))
    }

    /// The object, closed.
    public consuming func finish() -> [UInt8] {
        self.bytes.append(UInt8(ascii: "}"))
        return self.bytes
    }

    private mutating func key(_ key: String) {
        if !self.empty { self.bytes.append(UInt8(ascii: ",")) }
        self.empty = false
        JSONText.appendString(key, to: &self.bytes)
        self.bytes.append(UInt8(ascii: ":"))
    }

    /// An object written by `body` after what this writer holds, the buffer handed over rather than copied.
    private mutating func nested(_ body: (inout JSONObjectWriter) -> Void) {
        var writer = JSONObjectWriter(continuing: self.bytes)
        self.bytes = []
        body(&writer)
        self.bytes = writer.finish()
    }
}

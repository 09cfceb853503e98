/// What a route needs to take a secret (a passphrase) out of a JSON body without ever holding it in a
/// Swift string: where the member's value lies in the raw bytes, and the string's decoded bytes written
/// straight into memory the caller provides (locked memory, for a secret).
extension JSONValue {
    /// The byte range of the value of the top-level member `key` in `document`, or `nil` when it is absent
    /// or the document is cut short (an unterminated string, a missing brace). It finds the value's span
    /// only: whether the whole document is valid JSON is for a parse to say.
    public static func memberRange(of key: String, in document: UnsafeRawBufferPointer) -> Range<Int>? {
        Self.span(of: key, in: document)
    }

    /// The same over an array (`rawMember`). With `members` (the number of members the document's parse
    /// holds), `nil` as well unless `key` is the only member of that name, every member's name is plain
    /// ASCII without escapes, and the document has exactly `members` members: so that no two names can
    /// read as one (an escape, a byte-order mark a parser drops, a canonically equivalent spelling), and
    /// the parse read `key`'s value from these bytes.
    static func span<Bytes: RandomAccessCollection>(of key: String, in document: Bytes, members: Int? = nil)
        -> Range<Int>?
    where Bytes.Element == UInt8, Bytes.Index == Int {
        let quote = UInt8(ascii: "\"")
        let backslash = UInt8(ascii: "\\")
        let wanted = Array(key.utf8)
        var index = document.startIndex
        let end = document.endIndex
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0a || byte == 0x0d }
        func skipSpace() {
            while index < end, isSpace(document[index]) { index += 1 }
        }
        /// Skips a string starting at its opening quote; returns the range of its raw bytes, or `nil` when
        /// the document ends inside it.
        func skipString() -> Range<Int>? {
            let start = index + 1
            index += 1
            while index < end, document[index] != quote {
                index += document[index] == backslash ? 2 : 1
                // The string's plain text a word at a time, where the bytes lie in one buffer.
                let offset = document.startIndex
                index =
                    document.withContiguousStorageIfAvailable { buffer in
                        guard let base = buffer.baseAddress, index < end else { return index }
                        return offset + JSONScan.stringStop(base, from: index - offset, to: end - offset)
                    } ?? index
            }
            guard index < end else {
                index = end
                return nil
            }
            index += 1
            return start..<(index - 1)
        }
        var broken = false
        func skipValue() {
            var depth = 0
            repeat {
                guard index < end else { return }
                switch document[index] {
                case quote:
                    if skipString() == nil {
                        broken = true
                        return
                    }
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
                case UInt8(ascii: ","): if depth == 0 { return }
                default: break
                }
                index += 1
            } while depth > 0
                || (index < end && document[index] != UInt8(ascii: ",") && document[index] != UInt8(ascii: "}"))
        }
        skipSpace()
        guard index < end, document[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        let unique = members != nil
        var found: Range<Int>?
        var count = 0
        while true {
            skipSpace()
            guard index < end, document[index] == quote, let name = skipString() else { return nil }
            skipSpace()
            guard index < end, document[index] == UInt8(ascii: ":") else { return nil }
            index += 1
            skipSpace()
            let start = index
            skipValue()
            guard !broken, index <= end else { return nil }
            var stop = min(index, end)
            while stop > start, isSpace(document[stop - 1]) { stop -= 1 }
            count += 1
            // A key written with escapes is never taken for `key`; when `unique`, no name but plain ASCII is
            // allowed at all.
            if unique, document[name].contains(where: { $0 == backslash || $0 >= 0x80 }) { return nil }
            if document[name].elementsEqual(wanted) {
                guard unique else { return start..<stop }
                guard found == nil else { return nil }
                found = start..<stop
            }
            skipSpace()
            guard index < end else { return nil }
            if document[index] == UInt8(ascii: "}") { return count == (members ?? count) ? found : nil }
            guard document[index] == UInt8(ascii: ",") else { return nil }
            index += 1
        }
    }

    /// Decodes the JSON string literal `literal` (quotes included) to UTF-8: returns the decoded length,
    /// and writes the bytes into `output` when it is given (it must hold that many). `nil` when `literal`
    /// is not a well-formed string (a control character, a bad escape, an unpaired surrogate).
    public static func decodeString(_ literal: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer?)
        -> Int?
    {
        guard literal.count >= 2, literal.first == UInt8(ascii: "\""), literal.last == UInt8(ascii: "\"") else {
            return nil
        }
        var index = 1
        let end = literal.count - 1
        var written = 0
        func put(_ byte: UInt8) {
            if let output { output[written] = byte }
            written += 1
        }
        func put(scalar value: UInt32) {
            switch value {
            case 0..<0x80:
                put(UInt8(value))
            case 0x80..<0x800:
                put(UInt8(0xC0 | (value >> 6)))
                put(UInt8(0x80 | (value & 0x3F)))
            case 0x800..<0x10000:
                put(UInt8(0xE0 | (value >> 12)))
                put(UInt8(0x80 | ((value >> 6) & 0x3F)))
                put(UInt8(0x80 | (value & 0x3F)))
            default:
                put(UInt8(0xF0 | (value >> 18)))
                put(UInt8(0x80 | ((value >> 12) & 0x3F)))
                put(UInt8(0x80 | ((value >> 6) & 0x3F)))
                put(UInt8(0x80 | (value & 0x3F)))
            }
        }
        func hex4() -> UInt32? {
            guard index + 4 <= end else { return nil }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = literal[index]
                let digit: UInt32
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
                default: return nil
                }
                value = value << 4 | digit
                index += 1
            }
            return value
        }
        while index < end {
            let byte = literal[index]
            guard byte >= 0x20, byte != UInt8(ascii: "\"") else { return nil }
            guard byte == UInt8(ascii: "\\") else {
                put(byte)
                index += 1
                continue
            }
            index += 1
            guard index < end else { return nil }
            let escape = literal[index]
            index += 1
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): put(escape)
            case UInt8(ascii: "b"): put(0x08)
            case UInt8(ascii: "f"): put(0x0C)
            case UInt8(ascii: "n"): put(0x0A)
            case UInt8(ascii: "r"): put(0x0D)
            case UInt8(ascii: "t"): put(0x09)
            case UInt8(ascii: "u"):
                guard let unit = hex4() else { return nil }
                switch unit {
                case 0xD800..<0xDC00:
                    guard index + 6 <= end, literal[index] == UInt8(ascii: "\\"),
                        literal[index + 1] == UInt8(ascii: "u")
                    else { return nil }
                    index += 2
                    guard let low = hex4(), (0xDC00..<0xE000).contains(low) else { return nil }
                    put(scalar: 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                case 0xDC00..<0xE000:
                    return nil
                default:
                    put(scalar: unit)
                }
            default:
                return nil
            }
        }
        return written
    }
}

import CaseVaultCore
import Foundation
import Testing

/// `JSONValue.parse` (the hand-written `JSONParser`) against the parse it replaced, Foundation's
/// `JSONSerialization` converted value by value (`Oracle`): the same documents accepted, the same values,
/// except where the header of `JSONValue+Parsing.swift` says it differs (`differences`); and
/// `JSONValue.parseStored` exactly as the oracle, but for decimals Foundation read a few units off.
@Suite("JSON parsing")
struct JSONParsingTests {
    @Test("edge cases: what Foundation accepted is accepted with the same value, what it refused is refused")
    func edgeCases() throws {
        let cases = [
            "01", "-01", "1.", ".5", "+1", "1e", "1e5", "-0", "1E+2", "1e-2", "1.0e", "1.e5", "-", "--1", "0x10",
            "1_000", "0.1", "123456789012345678901234567890", "9223372036854775807", "-999999999999999999",
            "1e400", "-1e400", "1e-400", "4.9e-325", "1.7976931348623157e309", "5.0", "2e1", "-0.0", "1e300",
            "9007199254740992.0", "9007199254740993.0", "NaN", "Infinity", "true", "tru", "Truee", "false", "null",
            "nul", " 1 ", "1 2", "", " ", "\u{FEFF}{}", "\u{FEFF}", "\t\n\r 1", "\u{0B}1", "\u{0C}1", "{\"a\" 1}",
            "{a:1}", "{'a':1}", "[1 2]", "[1,,2]", "[,1]", "{,}", "{\"a\":1 \"b\":2}", "/*c*/1", "1//c",
            "[true false]", "[]", "{}", "[[]]", "[{}]", "{\"a\":[]}", "{\"a\":1,\"a\":2}", "\"é\"", "\"\\u0000\"",
            "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\uD83D\\uDE00\"", "\"\\uDE00\\uD83D\"",
            "\"a\u{01}b\"", "\"a\u{7F}b\"", "\"\\x\"", "\"\\'\"", "\"\\/\"", "\"\\u00e9\"", "\"\\u00E9\"",
            "\"\\u00g9\"",
            "\"\\u12\"", "\"unterminated", "\"\\\"", "\"\\\\\"", "[\"a\",\"b\"]",
            "{\"a\":{\"b\":{\"c\":[1,2.5,-3e2]}}}",
            "{\"\":0}", "\"\"", "[null,true,false]", "{\"a\":1}x", "{\"a\":1}\u{0}", "[1]]", "{\"a\":1}}",
        ]
        for text in cases {
            #expect(JSONValue.parse(Array(text.utf8)) == Oracle.parse(Array(text.utf8)), "\(text.debugDescription)")
        }
        for bytes: [UInt8] in [
            [0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0xFF], [0xEF, 0xBB],
        ] {
            #expect(JSONValue.parse(bytes) == nil && Oracle.parse(bytes) == nil, "\(bytes)")
        }
    }

    @Test("where it differs from Foundation, on purpose")
    func differences() throws {
        // RFC 8259 has no trailing comma; Foundation accepted one, and so does the parse of stored content.
        for text in ["{\"a\":1,}", "[1,]", "[1, ]", "{\"content\": {}, }", "{\"a\":[{\"b\":[1,],},],}"] {
            #expect(Oracle.parse(Array(text.utf8)) != nil)
            #expect(JSONValue.parse(Array(text.utf8)) == nil, "\(text)")
            #expect(JSONValue.parseStored(Array(text.utf8)) == Oracle.parse(Array(text.utf8)), "\(text)")
        }
        for text in ["[,]", "[,1]", "[1,,]", "{,}", "{\"a\":1,,}", "[1,]]", "{\"a\":1,}x"] {
            #expect(JSONValue.parseStored(Array(text.utf8)) == nil, "\(text)")
        }
        // UTF-8 only: Foundation also read UTF-16 and UTF-32.
        for bytes: [UInt8] in [
            [0xFF, 0xFE, 0x5B, 0x00, 0x31, 0x00, 0x5D, 0x00], [0x5B, 0x00, 0x31, 0x00, 0x5D, 0x00], [0x00, 0x31],
        ] {
            #expect(Oracle.parse(bytes) != nil)
            #expect(JSONValue.parse(bytes) == nil && JSONValue.parseStored(bytes) == nil, "\(bytes)")
        }
        // Past Int64: a number, not an integer that wrapped round.
        #expect(Oracle.parse(Array("18446744073709551615".utf8)) == .integer(-1))
        #expect(JSONValue.parse(Array("18446744073709551615".utf8)) == .number(0x1p64))
        #expect(JSONValue.parse(Array("9223372036854775808".utf8)) == .number(0x1p63))
        // A 19-digit negative integer that fits Int64 stays exact; Foundation made it a double.
        #expect(Oracle.parse(Array("-9223372036854775807".utf8)) == .number(-0x1p63))
        #expect(JSONValue.parse(Array("-9223372036854775807".utf8)) == .integer(-9_223_372_036_854_775_807))
        #expect(JSONValue.parse(Array("-9223372036854775808".utf8)) == .integer(.min))
        // A name's or a string's leading byte-order mark is kept: it is part of the text.
        #expect(JSONValue.parse(Array("{\"\u{FEFF}k\":1}".utf8)) == .object(["\u{FEFF}k": .integer(1)]))
        #expect(Oracle.parse(Array("[\"\u{FEFF}s\"]".utf8)) == .array([.string("s")]))
        #expect(JSONValue.parse(Array("[\"\u{FEFF}s\"]".utf8)) == .array([.string("\u{FEFF}s")]))
        // Stored content is read as Foundation read it when it was validated: one raw mark at the start of
        // a string or a name, or right after an escape, dropped.
        for text in [
            "\"\u{FEFF}a\"", "\"a\u{FEFF}b\"", "\"\\n\u{FEFF}b\"", "\"\\u0041\u{FEFF}b\"", "\"\u{FEFF}\u{FEFF}b\"",
            "\"\\uFEFFb\"", "\"a\\n\u{FEFF}\u{FEFF}b\"", "{\"\u{FEFF}k\":\"\\t\u{FEFF}v\"}",
            "{\"\u{FEFF}category\":\"x\",}",
        ] {
            #expect(
                JSONValue.parseStored(Array(text.utf8)) == Oracle.parse(Array(text.utf8)), "\(text.debugDescription)")
        }
        // A member Foundation refused a number of, replaced by a later one of its name, was stored: read as null.
        #expect(Oracle.parse(Array(#"{"n":1e400,"n":0}"#.utf8)) == .object(["n": .integer(0)]))
        #expect(JSONValue.parseStored(Array(#"{"n":1e400,"n":0}"#.utf8)) == .object(["n": .integer(0)]))
        #expect(JSONValue.parse(Array(#"{"n":1e400,"n":0}"#.utf8)) == nil)
        for text in [#"{"n":1e400}"#, #"{"n":0,"n":1e400}"#, #"[1e400]"#, #"{"n":{"m":1e400},"m":1}"#, "1e400"] {
            #expect(Oracle.parse(Array(text.utf8)) == nil && JSONValue.parseStored(Array(text.utf8)) == nil, "\(text)")
        }
        #expect(
            JSONValue.parseStored(Array(#"{"n":{"m":1e400,"m":2},"n":[1e400],"n":3}"#.utf8))
                == Oracle.parse(Array(#"{"n":{"m":1e400,"m":2},"n":[1e400],"n":3}"#.utf8)))
    }

    @Test("a decimal Foundation reads a unit off, onto a whole number, is read exactly and still agrees")
    func decimalFoundationRoundsWhole() {
        let bytes = Array("803645411459360.869".utf8)
        #expect(JSONValue.parseStored(bytes) == .number(803_645_411_459_360.875))
        #expect(Oracle.parse(bytes) == .integer(803_645_411_459_361))
        Self.agree(bytes)
    }

    @Test(
        "a number with a large exponent, which Foundation reads 9 units in the last place off, is read exactly and still agrees"
    )
    func exponentFoundationReadsOff() {
        // Found by `randomDocuments`: a whole number with a byte changed to `E`.
        let bytes = Array("3644235298518734E78".utf8)
        #expect(JSONValue.parseStored(bytes) == .number(3.644235298518734e93))
        #expect(Oracle.parse(bytes) == .number(3.6442352985187397e93))
        Self.agree(bytes)
    }

    @Test("a decimal reads back as the double it was written from")
    func decimalsRoundTrip() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let value = Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &generator))
            guard value.isFinite, value.rounded(.towardZero) != value else { continue }
            #expect(JSONValue.parse(Array("\(value)".utf8)) == .number(value), "\(value)")
        }
        #expect(JSONValue.parse(Array("-933644.5137284774".utf8)) == .number(-933_644.513_728_477_4))
    }

    @Test("nesting up to 512 levels parses; deeper is refused without recursing further")
    func depth() {
        for (depth, parses) in [(512, true), (513, false), (100_000, false)] {
            let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            #expect((JSONValue.parse(Array(text.utf8)) != nil) == parses, "\(depth)")
        }
        let objects = String(repeating: "{\"a\":", count: 512) + "1" + String(repeating: "}", count: 512)
        #expect(JSONValue.parse(Array(objects.utf8)) != nil)
    }

    @Test("random documents, and every one of them cut short or with a byte changed, parse as Foundation parsed them")
    func randomDocuments() throws {
        var generator = SystemRandomNumberGenerator()
        let strings = [
            "", "a", "plain text", "quote \" and back\\slash", "tab\t line\n", "ü é 漢字 😀", "\u{0}", "\u{1F}", "/",
            "\u{FEFF}bom", "e\u{301}", "\u{7F}\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}", "1e5",
            "-9223372036854775807",
        ]
        func value(_ depth: Int) -> Any {
            switch Int.random(in: 0..<(depth > 3 ? 6 : 8), using: &generator) {
            case 0: return Int.random(in: -1000...1000, using: &generator)
            case 1: return Int64.random(in: -999_999_999_999_999_999...Int64.max, using: &generator)
            case 2: return Double.random(in: -1e6...1e6, using: &generator)
            case 3: return strings.randomElement(using: &generator)!
            case 4: return Bool.random(using: &generator)
            case 5: return NSNull()
            case 6: return (0..<Int.random(in: 0...4, using: &generator)).map { _ in value(depth + 1) }
            default:
                var object: [String: Any] = [:]
                for _ in 0..<Int.random(in: 0...4, using: &generator) {
                    object[strings.randomElement(using: &generator)! + "\(Int.random(in: 0...3, using: &generator))"] =
                        value(depth + 1)
                }
                return object
            }
        }
        for _ in 0..<400 {
            let document = [UInt8](
                try JSONSerialization.data(withJSONObject: value(0), options: [.fragmentsAllowed]))
            Self.agree(document)
            let cut = Array(document.prefix(Int.random(in: 0..<max(1, document.count), using: &generator)))
            Self.agree(cut)
            // Strings as a client may write them: every character escaped as \\u, surrogate pairs included.
            Self.agree(Self.escapingEverything(document))
            var changed = document
            if !changed.isEmpty {
                changed[Int.random(in: 0..<changed.count, using: &generator)] = [
                    UInt8(ascii: ","), UInt8(ascii: "]"), UInt8(ascii: "}"), UInt8(ascii: "\""), UInt8(ascii: "\\"),
                    UInt8(ascii: "0"), UInt8(ascii: "e"), UInt8(ascii: "-"), 0x20, 0x01, 0xC3, 0xFF, 0x00,
                    UInt8(ascii: "u"), UInt8(ascii: "."), UInt8(ascii: "E"), UInt8(ascii: "+"), 0xED,
                ].randomElement(using: &generator)!
            }
            Self.agree(changed)
            var inserted = document
            inserted.insert(
                [UInt8(ascii: ","), UInt8(ascii: "\\"), 0x00, 0xED, UInt8(ascii: "]")].randomElement(
                    using: &generator)!,
                at: Int.random(in: 0...document.count, using: &generator))
            Self.agree(inserted)
        }
    }

    @Test("the fuzz corpora's request bodies and record contents parse as Foundation parsed them")
    func corpora() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fuzz-corpus")
        var seen = 0
        for corpus in ["request-body", "record-content", "request-secrets", "certificate"] {
            let directory = root.appendingPathComponent(corpus)
            for name in try FileManager.default.contentsOfDirectory(atPath: directory.path) {
                Self.agree([UInt8](try Data(contentsOf: directory.appendingPathComponent(name))))
                seen += 1
            }
        }
        #expect(seen > 20)
    }

    /// Both accept `bytes` with the same value, or both refuse them, or only Foundation accepts them and they
    /// hold a trailing comma.
    static func agree(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        let (parsed, stored, oracle) = (JSONValue.parse(bytes), JSONValue.parseStored(bytes), Oracle.parse(bytes))
        let text = String(decoding: bytes, as: UTF8.self).debugDescription
        // Foundation took a NUL among the first two bytes, or a UTF-16 byte-order mark, for UTF-16 or UTF-32.
        let utf16 =
            bytes.prefix(2).contains(0) || bytes.starts(with: [0xFF, 0xFE]) || bytes.starts(with: [0xFE, 0xFF])
        #expect(utf16 && stored == nil || Self.same(stored, oracle), "\(text)", sourceLocation: sourceLocation)
        if parsed != nil {
            // Strict and stored agree but for the marks the stored read drops.
            #expect(Self.same(parsed, stored, marks: true), "\(text)", sourceLocation: sourceLocation)
        } else if stored != nil {
            #expect(Self.hasTrailingComma(bytes), "\(text)", sourceLocation: sourceLocation)
        }
    }

    /// `parsed` and `oracle` hold the same values, but that Foundation read some numbers a few units in the
    /// last place off (`JSONParser` reads them exactly: `decimalsRoundTrip`), and, with `marks`, that
    /// `oracle` dropped a byte-order mark that begins a string or a name.
    static func same(_ parsed: JSONValue?, _ oracle: JSONValue?, marks: Bool = false) -> Bool {
        func text(_ string: String) -> String {
            marks && string.hasPrefix("\u{FEFF}") ? String(string.dropFirst()) : string
        }
        // Foundation reads a number with an exponent up to 18 units in the last place off (the worst of
        // 300,000 random mantissas of up to 20 digits and exponents from -340 to 300, against Double's
        // exact reading): a tolerance of 64 units, still a relative 1.4e-14.
        func close(_ a: Double, _ b: Double) -> Bool {
            a == b || abs(a - b) <= 64 * max(a.ulp, b.ulp)
        }
        switch (parsed, oracle) {
        case (nil, nil): return true
        case (.number(let a)?, .number(let b)?): return close(a, b)
        // A decimal past 2^52 reads as a whole number, and the few units Foundation was off may cross 2^53.
        case (.integer(let a)?, .integer(let b)?): return a == b || (abs(a) > 1 << 52 && close(Double(a), Double(b)))
        // And a decimal Foundation read a few units off may land on a whole number ("803645411459360.869" read
        // as 803645411459361, 0.125 its unit in the last place): within those units, the same number.
        case (.integer(let a)?, .number(let b)?), (.number(let b)?, .integer(let a)?):
            return close(Double(a), b)
        case (.string(let a)?, .string(let b)?): return a == b || text(a) == b
        case (.array(let a)?, .array(let b)?):
            return a.count == b.count && zip(a, b).allSatisfy { same($0, $1, marks: marks) }
        case (.object(let a)?, .object(let b)?):
            // Two names that differ only by a mark were one to Foundation, which kept the later: its value
            // is one of theirs.
            return a.keys.allSatisfy { b[$0] != nil || b[text($0)] != nil }
                && b.allSatisfy { key, value in
                    a.contains { ($0.key == key || text($0.key) == key) && same($0.value, value, marks: marks) }
                }
        default: return parsed == oracle
        }
    }

    /// `document` with every character of every string (names too) written as `\\u` escapes: a surrogate
    /// pair for each past U+FFFF.
    static func escapingEverything(_ document: [UInt8]) -> [UInt8] {
        var output: [UInt8] = []
        var index = 0
        while index < document.count {
            guard document[index] == UInt8(ascii: "\"") else {
                output.append(document[index])
                index += 1
                continue
            }
            var end = index + 1
            while end < document.count, document[end] != UInt8(ascii: "\"") {
                end += document[end] == UInt8(ascii: "\\") ? 2 : 1
            }
            guard end < document.count,
                case .string(let text)? = JSONValue.parse(Array(document[index...end]))
            else {
                Issue.record("a string of a document Foundation wrote does not parse")
                return document
            }
            output.append(UInt8(ascii: "\""))
            for unit in text.utf16 { output += Array(String(format: "\\u%04x", unit).utf8) }
            output.append(UInt8(ascii: "\""))
            index = end + 1
        }
        return output
    }

    /// Whether a `,` outside strings is followed, after whitespace, by `]` or `}`.
    static func hasTrailingComma(_ bytes: [UInt8]) -> Bool {
        var (inString, escaped, comma) = (false, false, false)
        for byte in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): (inString, comma) = (true, false)
            case UInt8(ascii: ","): comma = true
            case UInt8(ascii: "]"), UInt8(ascii: "}"): if comma { return true }
            case 0x20, 0x09, 0x0A, 0x0D: break
            default: comma = false
            }
        }
        return false
    }

    /// The parse `JSONValue.parse` replaced: Foundation's `JSONSerialization`, converted value by value.
    enum Oracle {
        static func parse(_ bytes: [UInt8]) -> JSONValue? {
            guard let object = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
            else { return nil }
            return convert(object)
        }

        static func convert(_ value: Any) -> JSONValue? {
            switch value {
            case is NSNull: return .null
            case let text as String: return .string(text)
            case let number as NSNumber:
                switch String(cString: number.objCType) {
                case "c": return .bool(number.boolValue)
                case "d", "f":
                    let value = number.doubleValue
                    if value.rounded(.towardZero) == value, abs(value) <= 9_007_199_254_740_992 {
                        return .integer(Int64(value))
                    }
                    return .number(value)
                default: return .integer(number.int64Value)
                }
            case let items as [Any]:
                var values: [JSONValue] = []
                for item in items {
                    guard let converted = convert(item) else { return nil }
                    values.append(converted)
                }
                return .array(values)
            case let members as [String: Any]:
                var values: [String: JSONValue] = [:]
                for (key, item) in members {
                    guard let converted = convert(item) else { return nil }
                    values[key] = converted
                }
                return .object(values)
            default: return nil
            }
        }
    }
}

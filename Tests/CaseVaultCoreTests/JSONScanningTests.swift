import CaseVaultCore
import Foundation
import Testing

/// The byte-level JSON helpers the server uses before and instead of a full parse.
@Suite("JSON scanning")
struct JSONScanningTests {
    @Test("rawMember finds a top-level member's value exactly as written, wherever it stands")
    func rawMemberSpans() throws {
        let cases: [(String, String?)] = [
            (#"{"type":"x","content":{"a":[1,{"b":"}"}]}}"#, #"{"a":[1,{"b":"}"}]}"#),
            (
                #"{ "content" : {"text": "a \" quote, and } brace"} , "type": "t" }"#,
                #"{"text": "a \" quote, and } brace"}"#
            ),
            (#"{"nested":{"content":1},"content":[1, 2]}"#, "[1, 2]"),
            (#"{"content":"plain"}"#, #""plain""#),
            (#"{"content":12.5e3 }"#, "12.5e3"),
            (#"{"type":"x"}"#, nil),
            (#"{"con\u0074ent":{}}"#, nil),
        ]
        for (document, expected) in cases {
            let raw = JSONValue.rawMember("content", of: Array(document.utf8)).map {
                String(decoding: $0, as: UTF8.self)
            }
            #expect(raw == expected, "\(document)")
        }
    }

    @Test("rawMember agrees with a full parse on random documents")
    func rawMemberAgreesWithParse() throws {
        var generator = SystemRandomNumberGenerator()
        func value(_ depth: Int) -> Any {
            switch Int.random(in: 0..<(depth > 3 ? 4 : 6), using: &generator) {
            case 0: return Int.random(in: -1000...1000, using: &generator)
            case 1: return ["a", "{\"}", "[,]", "\\", "ü"].randomElement(using: &generator)!
            case 2: return Bool.random(using: &generator)
            case 3: return NSNull()
            case 4: return (0..<Int.random(in: 0...3, using: &generator)).map { _ in value(depth + 1) }
            default:
                var object: [String: Any] = [:]
                for key in ["content", "x", "type"].shuffled(using: &generator).prefix(
                    Int.random(in: 0...3, using: &generator))
                {
                    object[key] = value(depth + 1)
                }
                return object
            }
        }
        for _ in 0..<500 {
            var top = value(0) as? [String: Any] ?? [:]
            top["content"] = value(1)
            let data = try JSONSerialization.data(withJSONObject: top, options: [.fragmentsAllowed])
            let bytes = [UInt8](data)
            let raw = try #require(JSONValue.rawMember("content", of: bytes))
            #expect(
                JSONValue.parse(Array(raw)) == JSONValue.parse(bytes)?["content"],
                "\(String(decoding: bytes, as: UTF8.self))")
            // Distinct plain names: the parse read content from exactly these bytes.
            let parsed = try #require(JSONValue.parse(bytes))
            #expect(JSONValue.uniqueRawMember("content", of: bytes, parsed: parsed) == raw)
        }
    }

    @Test(
        "uniqueRawMember finds content only when the parse read it from those bytes: no two names that may read alike"
    )
    func uniqueRawMember() throws {
        let cases: [(String, String?)] = [
            (#"{"type": "t", "content": {"text": "x"}}"#, #"{"text": "x"}"#),
            (#"{"content": [1, "}"] }"#, #"[1, "}"]"#),
            // The same name twice: the parse keeps the last, the scan would take the first.
            (#"{"content": {}, "content": {"text": "x"}}"#, nil),
            // Another name twice: the parse holds fewer members than the document names.
            (#"{"x": 1, "x": 2, "content": {}}"#, nil),
            // Names that may read as content, or as each other: escaped, or not plain ASCII.
            (#"{"content": {}, "con\u0074ent": {"text": "x"}}"#, nil),
            ("{\"content\": {}, \"\u{FEFF}content\": {\"text\": \"x\"}}", nil),
            ("{\"caf\u{E9}\": 1, \"cafe\u{301}\": 2, \"content\": {}}", nil),
            // A byte-order mark before the document, which the parser skips: the scan says nothing.
            ("\u{FEFF}{\"content\": {}}", nil),
        ]
        for (document, expected) in cases {
            let bytes = Array(document.utf8)
            guard let parsed = JSONValue.parse(bytes) else {
                Issue.record("does not parse: \(document)")
                continue
            }
            let found = JSONValue.uniqueRawMember("content", of: bytes, parsed: parsed).map {
                String(decoding: $0, as: UTF8.self)
            }
            #expect(found == expected, "\(document)")
        }
    }

    // Found by make check-api: a limit of 451.0 was refused, though JSON Schema counts it an integer.
    @Test(
        "a whole number written with a fraction or an exponent parses as an integer, exactly up to 2^53; others stay numbers"
    )
    func wholeNumbersAreIntegers() throws {
        let document = try #require(
            JSONValue.parse(
                Array(#"{"a": 5.0, "b": 2e1, "c": -0.0, "d": 5.5, "e": 1e300, "f": 9007199254740992.0, "g": 7}"#.utf8)))
        #expect(document["a"] == .integer(5))
        #expect(document["b"] == .integer(20))
        #expect(document["c"] == .integer(0))
        #expect(document["d"] == .number(5.5))
        #expect(document["e"] == .number(1e300))
        #expect(document["f"] == .integer(9_007_199_254_740_992))
        #expect(document["g"] == .integer(7))
    }

    @Test("nesting depth counts brackets outside strings only")
    func nesting() {
        func deeper(_ text: String, _ limit: Int) -> Bool {
            Array(text.utf8).withUnsafeBytes { JSONValue.nestsDeeper(than: limit, $0) }
        }
        #expect(deeper("[[[]]]", 2))
        #expect(!deeper("[[[]]]", 3))
        #expect(!deeper(#"{"a":"[[[[[[\"[["}"#, 1))
    }

    @Test(
        "the parse, the depth check and rawMember find a string's end wherever its quotes, escapes and control characters fall in a word of eight bytes"
    )
    func stringEndsAtEveryOffset() {
        // Each stop at every offset of the first three words and of a string's last few bytes, after plain
        // ASCII: the parse reads it as written, and a raw control character there refuses the document.
        let stops: [(written: String, decoded: String)] = [(#"\""#, "\""), (#"\\"#, "\\"), (#"\n"#, "\n")]
        for offset in 0..<24 {
            let plain = String(repeating: "a", count: offset)
            for stop in stops {
                let bytes = Array(#"{"s":"\#(plain)\#(stop.written)b"}"#.utf8)
                #expect(JSONValue.parse(bytes)?["s"] == .string(plain + stop.decoded + "b"), "\(offset)")
            }
            for control in [UInt8(0x00), 0x09, 0x0A, 0x1F] {
                // Inside the string for the depth check too: the brackets after it count for nothing.
                let bytes = Array(#"{"s":"\#(plain)"#.utf8) + [control] + Array(#"[["}"#.utf8)
                #expect(JSONValue.parse(bytes) == nil, "\(offset) \(control)")
                #expect(bytes.withUnsafeBytes { !JSONValue.nestsDeeper(than: 1, $0) }, "\(offset) \(control)")
            }
        }
        // Random texts of pieces, each with what it decodes to; brackets, spaces and bytes of 0x80 and above
        // (0xA0, 0xA2, 0xDC among them) are plain text, which a word-at-a-time scan must not take for a stop.
        let pieces: [(written: String, decoded: String)] = [
            ("a", "a"), (" ", " "), ("!", "!"), ("[", "["), ("{", "{"), ("é", "é"), ("€", "€"), ("😀", "😀"),
            ("\u{7F}", "\u{7F}"), ("\u{A0}", "\u{A0}"), ("¢", "¢"), ("\u{710}", "\u{710}"), (#"\""#, "\""),
            (#"\\"#, "\\"), (#"\n"#, "\n"), (#"\u00e9"#, "é"), ("}", "}"), ("]", "]"),
        ]
        var generator = SystemRandomNumberGenerator()
        for length in 0..<40 {
            for _ in 0..<25 {
                let chosen = (0..<length).map { _ in pieces.randomElement(using: &generator)! }
                let written = chosen.map(\.written).joined()
                let decoded = chosen.map(\.decoded).joined()
                let bytes = Array(#"{"s":"\#(written)","n":[[1]]}"#.utf8)
                #expect(JSONValue.parse(bytes)?["s"] == .string(decoded), "\(written)")
                #expect(bytes.withUnsafeBytes { !JSONValue.nestsDeeper(than: 3, $0) }, "\(written)")
                #expect(bytes.withUnsafeBytes { JSONValue.nestsDeeper(than: 2, $0) }, "\(written)")
                #expect(JSONValue.rawMember("n", of: bytes).map { Array($0) } == Array("[[1]]".utf8), "\(written)")
                // The string last, a byte or a few from the end: its end is found in the scan's tail.
                let last = Array(#"{"s":"\#(written)"}"#.utf8)
                #expect(JSONValue.rawMember("s", of: last).map { Array($0) } == Array(#""\#(written)""#.utf8))
                let deeper = Array(#"["\#(written)",[]]"#.utf8)
                #expect(deeper.withUnsafeBytes { JSONValue.nestsDeeper(than: 1, $0) }, "\(written)")
                #expect(deeper.withUnsafeBytes { !JSONValue.nestsDeeper(than: 2, $0) }, "\(written)")
            }
        }
    }

    @Test("decodeString decodes every escape to the bytes a full parse gives, and refuses malformed strings")
    func decodeStringAgreesWithParse() throws {
        let good = [
            #""correct horse battery""#, #""tab\there \"quoted\" back\\slash \/""#,
            #""caf\u00e9 \u20ac \ud83d\ude00 é""#,
            #""\b\f\n\r\t""#, #""""#,
        ]
        for literal in good {
            let bytes = Array(literal.utf8)
            guard case .string(let parsed) = JSONValue.parse(Array("{\"p\":\(literal)}".utf8))?["p"] ?? .null else {
                Issue.record("\(literal) does not parse")
                continue
            }
            let decoded = bytes.withUnsafeBytes { raw -> [UInt8]? in
                guard let length = JSONValue.decodeString(raw, into: nil) else { return nil }
                var output = [UInt8](repeating: 0, count: length)
                output.withUnsafeMutableBytes { _ = JSONValue.decodeString(raw, into: $0) }
                return output
            }
            #expect(decoded == Array(parsed.utf8), "\(literal)")
        }
        for bad in [
            #""unterminated"#, #""bad \q escape""#, #""lone \ud83d surrogate""#, "\"control \u{01}\"", #""short \u12""#,
            "plain",
        ] {
            #expect(Array(bad.utf8).withUnsafeBytes { JSONValue.decodeString($0, into: nil) } == nil, "\(bad)")
        }
        // Cut short anywhere, a document gives no range (and never reads past its end).
        let whole = Array(#"{"passphrase":"abc\"def","x":[1,{"y":"z"}]}"#.utf8)
        for length in 0..<whole.count {
            let prefix = Array(whole[..<length])
            let range = prefix.withUnsafeBytes { JSONValue.memberRange(of: "passphrase", in: $0) }
            #expect(range.map { $0.upperBound <= length } ?? true, "\(length)")
        }
        #expect(
            Array(#"{"passphrase":"abc\"#.utf8).withUnsafeBytes { JSONValue.memberRange(of: "passphrase", in: $0) }
                == nil)
        let document = Array(#"{"share": null, "passphrase" : "a \" b" ,"x":1}"#.utf8)
        let range = document.withUnsafeBytes { JSONValue.memberRange(of: "passphrase", in: $0) }
        #expect(range.map { String(decoding: document[$0], as: UTF8.self) } == #""a \" b""#)
    }
}

import CaseVaultCore
import Foundation
import Testing

@Suite("JSON written by hand")
struct JSONTextTests {
    /// `JSONResponse.make`'s encoder.
    static func encoded(_ value: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    /// Strings with nothing to escape (copied whole) and with something (escaped byte by byte).
    static let strings: [String] =
        [
            "", "0123456789abcdef0123456789abcdef", "2026-11-23T01:00:00.000Z", "a/b", "é and 名前 and 🙂",
            "a \"quoted\" word", "back\\slash", "tab\there", "line\nbreak", "\u{7f} delete", "\u{0}",
        ] + (0..<0x20).map { "x\(Character(Unicode.Scalar(UInt8($0))))y" }

    @Test("a string is written as JSONEncoder writes it, escapes and all", arguments: strings)
    func appendString(_ text: String) throws {
        var written: [UInt8] = []
        JSONText.appendString(text, to: &written)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        let expected = [UInt8](try encoder.encode(text))
        // Byte for byte; the message shows both as text.
        let same = written == expected
        #expect(
            same, "\(String(decoding: written, as: UTF8.self)) against \(String(decoding: expected, as: UTF8.self))")
    }

    @Test("strings that JSON must escape are written as JSONEncoder writes them, and read back as they were")
    func escaping() throws {
        let texts = [
            #"a "quoted" word"#, #"back\slash"#, "line\nbreak\r\ttab", "\u{0}\u{1}\u{8}\u{c}\u{1f}", "a/b",
            "é, 漢字, 🙂", "",
        ]
        var writer = JSONObjectWriter()
        for (index, text) in texts.enumerated() { writer.string("k\(index)", text) }
        writer.strings("all", texts)
        let bytes = writer.finish()
        let object = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        for (index, text) in texts.enumerated() {
            #expect(object["k\(index)"] as? String == text)
        }
        #expect(object["all"] as? [String] == texts)
        #expect(object.count == texts.count + 1)

        // The same strings as JSONEncoder writes them, keys sorted.
        let members = texts.enumerated().map { ("k\($0.offset)", $0.element) }
        var sorted = JSONObjectWriter()
        for (key, text) in members { sorted.string(key, text) }
        #expect(sorted.finish() == (try Self.encoded(Dictionary(uniqueKeysWithValues: members))))
    }
}

import CaseVaultCore
import Foundation
import Testing

@Suite("JSON written by hand")
struct JSONTextTests {
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
}

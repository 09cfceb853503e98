import CaseVaultServer
import Foundation
import Testing

/// The answers written by hand say what JSONEncoder would have said.
@Suite("Answers written without JSONEncoder")
struct JSONAnswerTests {
    /// `JSONResponse.make`'s encoder.
    static func encoded(_ value: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    @Test(
        "a filing's answer is byte for byte what JSONEncoder writes",
        arguments: [
            FilingAnswer(
                recordID: "0123456789abcdef0123456789abcdef", caseID: "fedcba9876543210fedcba9876543210",
                type: "intake_form", createdAt: "2026-12-01T22:40:00.123Z", supersedes: nil, shredded: []),
            FilingAnswer(
                recordID: "0123456789abcdef0123456789abcdef", caseID: "fedcba9876543210fedcba9876543210",
                type: "final_agreement", createdAt: "2026-12-01T22:40:00.123Z",
                supersedes: "00000000000000000000000000000001",
                shredded: ["00000000000000000000000000000002", "00000000000000000000000000000003"]),
        ])
    func filing(_ answer: FilingAnswer) throws {
        #expect(answer.encoded() == (try Self.encoded(answer)))
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

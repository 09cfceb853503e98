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
}

import CaseVaultCore
import Foundation

extension Bench {
    /// What parsing a record's content costs (`JSONValue.parse`, the hand-written `JSONParser`), beside
    /// Foundation's `JSONSerialization` on the same bytes (its parse alone: the parse it replaced also
    /// converted Foundation's objects value by value): the bench's own 4 KiB content, one long string, and
    /// a record of 40 text fields with escapes and non-ASCII text, an object and an array.
    func parseFigures() {
        let text = String(repeating: "x", count: self.size - 11)
        var fields = (0..<40).map {
            #""field\#($0)":"Some words of a mediation record, with an accent é and a \"quoted\" phrase.""#
        }
        fields.append(#""acknowledgements":{"confidentiality":true,"no_recording":true},"marks":[1,2,3,4.5,-6e3]"#)
        let documents = [
            ("one string", Array(#"{"text":"\#(text)"}"#.utf8)),
            ("40 fields", Array("{\(fields.joined(separator: ","))}".utf8)),
        ]
        var parts: [String] = []
        for (label, bytes) in documents {
            let ours = Self.microseconds { _ = JSONValue.parse(bytes) }
            let foundation = Self.microseconds {
                _ = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
            }
            parts.append(
                String(
                    format: "%@ (%d bytes) %.1f us (JSONSerialization alone %.1f us)", label, bytes.count, ours,
                    foundation))
        }
        print("parse    record content: " + parts.joined(separator: "; "))
    }

    /// The mean time of `body` over enough calls to take about a quarter of a second, after a warm-up.
    private static func microseconds(_ body: () -> Void) -> Double {
        for _ in 0..<100 { body() }
        var calls = 0
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .milliseconds(250) {
            for _ in 0..<100 { body() }
            calls += 100
        }
        let elapsed = ContinuousClock.now - start
        return (Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12)
            / Double(calls)
    }
}

import CaseVaultCore
import CaseVaultFuzz
import Foundation
import Testing

/// The fuzz targets' corpus (`Tests/fuzz-corpus/<target>/`: the seeds, and every finding `make fuzz` kept)
/// replayed through each target, without a sanitizer: an input that crashes or traps fails the run, so a
/// fixed finding stays fixed.
@Suite("Fuzz corpus replay", .serialized)
struct CorpusReplayTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fuzz-corpus")

    /// The files of a corpus directory, in name order; `nil` when there is no such directory.
    static func inputs(of name: String) throws -> [URL]? {
        let directory = Self.corpus.appendingPathComponent(name)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue
        else {
            return nil
        }
        return try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { !$0.hasPrefix(".") }
            .sorted()
            .map { directory.appendingPathComponent($0) }
    }

    @Test("every target replays its whole corpus", arguments: FuzzTargets.all.map(\.name))
    func replay(_ name: String) throws {
        let target = try #require(FuzzTargets.named(name))
        let found = try Self.inputs(of: name)
        let inputs = try #require(found, "Tests/fuzz-corpus/\(name) is missing: every fuzz target needs a seed corpus")
        #expect(!inputs.isEmpty, "Tests/fuzz-corpus/\(name) holds no input: every fuzz target needs a seed corpus")
        for input in inputs {
            target.run([UInt8](try Data(contentsOf: input)))
        }
    }

    /// The record type each record-content seed was kept for: its first byte picks the type by position
    /// in `RecordType.allCases` (`FuzzTargets.content`), so a type added before another moves the seeds.
    static let contentSeeds: [String: RecordType] = [
        "agreement-participants": .agreementToMediate, "case-header": .caseHeader,
        "crash-d6ab2ff46d2492462393bf3b8bd08c8984f4391f": .agreementToMediate, "debrief": .debrief,
        "disclosure": .disclosure, "evaluation-out-of-range": .evaluation, "final-agreement-consents": .finalAgreement,
        "intake-form": .intakeForm, "not-an-object": .intakeForm, "session-note-blank": .sessionNote,
    ]

    @Test("each record-content seed still reaches the validator of the type it was kept for")
    func contentSeedsReachTheirType() throws {
        let inputs = try #require(try Self.inputs(of: "record-content"))
        #expect(Set(inputs.map(\.lastPathComponent)) == Set(Self.contentSeeds.keys), "a seed without a type here")
        let types = RecordType.allCases
        for input in inputs {
            let first = try #require(try Data(contentsOf: input).first)
            #expect(
                types[Int(first) % types.count] == Self.contentSeeds[input.lastPathComponent],
                "\(input.lastPathComponent)")
        }
    }

    @Test("every corpus directory names a target, and no two targets share a name")
    func directoriesNameTargets() throws {
        let names = FuzzTargets.all.map(\.name)
        #expect(Set(names).count == names.count)
        let directories = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path).filter {
            !$0.hasPrefix(".")
        }
        for directory in directories {
            #expect(names.contains(directory), "Tests/fuzz-corpus/\(directory) names no fuzz target")
        }
    }
}

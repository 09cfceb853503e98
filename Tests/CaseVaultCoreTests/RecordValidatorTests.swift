import CaseVaultCore
import Foundation
import Testing

@Suite("Record types and required content")
struct RecordValidatorTests {
    let validator = RecordValidator(maxContentBytes: 64 << 10)

    static let valid: [RecordType: String] = [
        .intakeForm: #"{"dispute_category":"housing","screening":{"safe":true}}"#,
        .agreementToMediate: #"""
        {"participant":"p2","signed_at":"2026-03-01T14:00:00Z","method":"verbal","online":false,
         "acknowledgements":{"confidentiality":true,"no_recording":true,"will_not_compel_mediator":true,
         "will_not_discuss_outside":true}}
        """#,
        .sessionNote: #"{"text":"notes"}"#,
        .debrief: #"{"text":"what we learned"}"#,
        .finalAgreement:
            #"{"terms":"t","outcome":"partially_resolved","outcome_confidential":false,"consents":["p1","p2"]}"#,
        .evaluation: #"{"satisfaction":5,"would_recommend":false}"#,
        .disclosure: #"{"category":"intent_to_harm","summary":"s"}"#,
    ]

    func failure(_ type: RecordType, _ json: String, participants: Set<String>? = nil) -> CaseVaultError? {
        do {
            try self.validator.validate(type: type, content: Array(json.utf8), participants: participants)
            return nil
        } catch {
            return error
        }
    }

    @Test("a minimal valid document of every type is accepted", arguments: RecordType.fileable)
    func validDocumentsPass(type: RecordType) {
        #expect(self.failure(type, Self.valid[type]!, participants: ["p1", "p2"]) == nil)
    }

    @Test("recordings and transcripts are refused by policy; other names are unknown types")
    func forbiddenAndUnknownTypes() {
        for name in ["recording", "transcript", "Recording"] {
            #expect(throws: CaseVaultError.self) { try RecordType.parse(name) }
            do { _ = try RecordType.parse(name) } catch { #expect(error.code == .forbiddenRecordType) }
        }
        for name in ["audio", "", "session_notes", "../etc"] {
            do {
                _ = try RecordType.parse(name)
                Issue.record("accepted \(name)")
            } catch {
                #expect(error.code == .unknownRecordType)
                #expect(!error.message.contains("../etc") || name.isEmpty)
            }
        }
    }

    @Test(
        "every required field, when removed, is reported by name",
        arguments: [
            (RecordType.intakeForm, "dispute_category"),
            (.agreementToMediate, "participant"), (.agreementToMediate, "signed_at"), (.agreementToMediate, "method"),
            (.agreementToMediate, "online"), (.agreementToMediate, "acknowledgements"),
            (.sessionNote, "text"), (.finalAgreement, "terms"), (.finalAgreement, "outcome"),
            (.finalAgreement, "outcome_confidential"), (.finalAgreement, "consents"),
            (.evaluation, "satisfaction"), (.evaluation, "would_recommend"),
            (.disclosure, "category"), (.disclosure, "summary"),
        ])
    func missingFieldIsNamed(type: RecordType, field: String) throws {
        var document = try #require(Self.object(Self.valid[type]!))
        document.removeValue(forKey: field)
        let error = self.failure(type, Self.encode(document))
        #expect(error?.code == .missingField)
        #expect(error?.field == field)
    }

    @Test("every acknowledgement must be true; online sessions also need devices off and nobody else present")
    func acknowledgements() {
        let offline = Self.valid[.agreementToMediate]!
        #expect(
            self.failure(
                .agreementToMediate,
                offline.replacingOccurrences(of: #""no_recording":true"#, with: #""no_recording":false"#))?.field
                == "acknowledgements.no_recording")
        let online = offline.replacingOccurrences(of: #""online":false"#, with: #""online":true"#)
        let error = self.failure(.agreementToMediate, online)
        #expect(error?.code == .missingField)
        #expect(error?.field == "acknowledgements.devices_off")
        let complete = online.replacingOccurrences(
            of: #""will_not_discuss_outside":true"#,
            with: #""will_not_discuss_outside":true,"devices_off":true,"nobody_else_present":"yes""#
        )
        #expect(self.failure(.agreementToMediate, complete)?.field == "acknowledgements.nobody_else_present")
    }

    @Test("a non-confidential outcome needs every participant's consent")
    func consentRule() {
        let json = #"{"terms":"t","outcome":"resolved","outcome_confidential":false,"consents":["p1"]}"#
        #expect(self.failure(.finalAgreement, json, participants: ["p1", "p2"])?.field == "consents")
        let confidential = json.replacingOccurrences(of: "false", with: "true")
        #expect(self.failure(.finalAgreement, confidential, participants: ["p1", "p2"]) == nil)
        #expect(self.failure(.finalAgreement, confidential, participants: ["p3"])?.field == "consents")
    }

    @Test(
        "mistyped values are refused without echoing them",
        arguments: [
            (RecordType.evaluation, #"{"satisfaction":6,"would_recommend":true}"#, "satisfaction"),
            (.evaluation, #"{"satisfaction":4.5,"would_recommend":true}"#, "satisfaction"),
            (.evaluation, #"{"satisfaction":4,"would_recommend":"SECRETVALUE"}"#, "would_recommend"),
            (.disclosure, #"{"category":"SECRETVALUE","summary":"s"}"#, "category"),
            (.sessionNote, #"{"text":"   "}"#, "text"),
            (.agreementToMediate, #"{"participant":"SECRETVALUE"}"#, "participant"),
            (.finalAgreement, #"{"terms":"t","outcome":"won","outcome_confidential":true,"consents":[]}"#, "outcome"),
            (
                .finalAgreement,
                #"{"terms":"t","outcome":"resolved","outcome_confidential":true,"consents":["p1","p1"]}"#, "consents"
            ),
        ])
    func mistypedValues(type: RecordType, json: String, field: String) {
        let error = self.failure(type, json)
        #expect(error?.code == .invalidField)
        #expect(error?.field == field)
        #expect(!(error?.description.contains("SECRETVALUE") ?? true))
    }

    @Test("content that is not a JSON object, or too large, is refused")
    func malformedAndOversized() {
        #expect(self.failure(.sessionNote, "[1,2]")?.code == .malformedContent)
        #expect(self.failure(.sessionNote, "{\"text\":")?.code == .malformedContent)
        #expect(self.failure(.sessionNote, "")?.code == .malformedContent)
        let big = #"{"text":""# + String(repeating: "x", count: 70_000) + #""}"#
        #expect(self.failure(.sessionNote, big)?.code == .contentTooLarge)
    }

    @Test("identifiers are 32 lowercase hex characters and nothing else")
    func identifiers() throws {
        let id = try RecordID("00112233445566778899aabbccddeeff")
        #expect(RecordID(bytes: id.bytes) == id)
        for bad in [
            "", "../../etc/passwd", "00112233445566778899AABBCCDDEEFF", "00112233445566778899aabbccddee\u{0}f",
            "00112233445566778899aabbccddeeff0",
        ] {
            #expect(throws: CaseVaultError.self) { try RecordID(bad) }
        }
    }

    static func object(_ json: String) -> [String: Any]? {
        try? JSONSerializationShim.object(json)
    }

    static func encode(_ object: [String: Any]) -> String {
        JSONSerializationShim.string(object)
    }
}

@Suite("Timestamps in record content")
struct TimestampTests {
    @Test("RFC 3339 date-times are taken, with real calendar ranges; anything else is refused without reaching ICU")
    func timestamps() {
        for good in [
            "2026-03-01T14:00:00Z", "2024-02-29T23:59:59.123456789+01:00", "2026-12-31t00:00:00.5z",
            "0001-01-01T00:00:00-23:59",
        ] {
            #expect(JSONValue.isTimestamp(good), "\(good)")
        }
        let bad = [
            "2026-03-01T14:0:00.2577777777777777777777777777777777777777777777777777777777777770Z",
            "2026-03-01T14:00:00." + String(repeating: "7", count: 100) + "Z",
            "2026-03-01T14:00:00.1234567890Z", "2025-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-04-31T00:00:00Z",
            "2026-03-01T24:00:00Z", "2026-03-01T14:60:00Z", "2026-03-01T14:00:00", "2026-03-01 14:00:00Z",
            "2026-03-01T14:00:00+0100",
            "2026-03-01T14:00:00Z ", "0000-01-01T00:00:00Z", "", "2026-03-01",
        ]
        for text in bad {
            #expect(!JSONValue.isTimestamp(text), "\(text)")
        }
    }
}

/// The templates `casevaultctl record file --edit` opens.
@Suite("Record templates")
struct RecordTemplateTests {
    /// The paths (`acknowledgements.no_recording`) of the fields in `valid`, at every depth, without which
    /// the validator refuses it: the fields the type requires.
    static func required(_ type: RecordType, _ valid: [String: Any]) throws -> Set<String> {
        func paths(_ object: [String: Any], _ prefix: [String]) -> [[String]] {
            object.flatMap { key, value in
                [prefix + [key]] + ((value as? [String: Any]).map { paths($0, prefix + [key]) } ?? [])
            }
        }
        func removing(_ path: [String], from object: [String: Any]) -> [String: Any] {
            var copy = object
            if path.count == 1 {
                copy[path[0]] = nil
            } else if let inner = object[path[0]] as? [String: Any] {
                copy[path[0]] = removing(Array(path.dropFirst()), from: inner)
            }
            return copy
        }
        let validator = RecordValidator(maxContentBytes: 64 << 10)
        var required = Set<String>()
        for path in paths(valid, []) {
            let bytes = try JSONSerialization.data(withJSONObject: removing(path, from: valid))
            if (try? validator.validate(type: type, content: [UInt8](bytes), participants: ["p1", "p2"])) == nil {
                required.insert(path.joined(separator: "."))
            }
        }
        return required
    }

    /// Every key of `object`, at every depth, as a path.
    static func keys(_ object: [String: Any], prefix: String = "") -> Set<String> {
        var paths = Set<String>()
        for (key, value) in object {
            paths.insert(prefix + key)
            if let inner = value as? [String: Any] { paths.formUnion(Self.keys(inner, prefix: prefix + key + ".")) }
        }
        return paths
    }

    @Test(
        "each fileable type's template is comment lines and a JSON object holding every field the type requires",
        arguments: RecordType.fileable)
    func templateHoldsTheRequiredFields(type: RecordType) throws {
        let text = try #require(RecordTemplate.text(for: type, signedAt: "2026-03-01T14:00:00.000Z"))
        #expect(text.hasPrefix("# "))
        let json = RecordTemplate.uncommented(text)
        #expect(json.hasPrefix("{") && json.hasSuffix("}"), "\(json)")
        let template = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let example = try #require(RecordValidatorTests.valid[type])
        let valid = try #require(try JSONSerialization.jsonObject(with: Data(example.utf8)) as? [String: Any])
        let required = try Self.required(type, valid)
        #expect(!required.isEmpty)
        let missing = required.subtracting(Self.keys(template))
        #expect(missing.isEmpty, "the \(type.rawValue) template lacks \(missing.sorted())")
    }

    @Test("comment lines are left out wherever they are, blank lines at the ends trimmed; the case header has none")
    func uncommenting() {
        #expect(
            RecordTemplate.uncommented("# a\n\n  # b\n{\"text\": \"# not a comment\"}\n# c\n\n")
                == ##"{"text": "# not a comment"}"##)
        #expect(RecordTemplate.uncommented("# only\n# comments\n") == "")
        #expect(RecordTemplate.text(for: .caseHeader, signedAt: "") == nil)
    }
}

internal import Foundation

/// Checks that a record's content holds what its type requires (docs/API.md). Unknown extra fields are
/// kept: forms grow. Errors name the field by its schema path and never repeat a value.
public struct RecordValidator: Sendable {
    /// Outcomes a final agreement may state.
    public static let finalOutcomes: Set<String> = ["resolved", "partially_resolved"]
    /// The exception categories that a disclosure may carry.
    public static let disclosureCategories: Set<String> = [
        "sexual_harassment", "discrimination", "intent_to_harm", "mediator_defense",
    ]
    static let signingMethods: Set<String> = ["written", "verbal"]
    static let requiredAcknowledgements = [
        "confidentiality", "no_recording", "will_not_compel_mediator", "will_not_discuss_outside",
    ]
    static let onlineAcknowledgements = ["devices_off", "nobody_else_present"]

    /// The largest content accepted, in bytes.
    public var maxContentBytes: Int

    public init(maxContentBytes: Int) {
        self.maxContentBytes = maxContentBytes
    }

    /// Parses and validates `content` for `type`. `participants`, when given, are the case's participant
    /// ids: then participant references must name one of them, and a non-confidential outcome needs every
    /// one's consent.
    @discardableResult
    public func validate(
        type: RecordType,
        content: [UInt8],
        participants: Set<String>? = nil
    ) throws(CaseVaultError) -> JSONValue {
        try self.validate(type: type, content: content, parsed: nil, participants: participants)
    }

    /// The same, where `parsed`, when given, is `content` already parsed by a caller that parsed exactly
    /// those bytes (`NewRecord.parsed`), checked instead of parsing them again. Within the package only: a
    /// parse that is not of `content` would let unchecked content through.
    @discardableResult
    package func validate(
        type: RecordType,
        content: [UInt8],
        parsed: JSONValue?,
        participants: Set<String>? = nil
    ) throws(CaseVaultError) -> JSONValue {
        guard content.count <= self.maxContentBytes else {
            throw CaseVaultError(
                .contentTooLarge,
                "the content is larger than the configured limit of \(self.maxContentBytes) bytes; "
                    + "put large documents in an attachment"
            )
        }
        guard let document = parsed ?? JSONValue.parse(content), case .object = document else {
            throw CaseVaultError(.malformedContent, "the content must be a JSON object")
        }
        try Self.check(type: type, document, participants: participants)
        return document
    }

    static func check(type: RecordType, _ document: JSONValue, participants: Set<String>?) throws(CaseVaultError) {
        switch type {
        case .intakeForm:
            _ = try document.requireText("dispute_category")
        case .agreementToMediate:
            let participant = try document.requireParticipant("participant", among: participants)
            _ = participant
            _ = try document.requireTimestamp("signed_at")
            _ = try document.requireChoice("method", in: Self.signingMethods)
            let online = try document.requireBool("online")
            let acknowledgements = try document.requireObject("acknowledgements")
            let needed = Self.requiredAcknowledgements + (online ? Self.onlineAcknowledgements : [])
            for name in needed {
                let path = "acknowledgements.\(name)"
                guard let value = acknowledgements[name] else {
                    throw CaseVaultError(.missingField, "\(path) is required and must be true", field: path)
                }
                guard value == .bool(true) else {
                    throw CaseVaultError(
                        .invalidField,
                        "\(path) must be true: every acknowledgement is required before mediation",
                        field: path
                    )
                }
            }
        case .sessionNote, .debrief:
            _ = try document.requireText("text")
        case .finalAgreement:
            _ = try document.requireText("terms")
            _ = try document.requireChoice("outcome", in: Self.finalOutcomes)
            let confidential = try document.requireBool("outcome_confidential")
            let consents = try document.requireParticipantList("consents", among: participants)
            if !confidential, let participants, !participants.isSubset(of: consents) {
                throw CaseVaultError(
                    .invalidField,
                    "consents must list every participant of the case when outcome_confidential is false",
                    field: "consents"
                )
            }
        case .evaluation:
            let satisfaction = try document.requireInteger("satisfaction")
            guard (1...5).contains(satisfaction) else {
                throw CaseVaultError(
                    .invalidField, "satisfaction must be a whole number from 1 to 5", field: "satisfaction")
            }
            _ = try document.requireBool("would_recommend")
        case .disclosure:
            _ = try document.requireChoice("category", in: Self.disclosureCategories)
            _ = try document.requireText("summary")
        case .caseHeader:
            let expectation =
                "a list of 2 to 20 participants, each an object with a non-empty name and an optional contact text"
            guard case .array(let people) = try document.require("participants", expectation),
                (2...20).contains(people.count)
            else { throw document.mistyped("participants", expectation) }
            for person in people {
                guard case .string(let name) = person["name"] ?? .null, !name.allSatisfy(\.isWhitespace) else {
                    throw document.mistyped("participants", expectation)
                }
                switch person["contact"] {
                case nil, .string: break
                default: throw document.mistyped("participants", expectation)
                }
            }
        }
    }
}

extension JSONValue {
    public func require(_ field: String, _ expectation: String) throws(CaseVaultError) -> JSONValue {
        guard let value = self[field], value != .null else {
            throw CaseVaultError(.missingField, "\(field) is required (\(expectation))", field: field)
        }
        return value
    }

    public func mistyped(_ field: String, _ expectation: String) -> CaseVaultError {
        CaseVaultError(.invalidField, "\(field) must be \(expectation)", field: field)
    }

    public func requireText(_ field: String) throws(CaseVaultError) -> String {
        let expectation = "a non-empty string"
        guard case .string(let text) = try self.require(field, expectation),
            !text.allSatisfy(\.isWhitespace)
        else { throw self.mistyped(field, expectation) }
        return text
    }

    fileprivate func requireBool(_ field: String) throws(CaseVaultError) -> Bool {
        guard case .bool(let value) = try self.require(field, "true or false") else {
            throw self.mistyped(field, "true or false")
        }
        return value
    }

    fileprivate func requireInteger(_ field: String) throws(CaseVaultError) -> Int64 {
        guard case .integer(let value) = try self.require(field, "a whole number") else {
            throw self.mistyped(field, "a whole number")
        }
        return value
    }

    public func requireObject(_ field: String) throws(CaseVaultError) -> JSONValue {
        let value = try self.require(field, "an object")
        guard case .object = value else { throw self.mistyped(field, "an object") }
        return value
    }

    public func requireChoice(_ field: String, in choices: Set<String>) throws(CaseVaultError) -> String {
        let expectation = "one of: \(choices.sorted().joined(separator: ", "))"
        guard case .string(let value) = try self.require(field, expectation), choices.contains(value) else {
            throw self.mistyped(field, expectation)
        }
        return value
    }

    fileprivate func requireTimestamp(_ field: String) throws(CaseVaultError) -> String {
        let expectation = "an RFC 3339 date-time such as 2026-03-01T14:00:00Z"
        guard case .string(let value) = try self.require(field, expectation), Self.isTimestamp(value) else {
            throw self.mistyped(field, expectation)
        }
        return value
    }

    fileprivate func requireParticipant(_ field: String, among participants: Set<String>?) throws(CaseVaultError)
        -> String
    {
        let expectation = "a participant id of the case, such as p1"
        guard case .string(let value) = try self.require(field, expectation), Self.isParticipantID(value),
            participants?.contains(value) ?? true
        else { throw self.mistyped(field, expectation) }
        return value
    }

    fileprivate func requireParticipantList(
        _ field: String,
        among participants: Set<String>?
    ) throws(CaseVaultError) -> Set<String> {
        let expectation = "a list of distinct participant ids of the case, such as [\"p1\", \"p2\"]"
        guard case .array(let items) = try self.require(field, expectation) else {
            throw self.mistyped(field, expectation)
        }
        var result = Set<String>()
        for item in items {
            guard case .string(let value) = item, Self.isParticipantID(value), participants?.contains(value) ?? true,
                result.insert(value).inserted
            else { throw self.mistyped(field, expectation) }
        }
        return result
    }

    /// `p1`, `p2`, …: opaque participant ids; names live only inside the sealed case header.
    public static func isParticipantID(_ value: String) -> Bool {
        let utf8 = Array(value.utf8)
        guard utf8.count >= 2, utf8.count <= 6, utf8[0] == UInt8(ascii: "p"), utf8[1] != UInt8(ascii: "0") else {
            return false
        }
        return utf8.dropFirst().allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }

    /// An RFC 3339 date-time (`2026-03-01T14:00:00Z`, `2026-03-01T14:00:00.25+01:00`; a fraction of 1 to 9
    /// digits), with real months, days (leap years counted), hours, minutes and seconds. Checked here by
    /// hand, not by Foundation's ISO8601DateFormatter: that hands the text to ICU, which killed the process
    /// with SIGFPE (in SimpleDateFormat::subParse) on a fraction of a hundred digits, so any client could
    /// stop the daemon with one record (found by `make fuzz`; the input is kept in its corpus).
    public static func isTimestamp(_ value: String) -> Bool {
        let text = Array(value.utf8)
        func number(_ start: Int, _ count: Int) -> Int? {
            guard start + count <= text.count else { return nil }
            var result = 0
            for byte in text[start..<(start + count)] {
                guard (0x30...0x39).contains(byte) else { return nil }
                result = result * 10 + Int(byte - 0x30)
            }
            return result
        }
        func byte(_ index: Int, is wanted: Character...) -> Bool {
            index < text.count && wanted.contains { $0.asciiValue == text[index] }
        }
        guard let year = number(0, 4), byte(4, is: "-"), let month = number(5, 2), byte(7, is: "-"),
            let day = number(8, 2),
            byte(10, is: "T", "t"), let hour = number(11, 2), byte(13, is: ":"), let minute = number(14, 2),
            byte(16, is: ":"),
            let second = number(17, 2)
        else { return false }
        var index = 19
        if byte(index, is: ".") {
            let start = index + 1
            index = start
            while index < text.count, (0x30...0x39).contains(text[index]) { index += 1 }
            guard (1...9).contains(index - start) else { return false }
        }
        if byte(index, is: "Z", "z") {
            index += 1
        } else if byte(index, is: "+", "-") {
            guard let offsetHours = number(index + 1, 2), byte(index + 3, is: ":"),
                let offsetMinutes = number(index + 4, 2),
                offsetHours <= 23, offsetMinutes <= 59
            else { return false }
            index += 6
        } else {
            return false
        }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        return index == text.count && year >= 1 && (1...12).contains(month) && (1...days[month - 1]).contains(day)
            && hour <= 23 && minute <= 59 && second <= 59
    }
}

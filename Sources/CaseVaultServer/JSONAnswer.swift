/// A JSON object written member by member, for the answers of the hot routes: on a PUT, Foundation's
/// `JSONEncoder` cost more than the rest of the answer. The caller gives the members in sorted order, as
/// `JSONResponse.make` sorts them; strings are escaped as JSON requires (the quote, the backslash and the
/// control characters; `/` is left as it is, as `make` leaves it).
package struct JSONObjectWriter {
    private var bytes: [UInt8] = [UInt8(ascii: "{")]
    private var empty = true

    package init(capacity: Int = 256) {
        self.bytes.reserveCapacity(capacity)
    }

    /// A member whose value is a string.
    package mutating func string(_ key: String, _ value: String) {
        self.key(key)
        Self.write(value, to: &self.bytes)
    }

    /// A member whose value is an array of strings.
    package mutating func strings(_ key: String, _ values: [String]) {
        self.key(key)
        self.bytes.append(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { self.bytes.append(UInt8(ascii: ",")) }
            Self.write(value, to: &self.bytes)
        }
        self.bytes.append(UInt8(ascii: "]"))
    }

    /// The object, closed.
    package consuming func finish() -> [UInt8] {
        self.bytes.append(UInt8(ascii: "}"))
        return self.bytes
    }

    private mutating func key(_ key: String) {
        if !self.empty { self.bytes.append(UInt8(ascii: ",")) }
        self.empty = false
        Self.write(key, to: &self.bytes)
        self.bytes.append(UInt8(ascii: ":"))
    }

    private static func write(_ text: String, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(byte)
            case 0x0A: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case ..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes += Array(#"\u00"#.utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
            default:
                bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

/// The answer to a filing (`POST /v1/cases/{case_id}/records`): the record's id, case, type and time, the
/// record it supersedes, and the notes a final agreement shredded.
package struct FilingAnswer: Encodable, Sendable {
    package var recordID: String
    package var caseID: String
    package var type: String
    package var createdAt: String
    package var supersedes: String?
    package var shredded: [String]

    package init(
        recordID: String, caseID: String, type: String, createdAt: String, supersedes: String?, shredded: [String]
    ) {
        (self.recordID, self.caseID, self.type, self.createdAt) = (recordID, caseID, type, createdAt)
        (self.supersedes, self.shredded) = (supersedes, shredded)
    }

    enum CodingKeys: String, CodingKey {
        case recordID = "record_id"
        case caseID = "case_id"
        case type
        case createdAt = "created_at"
        case supersedes, shredded
    }

    /// What `JSONResponse.make` writes for it (sorted keys, no member for a missing `supersedes`), written
    /// by hand.
    package func encoded() -> [UInt8] {
        var writer = JSONObjectWriter()
        writer.string("case_id", self.caseID)
        writer.string("created_at", self.createdAt)
        writer.string("record_id", self.recordID)
        writer.strings("shredded", self.shredded)
        if let supersedes = self.supersedes { writer.string("supersedes", supersedes) }
        writer.string("type", self.type)
        return writer.finish()
    }
}

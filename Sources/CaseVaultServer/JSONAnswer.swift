internal import CaseVaultCore

/// A JSON object written member by member, for the answers of the hot routes: on a PUT, Foundation's
/// `JSONEncoder` cost more than the rest of the answer. The caller gives the members in sorted order, as
/// `JSONResponse.make` sorts them; strings are escaped as `make`'s encoder escapes them (`JSONText`).
package struct JSONObjectWriter {
    private var bytes: [UInt8] = [UInt8(ascii: "{")]
    private var empty = true

    package init(capacity: Int = 256) {
        self.bytes.reserveCapacity(capacity)
    }

    /// A member whose value is a string.
    package mutating func string(_ key: String, _ value: String) {
        self.key(key)
        JSONText.appendString(value, to: &self.bytes)
    }

    /// A member whose value is an array of strings.
    package mutating func strings(_ key: String, _ values: [String]) {
        self.key(key)
        self.bytes.append(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { self.bytes.append(UInt8(ascii: ",")) }
            JSONText.appendString(value, to: &self.bytes)
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
        JSONText.appendString(key, to: &self.bytes)
        self.bytes.append(UInt8(ascii: ":"))
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

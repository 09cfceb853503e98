internal import CaseVaultCore

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

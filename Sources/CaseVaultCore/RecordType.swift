/// The kinds of record CaseVault keeps (docs/API.md). There is deliberately no type for recordings or
/// transcripts: the program never records a session.
public enum RecordType: String, Sendable, CaseIterable, Codable {
    case intakeForm = "intake_form"
    case agreementToMediate = "agreement_to_mediate"
    case sessionNote = "session_note"
    case finalAgreement = "final_agreement"
    case evaluation = "evaluation"
    case disclosure = "disclosure"
    /// A post-session discussion between the case's mediators and their supervisor: confidential like the
    /// notes, but not destroyed by the final agreement; never in statistics, never routed to an office.
    case debrief = "debrief"
    /// The case header: participants' names and contacts, sealed like any record. Filed only by opening a
    /// case, never through the records route.
    case caseHeader = "case_header"

    /// The types a client may file.
    public static let fileable: [RecordType] = [
        .intakeForm, .agreementToMediate, .sessionNote, .finalAgreement, .evaluation, .disclosure, .debrief,
    ]

    /// Names the policy forbids outright, refused with `forbidden-record-type` rather than
    /// `unknown-record-type` so that the caller learns why.
    public static let forbiddenNames: Set<String> = ["recording", "transcript"]

    /// The type named `name`, or a typed error that does not echo the name back.
    public static func parse(_ name: String) throws(CaseVaultError) -> RecordType {
        if let type = RecordType(rawValue: name), Self.fileable.contains(type) {
            return type
        }
        let allowed = Self.fileable.map(\.rawValue).joined(separator: ", ")
        if Self.forbiddenNames.contains(name.lowercased()) {
            throw CaseVaultError(
                .forbiddenRecordType,
                "sessions are never recorded and no transcript is kept; the record types are: \(allowed)",
                field: "type"
            )
        }
        throw CaseVaultError(.unknownRecordType, "the record type must be one of: \(allowed)", field: "type")
    }
}

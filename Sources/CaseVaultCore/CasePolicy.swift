/// The lifecycle rules of docs/API.md, as a pure function of the case and what is on file: the store
/// asks it before every filing and applies the effect it returns in the same commit.
public enum CasePolicy {
    /// What filing a record does to its case.
    public struct Effect: Equatable, Sendable {
        /// The case's state after the filing.
        public var state: CaseState
        /// Session notes the filing destroys in the same operation (a final agreement shreds them all).
        public var shredNotes: [RecordID]
    }

    /// Decides whether a record of `type` may be filed now.
    /// - Parameters:
    ///   - agreedParticipants: participants whose agreement to mediate is on file (each such agreement was
    ///     validated with every acknowledgement true when it was filed).
    ///   - notes: the case's live session notes.
    ///   - participant: for an agreement to mediate, the participant it is for.
    public static func filing(
        _ type: RecordType,
        into summary: CaseSummary,
        agreedParticipants: Set<String>,
        notes: [RecordID],
        participant: String? = nil
    ) throws(CaseVaultError) -> Effect {
        let everyone = Set(summary.participants)
        switch type {
        case .evaluation, .disclosure:
            // Evaluations come after the sessions; disclosures may be needed at any time, even after close.
            return Effect(state: summary.state, shredNotes: [])
        case .debrief:
            // A debrief follows a session, so it needs what a session needs: every participant's agreement
            // to mediate on file (kept after the case closes, so a closed case that had sessions takes
            // debriefs; one withdrawn before them does not).
            guard everyone.isSubset(of: agreedParticipants) else {
                throw CaseVaultError(
                    .agreementsMissing,
                    "a debrief follows a session: it can be filed once every participant's agreement to mediate is on file"
                )
            }
            return Effect(state: summary.state, shredNotes: [])
        default:
            break
        }
        guard summary.state != .closed else {
            throw CaseVaultError(
                .caseClosed, "the case is closed; only evaluations, disclosures and debriefs can still be filed")
        }
        switch type {
        case .intakeForm:
            return Effect(state: summary.state, shredNotes: [])
        case .agreementToMediate:
            guard let participant, everyone.contains(participant) else {
                throw CaseVaultError(
                    .invalidField,
                    "participant must be one of the case's participants (p1 to p\(summary.participantCount))",
                    field: "participant"
                )
            }
            return Effect(state: max(summary.state, .agreement), shredNotes: [])
        case .sessionNote:
            guard everyone.isSubset(of: agreedParticipants) else {
                throw CaseVaultError(
                    .agreementsMissing,
                    "session notes can be filed only once every participant's agreement to mediate is on file"
                )
            }
            return Effect(state: .session, shredNotes: [])
        case .finalAgreement:
            guard everyone.isSubset(of: agreedParticipants) else {
                throw CaseVaultError(
                    .agreementsMissing,
                    "a final agreement needs every participant's agreement to mediate on file"
                )
            }
            return Effect(state: .closed, shredNotes: notes)
        case .evaluation, .disclosure, .debrief:
            return Effect(state: summary.state, shredNotes: [])
        case .caseHeader:
            throw CaseVaultError(
                .unknownRecordType, "the case header is written only when the case is opened", field: "type")
        }
    }

    /// Closing without a final agreement: every note is shredded in the same operation.
    public static func closing(_ summary: CaseSummary, notes: [RecordID]) throws(CaseVaultError) -> Effect {
        guard summary.state != .closed else {
            throw CaseVaultError(.caseClosed, "the case is already closed")
        }
        return Effect(state: .closed, shredNotes: notes)
    }
}

/// What a person fills in to file a record of each type: the fields the type requires (`RecordValidator`),
/// with placeholders, after a few comment lines that say what each field takes. `casevaultctl record file
/// --edit` opens it in an editor; lines that begin with `#` are left out of what is filed.
public enum RecordTemplate {
    /// The template of `type` (`signedAt`, an RFC 3339 time, in an agreement's `signed_at`); `nil` for the
    /// case header, which only opening a case files.
    public static func text(for type: RecordType, signedAt: String) -> String? {
        let (comment, body): (String, String)
        switch type {
        case .intakeForm:
            comment = """
                An intake form. dispute_category is what the statistics count cases by: a few words such
                as roommate, academic or workplace. Add any other fields the form records.
                """
            body = #"""
                {
                  "dispute_category": ""
                }
                """#
        case .agreementToMediate:
            comment = """
                One participant's agreement to mediate. participant: p1, p2, … in the order the case was
                opened with (casevaultctl case show lists them). method: written or verbal. Set each
                acknowledgement to true only once the participant has given it. For an online session set
                online to true: devices_off and nobody_else_present are then required as well.
                """
            body = """
                {
                  "participant": "p1",
                  "signed_at": "\(signedAt)",
                  "method": "written",
                  "online": false,
                  "acknowledgements": {
                    "confidentiality": false,
                    "no_recording": false,
                    "will_not_compel_mediator": false,
                    "will_not_discuss_outside": false,
                    "devices_off": false,
                    "nobody_else_present": false
                  }
                }
                """
        case .sessionNote:
            comment = """
                The mediator's session note. It is destroyed, unreadable, when the final agreement is filed
                or the case closes without one.
                """
            body = #"""
                {
                  "text": ""
                }
                """#
        case .finalAgreement:
            comment = """
                The final agreement. outcome: resolved or partially_resolved. consents: the participants
                (p1, p2, …) who consent to the outcome being known; with outcome_confidential false it must
                list every participant. Filing it destroys every session note of the case.
                """
            body = #"""
                {
                  "terms": "",
                  "outcome": "resolved",
                  "outcome_confidential": true,
                  "consents": []
                }
                """#
        case .evaluation:
            comment = """
                A participant's evaluation. satisfaction: a whole number from 1 to 5. would_recommend: true
                or false.
                """
            body = #"""
                {
                  "satisfaction": null,
                  "would_recommend": null
                }
                """#
        case .disclosure:
            comment = """
                A disclosure under one of the policy's exceptions, read by the director and the office the
                configuration routes its category to. category: sexual_harassment, discrimination,
                intent_to_harm or mediator_defense.
                """
            body = #"""
                {
                  "category": "",
                  "summary": ""
                }
                """#
        case .debrief:
            comment = """
                A debrief: what the case's mediators and their supervisor discussed after a session. Read by
                them and the director only.
                """
            body = #"""
                {
                  "text": ""
                }
                """#
        case .caseHeader:
            return nil
        }
        return Self.commented(comment + "\nLines that begin with # are left out. Leave the file empty to file nothing.")
            + body + "\n"
    }

    /// `text` as comment lines.
    public static func commented(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { "# " + $0 + "\n" }.joined()
    }

    /// What an edited template holds once its comment lines (those whose first non-blank character is
    /// `#`) are left out, with the blank lines at either end trimmed. (No line of JSON begins with `#`: a
    /// string cannot span lines.)
    public static func uncommented(_ edited: String) -> String {
        let kept = edited.split(separator: "\n", omittingEmptySubsequences: false).filter {
            $0.first { !$0.isWhitespace } != "#"
        }
        return kept.joined(separator: "\n").trimmingBlankLines()
    }
}

extension String {
    fileprivate func trimmingBlankLines() -> String {
        var lines = self.split(separator: "\n", omittingEmptySubsequences: false)
        while let first = lines.first, first.allSatisfy(\.isWhitespace) { lines.removeFirst() }
        while let last = lines.last, last.allSatisfy(\.isWhitespace) { lines.removeLast() }
        return lines.joined(separator: "\n")
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto
internal import Logging

extension Vault {
    /// Opens a case: its sealed header (participants' names and contacts) and its row, in one commit.
    /// `header` is JSON: `{"participants": [{"name": …, "contact": …}, …]}`.
    package func openCase(header: [UInt8], mediators: [UInt32], author: String?) throws(CaseVaultError)
        -> CaseSummary
    {
        let document = try self.validator.validate(type: .caseHeader, content: header)
        guard case .array(let people) = document["participants"] ?? .null else {
            throw CaseVaultError(.missingField, "participants is required", field: "participants")
        }
        let id = CaseID(bytes: Random.bytes(count: CaseID.byteCount))
        let summary = CaseSummary(
            id: id, state: .intake, participantCount: people.count, mediators: Array(Set(mediators)).sorted(),
            createdAt: self.storage.now(), closedAt: nil
        )
        let headerID = RecordID(bytes: Random.bytes(count: RecordID.byteCount))
        var effects = FilingEffects()
        effects.newCase = (summary, headerID)
        _ = try self.put(
            validated: NewRecord(caseID: id, type: .caseHeader, content: header, author: author),
            effects: effects,
            id: headerID
        )
        self.logger.info("case opened", metadata: ["case.id": "\(id)"])
        return summary
    }

    /// Files a record under the lifecycle rules: the case must exist, the content must name its own
    /// participants, notes need every participant's agreement, a final agreement shreds every note of the
    /// case in the same operation and closes it. Returns the record and the notes it shredded.
    package func file(
        _ record: NewRecord,
        authority: Authority = .daemon
    ) throws(CaseVaultError) -> (record: RecordMetadata, shredded: [RecordID]) {
        try self.file(record, rosterUID: nil) { _, _ throws(CaseVaultError) in authority }
    }

    /// `file(_:authority:)` for a caller whose right to file depends on the case: under the case's lock,
    /// one trip to the index gives the case and whether `rosterUID` is on the mediator roster; `decide`
    /// sees those, never content, and returns who allowed the filing (for destruction certificates) or
    /// throws to refuse. So the case is read once, and the case's state and mediators the decision saw hold
    /// for the filing it allows (the roster is read in the same trip; a removal from it does not wait for
    /// the case's lock).
    package func file(
        _ record: NewRecord,
        rosterUID: UInt32?,
        decide: (CaseSummary, Bool) throws(CaseVaultError) -> Authority
    ) throws(CaseVaultError) -> (record: RecordMetadata, shredded: [RecordID]) {
        guard RecordType.fileable.contains(record.type) else {
            throw CaseVaultError(
                .unknownRecordType, "the case header is written only when the case is opened", field: "type")
        }
        let filed = try self.storage.withCaseLock(record.caseID, readingRoster: rosterUID) {
            (found, onRoster) throws(CaseVaultError) in
            let decided = try self.decideFiling(record, found, onRoster, decide)
            // Only what the rule for this type needs is looked up: most filings need nothing on file.
            let notes = record.type == .finalAgreement ? try self.storage.notesToDestroy(record.caseID) : []
            var agreed = Set<String>()
            if Self.needsAgreements(record.type) {
                for agreement in try self.storage.agreements(record.caseID) {
                    if let participant = self.sealedParticipant(agreement, record.caseID) {
                        agreed.insert(participant)
                    } else if let participant = try self.participant(of: agreement.id) {
                        agreed.insert(participant)
                    }
                }
            }
            let (effects, shredNotes) = try self.filingEffects(record, decided, notes: notes, agreed: agreed)
            let stored = try self.put(
                validated: record, effects: effects, participant: Self.participant(record, decided.document))
            try self.storage.finishMarkedShreds(shredNotes)
            return (stored, shredNotes)
        }
        Self.logFiled(filed.0, self.logger)
        return filed
    }

    /// What a filing's decision makes of the case its lock read: `not-found` for an unknown case; who allowed
    /// the filing (`decide`'s answer, or its refusal); the content validated against the case's participants.
    func decideFiling(
        _ record: NewRecord, _ found: CaseSummary?, _ onRoster: Bool,
        _ decide: (CaseSummary, Bool) throws(CaseVaultError) -> Authority
    ) throws(CaseVaultError) -> (summary: CaseSummary, authority: Authority, document: JSONValue) {
        guard let summary = found else {
            throw CaseVaultError.caseNotFound()
        }
        let authority = try decide(summary, onRoster)
        let document = try self.validator.validate(
            type: record.type, content: record.content, parsed: record.parsed,
            participants: Set(summary.participants)
        )
        return (summary, authority, document)
    }

    /// Whether filing `type` needs the participants whose agreements to mediate are on file.
    static func needsAgreements(_ type: RecordType) -> Bool {
        [.sessionNote, .finalAgreement, .debrief].contains(type)
    }

    /// The participant of an agreement to mediate, from the sealed copy the storage kept beside it; `nil` when
    /// there is none (filed before the storage kept it, or a storage that keeps none) or it does not open
    /// (altered, or copied from another agreement): the agreement itself is opened to read it then.
    func sealedParticipant(_ agreement: (id: RecordID, sealedParticipant: [UInt8]?), _ caseID: CaseID) -> String? {
        agreement.sealedParticipant.flatMap { self.barrier.openParticipant($0, recordID: agreement.id, caseID: caseID) }
    }

    /// What filing `record` changes besides its record, under the lifecycle rules: the case's state, and the
    /// notes it shreds (returned too) on the authority that allowed it.
    func filingEffects(
        _ record: NewRecord, _ decided: (summary: CaseSummary, authority: Authority, document: JSONValue),
        notes: [RecordID], agreed: Set<String>
    ) throws(CaseVaultError) -> (effects: FilingEffects, shredNotes: [RecordID]) {
        var participant: String?
        if case .string(let value) = decided.document["participant"] ?? .null {
            participant = value
        }
        let summary = decided.summary
        let effect = try CasePolicy.filing(
            record.type, into: summary, agreedParticipants: agreed, notes: notes, participant: participant
        )
        var effects = FilingEffects()
        if effect.state != summary.state {
            effects.caseState = (summary.id, effect.state, effect.state == .closed ? self.storage.now() : nil, nil)
        }
        effects.markShredding = effect.shredNotes
        effects.shredOrder = ShredOrder(method: .finalAgreement, authority: decided.authority)
        return (effects, effect.shredNotes)
    }

    /// The case's sealed header (participants' names and contacts), opened; `not-found` for an unknown case.
    package func caseHeader(_ id: CaseID) throws(CaseVaultError) -> [UInt8] {
        try self.get(try self.storage.caseHeaderID(id)).content
    }

    /// The participant `record` is for when it is an agreement to mediate (what the storage keeps of it).
    static func participant(_ record: NewRecord, _ document: JSONValue) -> String? {
        guard record.type == .agreementToMediate, case .string(let participant) = document["participant"] ?? .null
        else { return nil }
        return participant
    }

    /// The participant an agreement to mediate is for: its content is opened, read and wiped here.
    private func participant(of id: RecordID) throws(CaseVaultError) -> String? {
        var content = try self.get(id).content
        defer { Memory.zero(&content) }
        return Self.participant(in: content)
    }

    /// The participant an agreement to mediate's opened content names.
    static func participant(in content: [UInt8]) -> String? {
        guard case .string(let participant) = JSONValue.parseStored(content)?["participant"] ?? .null else {
            return nil
        }
        return participant
    }
}

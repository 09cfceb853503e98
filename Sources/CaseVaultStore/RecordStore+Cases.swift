public import CaseVaultCore
internal import CaseVaultCrypto
internal import Logging

#if canImport(Glibc)
internal import Glibc
#endif

extension RecordStore {
    /// Opens a case: its sealed header (participants' names and contacts) and its row, in one commit.
    /// `header` is JSON: `{"participants": [{"name": …, "contact": …}, …]}`.
    public func openCase(header: [UInt8], mediators: [UInt32], author: String?) throws(CaseVaultError) -> CaseSummary {
        let document = try self.validator.validate(type: .caseHeader, content: header)
        guard case .array(let people) = document["participants"] ?? .null else {
            throw CaseVaultError(.missingField, "participants is required", field: "participants")
        }
        let id = CaseID(bytes: Random.bytes(count: CaseID.byteCount))
        let summary = CaseSummary(
            id: id, state: .intake, participantCount: people.count, mediators: Array(Set(mediators)).sorted(),
            createdAt: self.now(), closedAt: nil
        )
        let headerID = RecordID(bytes: Random.bytes(count: RecordID.byteCount))
        var effects = CommitEffects()
        effects.newCase = (summary, headerID)
        _ = try self.put(
            validated: NewRecord(caseID: id, type: .caseHeader, content: header, author: author),
            effects: effects,
            id: headerID
        )
        self.logger.info("case opened", metadata: ["case.id": "\(id)"])
        return summary
    }

    /// The case's state, participant count and mediators; `not-found` for an unknown id.
    public func caseSummary(_ id: CaseID) throws(CaseVaultError) -> CaseSummary {
        guard let summary = try self.index.lookup({ db in try Index.caseSummary(db, id: id) }) else {
            throw Self.caseNotFound()
        }
        return summary
    }

    /// Files a record under the lifecycle rules: the case must exist, the content must name its own
    /// participants, notes need every participant's agreement, a final agreement shreds every note of the
    /// case in the same operation and closes it. Returns the record and the notes it shredded.
    public func file(
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
    public func file(
        _ record: NewRecord,
        rosterUID: UInt32?,
        decide: (CaseSummary, Bool) throws(CaseVaultError) -> Authority
    ) throws(CaseVaultError) -> (record: RecordMetadata, shredded: [RecordID]) {
        guard RecordType.fileable.contains(record.type) else {
            throw CaseVaultError(
                .unknownRecordType, "the case header is written only when the case is opened", field: "type")
        }
        return try self.caseLocks.withLock(record.caseID) { () throws(CaseVaultError) in
            let (found, onRoster) = try self.index.lookup { db in
                (
                    try Index.caseSummary(db, id: record.caseID),
                    try rosterUID.map { uid in try Index.isOnRoster(db, uid: uid) } ?? false
                )
            }
            guard let summary = found else {
                throw Self.caseNotFound()
            }
            let authority = try decide(summary, onRoster)
            let document = try self.validator.validate(
                type: record.type, content: record.content, participants: Set(summary.participants)
            )
            // Only what the rule for this type needs is looked up: most filings need nothing on file.
            let notes = record.type == .finalAgreement ? try self.notesToDestroy(record.caseID) : []
            var agreed = Set<String>()
            if record.type == .sessionNote || record.type == .finalAgreement {
                for agreement in try self.liveIDs(record.caseID, .agreementToMediate) {
                    if let participant = try self.participant(of: agreement) {
                        agreed.insert(participant)
                    }
                }
            }
            var participant: String?
            if case .string(let value) = document["participant"] ?? .null {
                participant = value
            }
            let effect = try CasePolicy.filing(
                record.type, into: summary, agreedParticipants: agreed, notes: notes, participant: participant
            )
            var effects = CommitEffects()
            if effect.state != summary.state {
                effects.caseState = (summary.id, effect.state, effect.state == .closed ? self.now() : nil, nil)
            }
            effects.markShredding = effect.shredNotes
            effects.shredOrder = ShredOrder(method: .finalAgreement, authority: authority)
            let stored = try self.put(validated: record, effects: effects)
            try self.finishMarkedShreds(effect.shredNotes)
            return (stored, effect.shredNotes)
        }
    }

    /// Closes a case without a final agreement: every session note is shredded in the same operation.
    public func closeCase(_ id: CaseID, outcome: ClosingOutcome, authority: Authority = .daemon) throws(CaseVaultError)
        -> [RecordID]
    {
        try self.caseLocks.withLock(id) { () throws(CaseVaultError) in
            let summary = try self.caseSummary(id)
            let notes = try self.notesToDestroy(id)
            let effect = try CasePolicy.closing(summary, notes: notes)
            try self.asWriter { () throws(CaseVaultError) in
                try self.index.write { db in
                    var effects = CommitEffects()
                    effects.caseState = (id, effect.state, self.now(), outcome.rawValue)
                    effects.markShredding = effect.shredNotes
                    effects.shredOrder = ShredOrder(method: .caseClosed, authority: authority, reason: outcome.rawValue)
                    try Index.apply(db, effects)
                }
            }
            try self.finishMarkedShreds(effect.shredNotes)
            self.logger.info("case closed", metadata: ["case.id": "\(id)", "records.shredded": "\(notes.count)"])
            return effect.shredNotes
        }
    }

    /// Replaces the case's mediators.
    public func assignMediators(_ id: CaseID, _ uids: [UInt32]) throws(CaseVaultError) {
        try self.caseLocks.withLock(id) { () throws(CaseVaultError) in
            _ = try self.caseSummary(id)
            try self.index.write { db in try Index.replaceMediators(db, caseID: id, uids: Set(uids)) }
        }
    }

    // MARK: Roster

    /// The uids on the mediator roster.
    public func roster() throws(CaseVaultError) -> [UInt32] {
        try self.index.read { db in try Index.rosterUIDs(db) }
    }

    public func isOnRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool {
        try self.index.lookup { db in try Index.isOnRoster(db, uid: uid) }
    }

    /// Adds a mediator to the roster; returns whether it was new.
    @discardableResult
    public func addToRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool {
        try self.index.write { db in try Index.addToRoster(db, uid: uid, at: self.now()) }
    }

    /// Removes a mediator from the roster, which ends their access at their next request; returns whether
    /// they were on it.
    @discardableResult
    public func removeFromRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool {
        try self.index.write { db in try Index.removeFromRoster(db, uid: uid) }
    }

    // MARK: Internals

    /// Runs the rest of the shred protocol for records a commit marked `shredding`.
    func finishMarkedShreds(_ ids: [RecordID]) throws(CaseVaultError) {
        guard !ids.isEmpty else { return }
        try self.asWriter { () throws(CaseVaultError) in
            self.retryPendingShreds()
            let rows = try self.index.read { db in
                try ids.compactMap { id in try Index.row(db, id: id) }.filter { $0.state == .shredding }
            }
            try self.runShred(rows, from: .resumed)
            self.logger.info("records shredded", metadata: ["records.count": "\(rows.count)"])
        }
    }

    /// The session notes a final agreement or a closing destroys: every live note, unless the configuration
    /// lets a legal hold keep notes and one stands on the case (the sweep disposes them once it is released).
    func notesToDestroy(_ caseID: CaseID) throws(CaseVaultError) -> [RecordID] {
        if self.configuration.retention.holdsKeepSessionNotes, try self.isHeld(caseID) {
            return []
        }
        return try self.liveIDs(caseID, .sessionNote)
    }

    /// The live records of one type in a case, in filing order.
    func liveIDs(_ caseID: CaseID, _ type: RecordType) throws(CaseVaultError) -> [RecordID] {
        try self.index.lookup { db in
            try Index.liveRecordIDs(db, caseID: caseID, type: type)
        }.map { text throws(CaseVaultError) in try RecordID(text) }
    }

    /// The participant an agreement to mediate is for, read through the barrier.
    private func participant(of id: RecordID) throws(CaseVaultError) -> String? {
        var content = try self.get(id).content
        defer { Memory.zero(&content) }
        if case .string(let participant) = JSONValue.parse(content)?["participant"] ?? .null {
            return participant
        }
        return nil
    }
}

extension RecordStore {
    /// The case's sealed header (participants' names and contacts), opened; `not-found` for an unknown case.
    public func caseHeader(_ id: CaseID) throws(CaseVaultError) -> [UInt8] {
        let header = try self.index.lookup { db in try Index.headerRecordID(db, caseID: id) }
        guard let header else {
            throw Self.caseNotFound()
        }
        return try self.get(try RecordID(header)).content
    }
}

extension RecordStore {
    /// `not-found` for a case id no case has.
    static func caseNotFound() -> CaseVaultError {
        CaseVaultError(.notFound, "no case has this id; check the id")
    }
}

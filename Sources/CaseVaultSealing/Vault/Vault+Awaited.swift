package import CaseVaultCore
internal import CaseVaultCrypto

// The vault's calls that the server makes from its event loops, suspended while the storage waits rather
// than blocking a thread: reads (the local store answers them on the calling thread), and filings
// (`SuspendingStorage`). Each means what the blocking call of the same name means, and is made of the same
// steps (`decideFiling`, `filingEffects`, `seal`).
extension Vault {
    /// `read(_:rosterUID:decide:)` from the server's event loops: the storage's reads suspend the calling
    /// task rather than block its thread (`RecordStorage.awaitStoredRecord`); the opening is the same.
    package func awaitRead(
        _ id: RecordID,
        rosterUID: UInt32?,
        decide: (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) async throws(CaseVaultError) -> Record {
        try await self.awaitOpen(try await self.storage.awaitStoredRecord(id, rosterUID: rosterUID, decide: decide))
    }

    /// `open`, its rereads awaited.
    func awaitOpen(_ stored: StoredRecord, again: Bool = true) async throws(CaseVaultError) -> Record {
        do {
            return Record(metadata: stored.metadata, content: try self.barrier.open(stored))
        } catch {
            let shredHasBegun = try await self.storage.awaitShredHasBegun(stored.metadata.id)
            guard try Self.readsAgain(after: error, first: again, shredHasBegun: shredHasBegun) else { throw error }
            let reread = try await self.storage.awaitStoredRecord(stored.metadata.id)
            guard reread.key.wrapped != stored.key.wrapped else { throw error }
            return try await self.awaitOpen(reread, again: false)
        }
    }
}

extension Vault where Storage: SuspendingStorage {
    /// `put(_:)`, its commit awaited: the primitive as the server's filings reach the storage, for measuring
    /// them in process (casevault-bench).
    package func awaitPut(_ record: NewRecord) async throws(CaseVaultError) -> RecordMetadata {
        let document = try self.validator.validate(type: record.type, content: record.content, parsed: record.parsed)
        if let supersedes = record.supersedes {
            try Self.checkSupersedes(record, try await self.storage.awaitMetadata(supersedes))
        }
        let sealed = self.seal(record, id: nil, participant: Self.participant(record, document))
        let stored = try await self.storage.awaitCommit(sealed, effects: FilingEffects())
        Self.logFiled(stored, self.logger)
        return stored
    }

    /// `file(_:rosterUID:decide:)`, each call of the storage awaited.
    package func awaitFile(
        _ record: NewRecord,
        rosterUID: UInt32?,
        decide: (CaseSummary, Bool) throws(CaseVaultError) -> Authority
    ) async throws(CaseVaultError) -> (record: RecordMetadata, shredded: [RecordID]) {
        guard RecordType.fileable.contains(record.type) else {
            throw CaseVaultError(
                .unknownRecordType, "the case header is written only when the case is opened", field: "type")
        }
        if let filed = try await self.awaitFileInOneTrip(record, rosterUID: rosterUID, decide: decide) {
            Self.logFiled(filed, self.logger)
            return (filed, [])
        }
        let filed = try await self.storage.awaitWithCaseLock(record.caseID, readingRoster: rosterUID) {
            (found, onRoster) async throws(CaseVaultError) in
            let decided = try self.decideFiling(record, found, onRoster, decide)
            let notes = record.type == .finalAgreement ? try await self.storage.awaitNotesToDestroy(record.caseID) : []
            var agreed = Set<String>()
            if Self.needsAgreements(record.type) {
                for agreement in try await self.storage.awaitAgreements(record.caseID) {
                    if let participant = self.sealedParticipant(agreement, record.caseID) {
                        agreed.insert(participant)
                    } else if let participant = try await self.awaitParticipant(of: agreement.id) {
                        agreed.insert(participant)
                    }
                }
            }
            let (effects, shredNotes) = try self.filingEffects(record, decided, notes: notes, agreed: agreed)
            if let supersedes = record.supersedes {
                try Self.checkSupersedes(record, try await self.storage.awaitMetadata(supersedes))
            }
            let sealed = self.seal(record, id: nil, participant: Self.participant(record, decided.document))
            let stored = try await self.storage.awaitCommit(sealed, effects: effects)
            try await self.storage.awaitFinishMarkedShreds(shredNotes)
            return (stored, shredNotes)
        }
        Self.logFiled(filed.0, self.logger)
        return filed
    }

    /// A filing that adds its record and changes nothing else, decided on its case read without the case's
    /// lock and committed in one trip if what was read still holds under it
    /// (`SuspendingStorage.awaitFileIfUnchanged`); `nil`, having filed nothing, when the storage has no such
    /// path, when the filing reads more than its case (a type that needs the agreements on file, a final
    /// agreement's notes, the record it supersedes), or when the decision refused it or something changed:
    /// `awaitFile` then decides it again under the lock, so that every refusal and every filing with
    /// effects comes from there, as before.
    private func awaitFileInOneTrip(
        _ record: NewRecord, rosterUID: UInt32?, decide: (CaseSummary, Bool) throws(CaseVaultError) -> Authority
    ) async throws(CaseVaultError) -> RecordMetadata? {
        guard record.supersedes == nil, record.type != .finalAgreement, !Self.needsAgreements(record.type) else {
            return nil
        }
        return try await self.storage.awaitFileIfUnchanged(record.caseID, readingRoster: rosterUID) { snapshot in
            guard let decided = try? self.decideFiling(record, snapshot.summary, snapshot.onRoster, decide),
                let (effects, _) = try? self.filingEffects(record, decided, notes: [], agreed: []), effects.isEmpty
            else { return nil }
            return self.seal(record, id: nil, participant: Self.participant(record, decided.document))
        }
    }

    /// `participant(of:)`, the agreement read awaited.
    private func awaitParticipant(of id: RecordID) async throws(CaseVaultError) -> String? {
        var content = try await self.awaitOpen(try await self.storage.awaitStoredRecord(id)).content
        defer { Memory.zero(&content) }
        return Self.participant(in: content)
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto
internal import Logging

/// The sealing layer's face to the server: the only part of CaseVault that holds keys and sees plaintext.
/// It validates and seals content before it reaches the storage, and opens what the storage gives back;
/// the storage below it (`RecordStorage`) sees ciphertext and ids only. Safe to use from many threads.
///
/// Every call blocks on the storage's I/O: call it from a thread that may block; but for the awaited calls
/// (`awaitRead`, and `awaitFile` on a `SuspendingStorage`), which the server makes from its event loops.
package final class Vault<Storage: RecordStorage>: Sendable {
    /// Where the sealed records are kept; what needs no key or content (shreds, retention, backups,
    /// rotation, the roster) is asked of it directly.
    package let storage: Storage
    let barrier: Barrier
    let validator: RecordValidator
    let logger: Logger

    package init(storage: Storage) {
        self.storage = storage
        self.barrier = storage.sealing.barrier
        self.validator = RecordValidator(maxContentBytes: storage.maxContentBytes)
        self.logger = storage.logger
    }

    // MARK: Filing

    /// Validates, seals and durably files a record, with no lifecycle rule: the low-level primitive under
    /// `file(_:)`, which the server uses. When this returns, the record survives a crash.
    package func put(_ record: NewRecord) throws(CaseVaultError) -> RecordMetadata {
        let document = try self.validator.validate(type: record.type, content: record.content, parsed: record.parsed)
        let stored = try self.put(
            validated: record, effects: FilingEffects(), participant: Self.participant(record, document))
        Self.logFiled(stored, self.logger)
        return stored
    }

    /// Logged once the filing is kept: after the case's lock, whose end commits it on some storages.
    static func logFiled(_ stored: RecordMetadata, _ logger: Logger) {
        logger.debug("record filed", metadata: ["record.id": "\(stored.id)", "case.id": "\(stored.caseID)"])
    }

    /// Seals validated content on the caller's thread (in parallel with other callers; the storage batches
    /// only placing, flushing and committing) and commits it with `effects`.
    func put(
        validated record: NewRecord, effects: FilingEffects, id: RecordID? = nil, participant: String? = nil
    ) throws(CaseVaultError) -> RecordMetadata {
        if let supersedes = record.supersedes {
            try Self.checkSupersedes(record, try self.storage.metadata(supersedes))
        }
        return try self.storage.commit(self.seal(record, id: id, participant: participant), effects: effects)
    }

    /// Refuses an amendment whose `previous` record is of another case or type.
    static func checkSupersedes(_ record: NewRecord, _ previous: RecordMetadata) throws(CaseVaultError) {
        guard previous.caseID == record.caseID, previous.type == record.type else {
            throw CaseVaultError(
                .invalidField,
                "supersedes must name a record of the same case and type; an amendment replaces its own record",
                field: "supersedes"
            )
        }
    }

    /// `record` sealed under a new data key, with the id given or a new one.
    func seal(_ record: NewRecord, id: RecordID?, participant: String?) -> SealedRecord {
        let id = id ?? RecordID(bytes: Random.bytes(count: RecordID.byteCount))
        // No participant sealed under the root key's subkey where its residue would outlive the erase window.
        return self.barrier.seal(record, id: id, participant: self.storage.sealsUnderEraseEpochs ? nil : participant)
    }

    // MARK: Reading

    /// The record with its decrypted content. Throws `shredded` for a shredded record, `not-found` for an
    /// unknown id, `integrity-failure` when its slot or blob does not authenticate.
    package func get(_ id: RecordID) throws(CaseVaultError) -> Record {
        try self.open(try self.storage.storedRecord(id))
    }

    /// Opens a record only once `decide` approves it, from what one trip to the index gives: the record's
    /// metadata, its case and whether `rosterUID` is on the mediator roster. `decide` never sees content.
    package func read(
        _ id: RecordID,
        rosterUID: UInt32?,
        decide: (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> Record {
        try self.open(try self.storage.storedRecord(id, rosterUID: rosterUID, decide: decide))
    }

    /// Unwraps the key and opens the blob. A shred that ran while the storage read them makes either fail
    /// to authenticate: that is reported as what it is. So does a rotation that rewrapped the slot and
    /// retired its epoch in between: the slot is read once more.
    func open(_ stored: StoredRecord, again: Bool = true) throws(CaseVaultError) -> Record {
        do {
            return Record(metadata: stored.metadata, content: try self.barrier.open(stored))
        } catch {
            guard try self.readsAgain(stored.metadata.id, after: error, first: again) else { throw error }
            let reread = try self.storage.storedRecord(stored.metadata.id)
            guard reread.key.wrapped != stored.key.wrapped else { throw error }
            return try self.open(reread, again: false)
        }
    }

    /// Whether a record's key or content the storage read, which then failed to open (`error`), is worth
    /// reading again: `shredded` once a shred has begun (it scrubbed what was read); on the `first` try, an
    /// authentication failure, which a rotation that rewrapped the key and retired its epoch in between
    /// explains (the caller opens it again only if its key changed); otherwise not (the caller rethrows).
    func readsAgain(_ id: RecordID, after error: CaseVaultError, first: Bool) throws(CaseVaultError) -> Bool {
        try Self.readsAgain(after: error, first: first, shredHasBegun: try self.storage.shredHasBegun(id))
    }

    /// `readsAgain`'s decision once the storage has said whether a shred of the record has begun: the one
    /// decision of the blocking reads and the awaited ones (`awaitOpen`), which ask the storage each their way.
    static func readsAgain(after error: CaseVaultError, first: Bool, shredHasBegun: Bool) throws(CaseVaultError)
        -> Bool
    {
        if shredHasBegun {
            throw CaseVaultError.recordShredded()
        }
        return first && error.code == .integrityFailure
    }
}

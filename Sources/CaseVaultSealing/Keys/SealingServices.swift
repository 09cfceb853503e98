package import CaseVaultCore
internal import CaseVaultCrypto

/// What the storage may ask of the vault's keys. Every call takes and gives ciphertext, signatures or
/// check values: a slot rewrapped under a new epoch, a certificate's signature, the audit log's signer, a
/// ledger line's MAC, a backup's key sealed in (or opened from) its file, which it passes on to the
/// backup stream's sealer without reading it. It wraps the `Barrier`, which only the sealing layer
/// reaches (`Vault`, through `barrier`): the storage cannot seal or open content, nor unwrap a data key.
package final class SealingServices: Sendable {
    let barrier: Barrier

    /// The services of the vault whose root key is `rootKey`.
    package init(rootKey: RootKey) throws(CaseVaultError) {
        self.barrier = try Barrier(rootKey: rootKey)
    }

    /// A 63-bit value that tells which root key made a data directory; it reveals nothing about the key.
    package var rootKeyCheck: Int64 { self.barrier.rootKeyCheck }

    /// Zeroes the root key and every key derived from it (sealing).
    package func wipe() {
        self.barrier.wipe()
    }

    /// Retires `epochs`: their keys are zeroed and a slot under one of them no longer opens.
    package func retire(_ epochs: [UInt32]) {
        self.barrier.retire(epochs)
    }

    /// The slot `slotBytes` rewrapped under `epoch`, for a rotation; the data key never leaves the barrier.
    package func rewrap(slotBytes: [UInt8], recordID: RecordID, slot: Int64, epoch: UInt32) throws(CaseVaultError)
        -> [UInt8]
    {
        try self.barrier.rewrap(slotBytes: slotBytes, recordID: recordID, slot: slot, epoch: epoch)
    }

    // MARK: Moving a vault to PostgreSQL

    /// A key slot's data key wrapped under `epoch` instead (`casevaultctl migrate`: a vault moved from a
    /// data directory); the data key never leaves the sealing layer.
    package func rewrap(slotBytes: [UInt8], recordID: RecordID, slot: Int64, under epoch: EpochKey)
        throws(CaseVaultError) -> [UInt8]
    {
        epoch.wrap(try self.barrier.unwrap(slotBytes: slotBytes, recordID: recordID, slot: slot), recordID: recordID)
    }

    /// A hold whose reason is sealed under the root key's hold subkey (the local store's), sealed again
    /// under a key of its own, which comes back wrapped under `epoch` (as a vault on PostgreSQL keeps it);
    /// the reason is opened and sealed here and never leaves.
    package func resealHold(_ hold: SealedHold, under epoch: EpochKey) throws(CaseVaultError)
        -> (wrappedKey: [UInt8], sealedReason: [UInt8])
    {
        var reason = try self.barrier.openHoldReason(hold)
        defer { Memory.zero(&reason) }
        let key = self.barrier.newDataKey()
        let sealed = self.barrier.sealHoldReason(reason, holdID: hold.id.rawValue, caseID: hold.caseID, under: key)
        return (epoch.wrap(key, holdID: hold.id), sealed)
    }

    // MARK: Moving a vault to a data directory

    /// A record of a `LogicalBackup` file, its data key unwrapped from the file's wrapping key, ready for a
    /// storage to file (`RecordStorage.commit`) as it files any sealed record. Without an agreement's
    /// sealed participant: the sealing layer opens the agreement when it needs it.
    package func movedRecord(
        id: RecordID, caseID: CaseID, type: RecordType, author: String?, supersedes: RecordID?, blob: [UInt8],
        wrappedKey: [UInt8], under wrapping: EpochKey
    ) throws(CaseVaultError) -> SealedRecord {
        SealedRecord(
            id: id, caseID: caseID, type: type, author: author, supersedes: supersedes, blob: blob,
            dataKey: try wrapping.unwrap(wrappedKey, recordID: id), barrier: self.barrier)
    }

    /// A hold of a `LogicalBackup` file, its reason opened with its own key (wrapped under the file's
    /// wrapping key) and sealed again under the root key's hold subkey, as the local store keeps it; the
    /// reason never leaves the sealing layer.
    package func movedHold(
        id: HoldID, caseID: CaseID, placedAt: Int64, placedBy: Authority, sealedReason: [UInt8], wrappedKey: [UInt8],
        under wrapping: EpochKey
    ) throws(CaseVaultError) -> SealedHold {
        var reason = try self.barrier.openHoldReason(
            SealedHold(
                id: id, caseID: caseID, placedAt: placedAt, placedBy: placedBy, sealedReason: sealedReason,
                eraseEpoch: (wrapping, wrappedKey)))
        defer { Memory.zero(&reason) }
        return SealedHold(
            id: id, caseID: caseID, placedAt: placedAt, placedBy: placedBy,
            sealedReason: self.barrier.sealHoldReason(reason, holdID: id.rawValue, caseID: caseID))
    }

    package func signCertificate(_ body: [UInt8]) -> [UInt8] {
        self.barrier.signCertificate(body)
    }

    /// The public half of the certificate key.
    package var certificatePublicKey: [UInt8] { self.barrier.certificatePublicKey }

    /// Signs audit checkpoints and keys the audit chain; the keys stay in the barrier.
    package var auditSigner: AuditSigner { self.barrier.auditSigner }

    /// The MAC of one line of the shred ledger's copy.
    package func shredLedgerMAC(_ line: [UInt8]) -> [UInt8] {
        self.barrier.shredLedgerMAC(line)
    }

    /// A new random key for one backup's stream, opaque to the storage.
    package func newBackupKey() -> BackupKey {
        self.barrier.newBackupKey()
    }

    package func sealBackupKey(_ key: BackupKey, id: [UInt8], created: [UInt8]) -> [UInt8] {
        self.barrier.sealBackupKey(key, id: id, created: created)
    }

    package func openBackupKey(_ sealed: [UInt8], id: [UInt8], created: [UInt8]) throws(CaseVaultError) -> BackupKey {
        try self.barrier.openBackupKey(sealed, id: id, created: created)
    }
}

internal import CaseVaultCore
internal import CaseVaultCrypto
internal import Foundation
internal import Synchronization

/// The single point of encryption and decryption (after HashiCorp Vault's barrier): every key the vault
/// holds is derived, wrapped, unwrapped and used here, in the sealing layer. `Vault` seals and opens
/// content through it; the storage below reaches only what takes and gives ciphertext (`SealingServices`,
/// and a sealed record's key wrapped into its slot: `SealedRecord.wrappedKey`), and the layers above hold
/// keys only as opaque values (`RootKey`, `BackupKey`).
///
/// Key hierarchy: root key → (crypto_kdf, one per epoch) key-encryption key → wraps one random data key per
/// record → seals the record's content. Associated data binds each ciphertext to its place:
/// - a wrapped key to its slot number, record id and epoch;
/// - sealed content to its record id, case id, type and format version.
/// So a blob or slot copied onto another record fails to authenticate instead of opening as wrong content.
/// Internal to the sealing layer: the storage reaches it only through `SealingServices`, the fuzz targets
/// through `FuzzOpener`.
final class Barrier: Sendable {
    static let formatVersion: UInt8 = 1
    static let blobMagic: [UInt8] = Array("CVB1".utf8)
    static let blobHeaderSize = 8
    private static let kekContext: StaticString = "cv-kek01"

    private static let certificateContext: StaticString = "cv-cert1"
    private static let holdContext: StaticString = "cv-hold1"
    private static let auditContext: StaticString = "cv-audit"
    private static let backupContext: StaticString = "cv-bkup1"
    private static let auditChainContext: StaticString = "cv-auchn"
    private static let statisticsContext: StaticString = "cv-stats"
    private static let ledgerContext: StaticString = "cv-ledg1"
    private static let participantContext: StaticString = "cv-party"

    private let rootKey: SecureBytes
    private let keyEncryptionKeys = Mutex<[UInt32: SecureBytes]>([:])
    /// Epochs no slot may use any more: their keys are never derived again.
    private let retiredEpochs = Mutex<Set<UInt32>>([])
    /// Signs destruction certificates: Ed25519 from a seed derived from the root key (crypto_kdf).
    private let certificateKey: SigningKey
    /// Seals legal holds' reasons, which may name people or matters (crypto_kdf from the root key).
    private let holdKey: SecureBytes
    /// Signs the audit log's checkpoints: Ed25519 from its own seed (crypto_kdf), apart from the certificates'.
    private let auditKey: SigningKey
    /// Seals each backup's own key in the backup key file (crypto_kdf from the root key).
    private let backupWrappingKey: SecureBytes
    /// Keys the audit chain and its anchor in the index (keyed BLAKE2b; crypto_kdf from the root key).
    private let auditChainKey: SecureBytes
    /// Seals each case's statistical facts in the index (crypto_kdf from the root key).
    private let statisticsKey: SecureBytes
    /// Authenticates each line of the shred ledger's copy outside the data directory (keyed BLAKE2b;
    /// crypto_kdf from the root key).
    private let ledgerKey: SecureBytes
    /// Seals, in the index, which participant each agreement to mediate is for (crypto_kdf from the root key).
    private let participantKey: SecureBytes

    init(rootKey: RootKey) throws(CaseVaultError) {
        let rootKey = rootKey.secret
        self.rootKey = rootKey
        // Computed now: a daemon on PostgreSQL zeroes the root key once its subkeys are derived.
        self.rootKeyCheck = Self.check(rootKey)
        do {
            let seed = try KeyDerivation.deriveKey(from: rootKey, context: Self.certificateContext, id: 1)
            self.certificateKey = try SigningKey(seed: seed)
            self.holdKey = try KeyDerivation.deriveKey(from: rootKey, context: Self.holdContext, id: 1)
            self.auditKey = try SigningKey(
                seed: try KeyDerivation.deriveKey(from: rootKey, context: Self.auditContext, id: 1))
            self.backupWrappingKey = try KeyDerivation.deriveKey(from: rootKey, context: Self.backupContext, id: 1)
            self.auditChainKey = try KeyDerivation.deriveKey(from: rootKey, context: Self.auditChainContext, id: 1)
            self.statisticsKey = try KeyDerivation.deriveKey(from: rootKey, context: Self.statisticsContext, id: 1)
            self.ledgerKey = try KeyDerivation.deriveKey(from: rootKey, context: Self.ledgerContext, id: 1)
            self.participantKey = try KeyDerivation.deriveKey(from: rootKey, context: Self.participantContext, id: 1)
        } catch {
            throw CaseVaultError(
                .keyUnavailable,
                "the root key's subkeys (certificates, holds, audit, backups, ledger, participants) could not be derived",
                cause: error
            )
        }
    }

    /// The public half of the certificate key: what `casevaultctl certificate verify` checks against.
    var certificatePublicKey: [UInt8] { self.certificateKey.publicKey }

    func signCertificate(_ body: [UInt8]) -> [UInt8] {
        self.certificateKey.signature(for: body)
    }

    /// A 63-bit value that tells which root key made a data directory (keyed BLAKE2b of a fixed label): it
    /// reveals nothing about the key.
    let rootKeyCheck: Int64

    private static func check(_ rootKey: SecureBytes) -> Int64 {
        let digest = Hash.blake2b(Array("casevault.root-key-check.v1".utf8), key: rootKey, length: 16)
        return Int64(bitPattern: UInt64(bigEndianBytes: digest.prefix(8)) >> 1) | 1
    }

    /// Zeroes the root key and every key derived from it (sealing). Later use fails to authenticate.
    func wipe() {
        self.rootKey.wipe()
        self.holdKey.wipe()
        self.certificateKey.wipe()
        self.auditKey.wipe()
        self.backupWrappingKey.wipe()
        self.auditChainKey.wipe()
        self.statisticsKey.wipe()
        self.ledgerKey.wipe()
        self.participantKey.wipe()
        self.keyEncryptionKeys.withLock { keys in
            for key in keys.values { key.wipe() }
            keys.removeAll()
        }
    }

    /// Signs audit checkpoints with the audit subkey and keys the chain with the chain subkey; the keys
    /// themselves never leave the barrier.
    var auditSigner: AuditSigner {
        let key = self.auditKey
        let chainKey = self.auditChainKey
        return AuditSigner(
            publicKey: key.publicKey,
            sign: { message in key.signature(for: message) },
            authenticate: { message in Hash.blake2b(message, key: chainKey, length: 32) }
        )
    }

    /// The MAC of one line of the shred ledger's copy (`ShredLedgerFile`): 16 bytes of keyed BLAKE2b.
    func shredLedgerMAC(_ line: [UInt8]) -> [UInt8] {
        Hash.blake2b(line, key: self.ledgerKey, length: 16)
    }

    // MARK: Backup keys

    /// A new random key for one backup's stream.
    func newBackupKey() -> BackupKey {
        BackupKey.random()
    }

    func sealBackupKey(_ key: BackupKey, id: [UInt8], created: [UInt8]) -> [UInt8] {
        key.secret.withUnsafeBytes { bytes in
            AEAD.seal(
                bytes, key: self.backupWrappingKey,
                associatedData: Self.backupKeyAssociatedData(id: id, created: created))
        }
    }

    func openBackupKey(_ sealed: [UInt8], id: [UInt8], created: [UInt8]) throws(CaseVaultError) -> BackupKey {
        guard sealed.count == AEAD.overhead + AEAD.keyByteCount else { throw Self.integrityFailure("backup key") }
        let associatedData = Self.backupKeyAssociatedData(id: id, created: created)
        do {
            // Opened straight into its own secure memory, as a data key is (`unwrap`).
            return BackupKey(
                secret: try SecureBytes(count: AEAD.keyByteCount) { secret in
                    try AEAD.open(sealed, key: self.backupWrappingKey, associatedData: associatedData, into: secret)
                })
        } catch CryptoError.secureAllocationFailed {
            throw CaseVaultError(.keyUnavailable, "secure memory for a backup key could not be allocated")
        } catch {
            throw Self.integrityFailure("backup key")
        }
    }

    /// Binds a sealed backup key to its backup's id and time.
    private static func backupKeyAssociatedData(id: [UInt8], created: [UInt8]) -> [UInt8] {
        Array("casevault.backup-key.v1".utf8) + id + created
    }

    // MARK: Statistical facts

    func sealStatisticsFacts(_ facts: some Encodable, caseID: CaseID) -> [UInt8] {
        var plain = Array((try? JSONEncoder().encode(facts)) ?? Data("{}".utf8))
        defer { Memory.zero(&plain) }
        return AEAD.seal(plain, key: self.statisticsKey, associatedData: Self.statisticsAssociatedData(caseID))
    }

    /// The facts sealed for `caseID`, or `nil` when they do not authenticate.
    func openStatisticsFacts<Facts: Decodable>(_ sealed: [UInt8], caseID: CaseID, as: Facts.Type) -> Facts? {
        guard
            var plain = try? AEAD.open(
                sealed, key: self.statisticsKey, associatedData: Self.statisticsAssociatedData(caseID))
        else {
            return nil
        }
        defer { Memory.zero(&plain) }
        return try? JSONDecoder().decode(Facts.self, from: Data(plain))
    }

    private static func statisticsAssociatedData(_ caseID: CaseID) -> [UInt8] {
        Array("casevault.statistics-facts.v1".utf8) + Array(caseID.rawValue.utf8)
    }

    // MARK: Agreements' participants

    /// The participant id an agreement to mediate is for, sealed and bound to the agreement and its case.
    func sealParticipant(_ participant: String, recordID: RecordID, caseID: CaseID) -> [UInt8] {
        AEAD.seal(
            Array(participant.utf8), key: self.participantKey,
            associatedData: Self.participantAssociatedData(recordID: recordID, caseID: caseID))
    }

    /// The participant sealed for `recordID`, or `nil` when it does not authenticate (altered, or copied
    /// from another agreement).
    func openParticipant(_ sealed: [UInt8], recordID: RecordID, caseID: CaseID) -> String? {
        guard
            let plain = try? AEAD.open(
                sealed, key: self.participantKey,
                associatedData: Self.participantAssociatedData(recordID: recordID, caseID: caseID))
        else { return nil }
        return String(decoding: plain, as: UTF8.self)
    }

    private static func participantAssociatedData(recordID: RecordID, caseID: CaseID) -> [UInt8] {
        Array("casevault.agreement-participant.v1".utf8) + recordID.bytes + caseID.bytes
    }

    // MARK: Hold reasons

    func sealHoldReason(_ reason: [UInt8], holdID: String, caseID: CaseID) -> [UInt8] {
        AEAD.seal(reason, key: self.holdKey, associatedData: Self.holdAssociatedData(holdID: holdID, caseID: caseID))
    }

    func openHoldReason(_ sealed: [UInt8], holdID: String, caseID: CaseID) throws(CaseVaultError) -> [UInt8] {
        do {
            return try AEAD.open(
                sealed, key: self.holdKey, associatedData: Self.holdAssociatedData(holdID: holdID, caseID: caseID))
        } catch {
            throw Self.integrityFailure("legal hold")
        }
    }

    /// A reason sealed under a key of its own (`reasonKey`), with the same binding to the hold and its case.
    func sealHoldReason(_ reason: [UInt8], holdID: String, caseID: CaseID, under reasonKey: DataKey) -> [UInt8] {
        AEAD.seal(
            reason, key: reasonKey.secret, associatedData: Self.holdAssociatedData(holdID: holdID, caseID: caseID))
    }

    /// A held reason opened: under its own key when the storage keeps one wrapped under an erase epoch, under
    /// the hold subkey otherwise.
    func openHoldReason(_ hold: SealedHold) throws(CaseVaultError) -> [UInt8] {
        guard let (epoch, wrapped) = hold.eraseEpoch else {
            return try self.openHoldReason(hold.sealedReason, holdID: hold.id.rawValue, caseID: hold.caseID)
        }
        let reasonKey = try epoch.unwrap(wrapped, holdID: hold.id)
        do {
            return try AEAD.open(
                hold.sealedReason, key: reasonKey.secret,
                associatedData: Self.holdAssociatedData(holdID: hold.id.rawValue, caseID: hold.caseID))
        } catch {
            throw Self.integrityFailure("legal hold")
        }
    }

    private static func holdAssociatedData(holdID: String, caseID: CaseID) -> [UInt8] {
        Array("casevault.hold.v1".utf8) + Array(holdID.utf8) + caseID.bytes
    }

    /// Retires `epochs`: their keys are dropped (zeroed) and a slot under one of them no longer opens.
    func retire(_ epochs: [UInt32]) {
        self.retiredEpochs.withLock { $0.formUnion(epochs) }
        self.keyEncryptionKeys.withLock { keys in
            for epoch in epochs {
                keys.removeValue(forKey: epoch)?.wipe()
            }
        }
    }

    private func keyEncryptionKey(epoch: UInt32) throws(CaseVaultError) -> SecureBytes {
        guard !self.retiredEpochs.withLock({ $0.contains(epoch) }) else {
            throw Self.integrityFailure("key slot")
        }
        if let key = self.keyEncryptionKeys.withLock({ $0[epoch] }) {
            return key
        }
        let key: SecureBytes
        do {
            key = try KeyDerivation.deriveKey(from: self.rootKey, context: Self.kekContext, id: UInt64(epoch))
        } catch {
            throw CaseVaultError(.keyUnavailable, "the epoch key could not be derived", cause: error)
        }
        self.keyEncryptionKeys.withLock { $0[epoch] = key }
        return key
    }

    func newDataKey() -> DataKey {
        DataKey(secret: SecureBytes.random(count: AEAD.keyByteCount, ephemeral: true))
    }

    // MARK: Key slots

    func wrap(dataKey: DataKey, recordID: RecordID, slot: Int64, epoch: UInt32) throws(CaseVaultError)
        -> [UInt8]
    {
        let kek = try self.keyEncryptionKey(epoch: epoch)
        let sealed = dataKey.secret.withUnsafeBytes { keyBytes in
            AEAD.seal(
                keyBytes, key: kek,
                associatedData: Self.slotAssociatedData(recordID: recordID, slot: slot, epoch: epoch))
        }
        return KeySlot.encode(epoch: epoch, recordID: recordID, sealedKey: sealed)
    }

    func unwrap(slotBytes: [UInt8], recordID: RecordID, slot: Int64) throws(CaseVaultError) -> DataKey {
        guard let decoded = KeySlot.decode(slotBytes), KeySlot.names(decoded, recordID) else {
            throw Self.integrityFailure("key slot")
        }
        let kek = try self.keyEncryptionKey(epoch: decoded.epoch)
        let associatedData = Self.slotAssociatedData(recordID: recordID, slot: slot, epoch: decoded.epoch)
        do {
            // Opened straight into the key's secure memory: the data key is never in an ordinary array.
            return DataKey(
                secret: try SecureBytes(count: AEAD.keyByteCount, ephemeral: true) { secret in
                    try AEAD.open(decoded.sealedKey, key: kek, associatedData: associatedData, into: secret)
                })
        } catch CryptoError.secureAllocationFailed {
            throw CaseVaultError(.keyUnavailable, "secure memory for a data key could not be allocated")
        } catch {
            throw Self.integrityFailure("key slot")
        }
    }

    /// The slot `slotBytes` rewrapped under `epoch`, for a rotation: the data key is unwrapped and wrapped
    /// again here and never leaves.
    func rewrap(slotBytes: [UInt8], recordID: RecordID, slot: Int64, epoch: UInt32) throws(CaseVaultError)
        -> [UInt8]
    {
        let dataKey = try self.unwrap(slotBytes: slotBytes, recordID: recordID, slot: slot)
        return try self.wrap(dataKey: dataKey, recordID: recordID, slot: slot, epoch: epoch)
    }

    // MARK: Content

    /// `record`'s content sealed under a fresh data key, bound to `id`, its case and its type.
    func seal(_ record: NewRecord, id: RecordID, participant: String?) -> SealedRecord {
        let dataKey = self.newDataKey()
        let header = Self.blobMagic + [Self.formatVersion, 0, 0, 0]
        let blob =
            header
            + AEAD.seal(
                record.content, key: dataKey.secret,
                associatedData: Self.contentAssociatedData(
                    id: id, caseID: record.caseID, type: record.type, version: Self.formatVersion))
        let sealedParticipant = participant.map { self.sealParticipant($0, recordID: id, caseID: record.caseID) }
        return SealedRecord(
            record, id: id, sealedParticipant: sealedParticipant, blob: blob, dataKey: dataKey, barrier: self)
    }

    /// The data key a stored record's wrapped key holds: from its slot, or under its erase epoch.
    func dataKey(_ key: StoredKey) throws(CaseVaultError) -> DataKey {
        switch key.wrap {
        case .slot(let slot):
            return try self.unwrap(slotBytes: key.wrapped, recordID: key.metadata.id, slot: slot)
        case .eraseEpoch(let epoch):
            return try epoch.unwrap(key.wrapped, recordID: key.metadata.id)
        }
    }

    /// A stored record's content: its slot unwrapped, its blob opened.
    func open(_ stored: StoredRecord) throws(CaseVaultError) -> [UInt8] {
        try self.open(blob: stored.blob, dataKey: try self.dataKey(stored.key), record: stored.metadata)
    }

    /// Opens a blob with a data key (and, through `FuzzOpener`, whatever the blob's slot holds).
    func open(blob: [UInt8], dataKey: DataKey, record: RecordMetadata) throws(CaseVaultError) -> [UInt8] {
        guard blob.count >= Self.blobHeaderSize + AEAD.overhead, Array(blob[0..<4]) == Self.blobMagic else {
            throw Self.integrityFailure("sealed content")
        }
        let version = blob[4]
        guard version == Self.formatVersion else { throw Self.integrityFailure("sealed content") }
        do {
            return try AEAD.open(
                blob[Self.blobHeaderSize...], key: dataKey.secret,
                associatedData: Self.contentAssociatedData(
                    id: record.id, caseID: record.caseID, type: record.type, version: version)
            )
        } catch {
            throw Self.integrityFailure("sealed content")
        }
    }

    // The two associated data every get builds are assembled in one array each, with its size reserved:
    // the chains of `+` they replace made a new array per part.

    private static func slotAssociatedData(recordID: RecordID, slot: Int64, epoch: UInt32) -> [UInt8] {
        var data: [UInt8] = []
        data.reserveCapacity(17 + 8 + RecordID.byteCount + 4)
        data += "casevault.slot.v1".utf8
        data += UInt64(slot).littleEndianBytes
        recordID.appendBytes(to: &data)
        data += epoch.littleEndianBytes
        return data
    }

    private static func contentAssociatedData(id: RecordID, caseID: CaseID, type: RecordType, version: UInt8)
        -> [UInt8]
    {
        let typeCount = type.rawValue.utf8.count
        var data: [UInt8] = []
        data.reserveCapacity(16 + 1 + RecordID.byteCount + CaseID.byteCount + 1 + typeCount)
        data += "casevault.record".utf8
        data.append(version)
        id.appendBytes(to: &data)
        caseID.appendBytes(to: &data)
        data.append(UInt8(typeCount))
        data += type.rawValue.utf8
        return data
    }

    private static func integrityFailure(_ what: String) -> CaseVaultError {
        CaseVaultError(
            .integrityFailure,
            "the record's \(what) failed authentication: it was altered, truncated or copied from another record; "
                + "restore the data directory from a backup"
        )
    }
}

package import CaseVaultCore
package import CaseVaultCrypto
internal import CaseVaultFiles
package import CaseVaultSealing
internal import Foundation
package import Logging

#if canImport(Glibc)
internal import Glibc
#endif

package struct RestoreSummary: Sendable, Equatable {
    package var backupID: String
    package var createdAt: Int64
    package var records: Int
    package var attachments: Int
    /// Records the backup held that the ledger says were shredded since: shredded again here.
    package var reshredded: Int
    /// Entries of the ledger that the restored vault's own ledger did not hold yet (records the backup did
    /// not hold, or held and were shredded again here): entered there, so that this vault still knows them.
    package var ledgerAdded: Int
    /// How many entries the ledger copy gave, or `nil` when none was read.
    package var copyEntries: Int?
}

extension RecordStore {
    /// Restores the backup that `read` yields (up to n bytes per call; empty at the end) into
    /// `configuration.dataDirectory`, which must be missing or empty, with the vault's root key (from
    /// `configuration`'s key source, or `passphrase`) and its backup key file. Then re-applies the shred
    /// ledger: the union of `ledger` and of `ledgerCopy` (the copy kept outside the data directory, whose
    /// every line must check out under the root key). Every record it names that the backup held is
    /// shredded again, and every entry goes into the restored vault's ledger, so that a later restore that
    /// reads this vault's ledger shreds those records too. A damaged, truncated or foreign file, one whose
    /// key was destroyed, or a ledger copy that is missing or does not check out, is refused and leaves
    /// nothing behind. The ledger copy itself is only read.
    package static func restore(
        read: (Int) throws(CaseVaultError) -> [UInt8],
        into configuration: StoreConfiguration,
        passphrase: SecureBytes?,
        keys: BackupKeyFile,
        ledger: [ShredLedgerEntry],
        ledgerCopy: ShredLedgerFile? = nil,
        logger: Logger
    ) throws(CaseVaultError) -> RestoreSummary {
        let target = configuration.dataDirectory.path
        if DataDirectory.exists(target) {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: target)) ?? ["?"]
            guard entries.isEmpty else {
                throw CaseVaultError(
                    .invalidField, "restore needs an empty data directory; \(target) is not empty", field: "data-dir")
            }
        }
        let rootKey = try Self.rootKey(configuration, passphrase: passphrase)
        let sealing = try SealingServices(rootKey: rootKey)
        let copied = try ledgerCopy.map { copy throws(CaseVaultError) -> [ShredLedgerEntry] in
            guard let held = try copy.entries(sealing: sealing) else {
                throw CaseVaultError(.notFound, "no shred ledger copy at \(copy.path)")
            }
            return held
        }
        let shredded = ShredLedgerEntry.union([ledger, copied ?? []])

        func exactly(_ count: Int) throws(CaseVaultError) -> [UInt8] {
            var bytes: [UInt8] = []
            while bytes.count < count {
                let piece = try read(count - bytes.count)
                if piece.isEmpty { throw Self.damagedBackup("it ends too soon") }
                bytes += piece
            }
            return bytes
        }
        let header = try exactly(BackupFormat.headerSize)
        let magic = Array(header[0..<6])
        let logical = magic == LogicalBackup.magic || magic == LogicalBackup.migrationMagic
        guard magic == BackupFormat.magic || logical else {
            throw CaseVaultError(.integrityFailure, "this is not a CaseVault backup file")
        }
        let idBytes = Array(header[6..<22])
        let createdAt = Int64(bigEndianBytes: header[22..<30])
        guard Int64(bigEndianBytes: header[30..<38]) == sealing.rootKeyCheck else {
            throw CaseVaultError(
                .unsealRefused, "this backup belongs to another vault: its root key is not this configuration's")
        }
        guard let key = try keys.key(id: idBytes, sealing: sealing) else {
            throw CaseVaultError(
                .keyUnavailable,
                "the key of backup \(Hex.encode(idBytes)) is not in \(keys.path): it was destroyed by the backup retention, so this backup can no longer be read"
            )
        }
        let stream: BackupOpener
        do {
            stream = try BackupOpener(key: key, header: try exactly(BackupOpener.headerByteCount))
        } catch let error as CaseVaultError {
            throw error
        } catch {
            throw Self.damagedBackup("its stream header is damaged")
        }
        if logical {
            return try Self.restoreLogical(
                header: header, stream: stream, wrapping: try key.keyWrapping, exactly: exactly,
                atEnd: { () throws(CaseVaultError) in try read(1).isEmpty }, into: configuration, rootKey: rootKey,
                ledger: shredded, copyEntries: copied?.count, logger: logger)
        }

        var made = false
        // Held until the restore is done or undone: a daemon started on the directory meanwhile is refused.
        var lock: DataDirectoryLock?
        defer { withExtendedLifetime(lock) {} }
        do {
            try DataDirectory.makeDirectory(target, createParents: true)
            made = true
            lock = try DataDirectoryLock(directory: target)
            let directory = DataDirectory(path: target)
            try DataDirectory.makeDirectory(directory.attachmentsPath, createParents: false)
            let indexFile = try PosixFile(path: directory.indexPath, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
            var indexEnd: Int64 = 0
            let slots = try KeySlotFile(path: directory.slotsPath)
            let segments = try Segments(path: directory.segmentsPath, maxBytes: configuration.maxSegmentBytes)
            var usedSegments = Set<UInt32>()
            var attachment: (id: String, file: PosixFile, end: Int64)?
            var attachments = 0
            var records = 0
            var first = true
            var ended = false
            while !ended {
                let length = Int(UInt32(bigEndianBytes: try exactly(4)))
                guard length > 0, length <= 64 << 20 else {
                    throw Self.damagedBackup("a frame has an impossible length")
                }
                let sealed = try exactly(length)
                let message: [UInt8]
                do {
                    message = try stream.open(sealed, associatedData: first ? header : [])
                } catch {
                    throw Self.damagedBackup("a part of it does not authenticate")
                }
                first = false
                guard let kind = message.first.flatMap(BackupFormat.Item.init(rawValue:)) else {
                    throw Self.damagedBackup("an item is unknown")
                }
                let body = message[1...]
                switch kind {
                case .index:
                    try indexFile.write(Array(body), at: indexEnd)
                    indexEnd += Int64(body.count)
                case .slot:
                    guard body.count == 8 + KeySlot.size else { throw Self.damagedBackup("a key slot is malformed") }
                    try slots.write(Int64(bigEndianBytes: body.prefix(8)), Array(body.dropFirst(8)))
                    records += 1
                    // The slot file keeps what it wrote until a flush: flushed now and then, so that memory
                    // stays flat however large the backup.
                    if records % 4096 == 0 { try slots.flush() }
                case .blob:
                    guard body.count > 12 else { throw Self.damagedBackup("a blob is malformed") }
                    let segment = UInt32(bigEndianBytes: body.prefix(4))
                    let bytes = Array(body.dropFirst(12))
                    let location = Segments.Location(
                        segment: segment, offset: Int64(bigEndianBytes: body.dropFirst(4).prefix(8)),
                        length: bytes.count
                    )
                    try segments.write(bytes, at: location)
                    usedSegments.insert(segment)
                case .attachmentStart:
                    let id = try RecordID(String(decoding: body, as: UTF8.self)).rawValue
                    attachment = (
                        id,
                        try PosixFile(
                            path: directory.attachmentsPath + "/" + id, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600),
                        0
                    )
                case .attachmentChunk:
                    guard let open = attachment else { throw Self.damagedBackup("an attachment is malformed") }
                    try open.file.write(Array(body), at: open.end)
                    attachment?.end += Int64(body.count)
                case .attachmentEnd:
                    guard let open = attachment else { throw Self.damagedBackup("an attachment is malformed") }
                    try open.file.flushData()
                    attachment = nil
                    attachments += 1
                case .end:
                    guard Int64(bigEndianBytes: body) == Int64(records), stream.isFinished else {
                        throw Self.damagedBackup("its end does not match its contents")
                    }
                    ended = true
                }
            }
            do {
                try stream.finish()
            } catch {
                throw Self.damagedBackup("it was cut short")
            }
            guard try exactly(4) == [0, 0, 0, 0], try read(1).isEmpty else {
                throw Self.damagedBackup("something follows its end")
            }
            try indexFile.flushData()
            try slots.flush()
            try segments.flush(usedSegments)
            try DataDirectory.flushDirectory(directory.attachmentsPath)
            try DataDirectory.flushDirectory(target)

            // Open it as the daemon would (recovery scrubs anything unreferenced), then re-apply the ledger.
            // The ledger copy belongs to the vault that is serving until the restored one replaces it.
            var restored = configuration
            restored.keySource = .file
            restored.shredLedgerCopy = nil
            let store = try RecordStore.open(restored, rootKey: rootKey, logger: logger)
            defer { store.close() }
            // The restored vault starts an audit log of its own (the backup carries none).
            try store.setAuditAnchor(.empty)
            let applied = try store.reapplyLedger(shredded)
            logger.notice(
                "backup restored",
                metadata: [
                    "records.count": "\(records)", "records.reshredded": "\(applied.reshredded)",
                    "ledger.added": "\(applied.added)",
                ]
            )
            return RestoreSummary(
                backupID: Hex.encode(idBytes), createdAt: createdAt, records: records, attachments: attachments,
                reshredded: applied.reshredded, ledgerAdded: applied.added, copyEntries: copied?.count
            )
        } catch let error as CaseVaultError {
            // Nothing of a refused restore stays behind.
            if made { try? FileManager.default.removeItem(atPath: target) }
            throw error
        } catch {
            if made { try? FileManager.default.removeItem(atPath: target) }
            throw CaseVaultError(.storageFailure, "the restore failed: \(error)")
        }
    }

    /// The root key from `configuration`'s source, never created: a restore needs the vault's own key.
    static func rootKey(_ configuration: StoreConfiguration, passphrase: SecureBytes?) throws(CaseVaultError)
        -> RootKey
    {
        switch configuration.keySource {
        case .file:
            guard DataDirectory.exists(configuration.rootKeyFile.path) else {
                throw CaseVaultError(
                    .keyUnavailable,
                    "no root key at \(configuration.rootKeyFile.path): a restore needs the vault's own key")
            }
            return try RootKeyFile.loadOrCreate(
                path: configuration.rootKeyFile.path, dataDirectory: configuration.dataDirectory.path)
        case .systemdCredential(let name, let directory):
            return try RootKeyFile.loadCredential(name: name, directory: directory)
        case .passphrase:
            guard let passphrase else {
                throw CaseVaultError(.keyUnavailable, "the passphrase key source needs the passphrase to restore")
            }
            return try WrappedRootKey.open(path: configuration.rootKeyFile.path, passphrase: passphrase)
        }
    }

    static func damagedBackup(_ why: String) -> CaseVaultError {
        CaseVaultError(.integrityFailure, "the backup is damaged or was tampered with (\(why)); nothing was restored")
    }
}

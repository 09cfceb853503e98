public import CaseVaultCore
public import CaseVaultCrypto
internal import CaseVaultFiles
internal import Foundation
internal import GRDB
public import Logging

#if canImport(Glibc)
internal import Glibc
#endif

/// Backups (DESIGN §12): one file, sealed as one secretstream under a key of its own.
///
///     "CVBK1\n" | backup id (16) | created, ms (8) | vault check (8) | secretstream header (24)
///     then frames: length (4, big-endian) ‖ one secretstream message; a zero length ends the file
///
/// The first message is bound to the clear header (associated data), the last is tagged final, so a
/// changed, reordered, cut or foreign file fails to open. Inside, each message is one item: each kept
/// record's key slot and sealed blob as they lie on disk, then its attachment, and last the index (a
/// consistent SQLite snapshot, `VACUUM INTO`, with session notes, records being destroyed and records
/// shredded while the backup ran taken out). Session
/// notes are never in a backup: neither their rows, nor their key slots, nor their ciphertext.
///
/// The backup's key is sealed in the backup key file; destroying it there (after `[backup]
/// retention_days`) makes the file unreadable for good.
public struct BackupSummary: Sendable, Equatable {
    public var backupID: String
    public var createdAt: Int64
    public var records: Int
    public var attachments: Int
    /// Backup keys destroyed because they were older than the retention.
    public var destroyedKeys: Int
}

public struct RestoreSummary: Sendable, Equatable {
    public var backupID: String
    public var createdAt: Int64
    public var records: Int
    public var attachments: Int
    /// Records the backup held that the ledger says were shredded since: shredded again here.
    public var reshredded: Int
    /// Entries of the ledger that the restored vault's own ledger did not hold yet (records the backup did
    /// not hold, or held and were shredded again here): entered there, so that this vault still knows them.
    public var ledgerAdded: Int
    /// How many entries the ledger copy gave, or `nil` when none was read.
    public var copyEntries: Int?
}

enum BackupFormat {
    static let magic = Array("CVBK1\n".utf8)
    static let headerSize = 6 + 16 + 8 + 8
    static let chunk = 64 << 10
    static let snapshotPrefix = "backup-"

    enum Item: UInt8 {
        case index = 1
        case slot = 3
        case blob = 4
        case attachmentStart = 5
        case attachmentChunk = 6
        case attachmentEnd = 7
        case end = 9
    }
}

extension RecordStore {
    /// A new backup id (16 random bytes, hex): the caller names it before the stream starts.
    public static func newBackupID() -> String {
        Hex.encode(Random.bytes(count: 16))
    }

    /// Writes a backup through `write` (called with each piece of the file, in order), while the store
    /// serves. First rewrites the shred ledger's copy (`refreshShredLedgerCopy`) and destroys the backup
    /// keys older than `retentionDays`, then makes and keeps this backup's key.
    public func backup(
        id: String, keys: BackupKeyFile, retentionDays: Int, write: (_ bytes: [UInt8]) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> BackupSummary {
        guard let idBytes = Hex.decode(id), idBytes.count == 16 else {
            throw CaseVaultError(.invalidIdentifier, "a backup id is 32 lowercase hexadecimal characters")
        }
        guard RootKeyFile.isOutside(keys.path, dataDirectory: self.directory.path) else {
            throw CaseVaultError(
                .invalidConfiguration,
                "the backup key file must live outside the data directory, so that a copy of the data never carries it",
                field: "backup.key_file"
            )
        }
        // The ledger copy outside the data directory is brought up to date with each backup.
        try self.refreshShredLedgerCopy()
        let now = self.now()
        let destroyed = try self.destroyExpiredBackupKeys(keys, retentionDays: retentionDays)
        let key = SecureBytes.random(count: AEAD.keyByteCount)
        try keys.add(id: idBytes, createdAt: now, key: key, barrier: self.barrier)
        let header =
            BackupFormat.magic + idBytes + UInt64(now).bigEndianBytes
            + self.barrier.rootKeyCheck.bigEndianBytes
        let stream: SecretStream.Encryptor
        do {
            stream = try SecretStream.Encryptor(key: key)
        } catch {
            throw CaseVaultError(.keyUnavailable, "the backup stream could not be started", cause: error)
        }
        try write(header + stream.header)
        var first = true
        func push(_ item: BackupFormat.Item, _ body: [UInt8], final: Bool = false) throws(CaseVaultError) {
            let sealed = stream.push([item.rawValue] + body, associatedData: first ? header : [], isFinal: final)
            first = false
            try write(UInt32(sealed.count).bigEndianBytes + sealed)
        }

        // The index as of one instant, without what a backup must not hold.
        let snapshot = self.backupSnapshotPath(id)
        unlink(snapshot)
        defer {
            unlink(snapshot)
            unlink(snapshot + "-journal")
        }
        let copy: DatabaseQueue
        let kept: [(id: RecordID, slot: Int64, location: Segments.Location)]
        do {
            try self.index.pool.unsafeRead { db in try db.execute(sql: "VACUUM INTO ?", arguments: [snapshot]) }
            copy = try DatabaseQueue(path: snapshot)
            kept = try copy.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA secure_delete = ON")
                try db.execute(
                    sql: """
                        DELETE FROM records WHERE state <> 'live' OR type = 'session_note';
                        DELETE FROM shred_order_list;
                        """
                )
                return try Row.fetchAll(
                    db, sql: "SELECT id, slot, segment, offset, sealed_size FROM records ORDER BY segment, offset"
                )
                .map { row in
                    (
                        try RecordID(row["id"] as String), row["slot"] as Int64,
                        Segments.Location(
                            segment: UInt32(row["segment"] as Int64), offset: row["offset"], length: row["sealed_size"])
                    )
                }
            }
        } catch let error as CaseVaultError {
            throw error
        } catch {
            throw CaseVaultError(.storageFailure, "the index snapshot for the backup failed: \(error)")
        }

        // Each record's key slot and blob as they lie on disk. A shred marks its record before it
        // overwrites anything, and a slot is reused only after the row is gone: a record still live, at
        // the same slot and place, after its bytes were read was read whole. One that is not was shredded
        // since the snapshot; it is left out, of the index too.
        var taken: [RecordID] = []
        var attachments = 0
        for record in kept {
            let slot = try self.slots.read(record.slot)
            let blob = try self.segments.read(record.location)
            let path = self.directory.attachmentsPath + "/" + record.id.rawValue
            let attachment = DataDirectory.exists(path) ? try? PosixFile(path: path, flags: O_RDONLY) : nil
            let current = try self.index.lookup { db in try Index.row(db, id: record.id) }
            guard let current, current.state == .live, current.slot == record.slot, current.location == record.location
            else {
                taken.append(record.id)
                continue
            }
            try push(.slot, record.slot.bigEndianBytes + slot)
            try push(
                .blob,
                record.location.segment.bigEndianBytes + record.location.offset.bigEndianBytes + blob
            )
            if let attachment {
                attachments += 1
                try push(.attachmentStart, Array(record.id.rawValue.utf8))
                var at: Int64 = 0
                while true {
                    let piece = try attachment.read(count: BackupFormat.chunk, at: at)
                    if piece.isEmpty { break }
                    try push(.attachmentChunk, piece)
                    at += Int64(piece.count)
                }
                try push(.attachmentEnd, [])
            }
        }
        do {
            try copy.writeWithoutTransaction { db in
                for id in taken {
                    try db.execute(sql: "DELETE FROM records WHERE id = ?", arguments: [id.rawValue])
                }
                try db.execute(sql: "VACUUM")
            }
            try copy.close()
        } catch {
            throw CaseVaultError(.storageFailure, "the index snapshot for the backup failed: \(error)")
        }
        let index = try PosixFile(path: snapshot, flags: O_RDONLY)
        let size = try index.size()
        var offset: Int64 = 0
        while offset < size {
            let piece = try index.read(count: BackupFormat.chunk, at: offset)
            try push(.index, piece)
            offset += Int64(piece.count)
        }
        let records = kept.count - taken.count
        try push(.end, UInt64(records).bigEndianBytes, final: true)
        try write([0, 0, 0, 0])
        self.logger.notice(
            "backup written",
            metadata: ["backup.id": "\(id)", "records.count": "\(records)", "backup_keys.destroyed": "\(destroyed)"]
        )
        return BackupSummary(
            backupID: id, createdAt: now, records: records, attachments: attachments, destroyedKeys: destroyed)
    }

    /// Restores the backup that `read` yields (up to n bytes per call; empty at the end) into
    /// `configuration.dataDirectory`, which must be missing or empty, with the vault's root key (from
    /// `configuration`'s key source, or `passphrase`) and its backup key file. Then re-applies the shred
    /// ledger: the union of `ledger` and of `ledgerCopy` (the copy kept outside the data directory, whose
    /// every line must check out under the root key). Every record it names that the backup held is
    /// shredded again, and every entry goes into the restored vault's ledger, so that a later restore that
    /// reads this vault's ledger shreds those records too. A damaged, truncated or foreign file, one whose
    /// key was destroyed, or a ledger copy that is missing or does not check out, is refused and leaves
    /// nothing behind. The ledger copy itself is only read.
    public static func restore(
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
        let barrier = try Barrier(rootKey: rootKey)
        let copied = try ledgerCopy.map { copy throws(CaseVaultError) -> [ShredLedgerEntry] in
            guard let held = try copy.entries(barrier: barrier) else {
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
        guard Array(header[0..<6]) == BackupFormat.magic else {
            throw CaseVaultError(.integrityFailure, "this is not a CaseVault backup file")
        }
        let idBytes = Array(header[6..<22])
        let createdAt = Int64(bigEndianBytes: header[22..<30])
        guard Int64(bigEndianBytes: header[30..<38]) == barrier.rootKeyCheck else {
            throw CaseVaultError(
                .unsealRefused, "this backup belongs to another vault: its root key is not this configuration's")
        }
        guard let key = try keys.key(id: idBytes, barrier: barrier) else {
            throw CaseVaultError(
                .keyUnavailable,
                "the key of backup \(Hex.encode(idBytes)) is not in \(keys.path): it was destroyed by the backup retention, so this backup can no longer be read"
            )
        }
        let stream: SecretStream.Decryptor
        do {
            stream = try SecretStream.Decryptor(key: key, header: try exactly(SecretStream.headerByteCount))
        } catch let error as CaseVaultError {
            throw error
        } catch {
            throw Self.damagedBackup("its stream header is damaged")
        }

        var made = false
        do {
            try DataDirectory.makeDirectory(target, createParents: true)
            made = true
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
                    message = try stream.pull(sealed, associatedData: first ? header : [])
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

    /// The index snapshot a backup takes (`backup-ID.sqlite` in the data directory), removed when the
    /// backup ends and, after a crash, by the next open (`removeBackupSnapshots`).
    func backupSnapshotPath(_ id: String) -> String {
        self.directory.path + "/" + BackupFormat.snapshotPrefix + id + ".sqlite"
    }

    /// Removes index snapshots (and their journals) that a backup cut short by a crash left behind.
    func removeBackupSnapshots() throws(CaseVaultError) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: self.directory.path)) ?? []
        let stray = names.filter { $0.hasPrefix(BackupFormat.snapshotPrefix) && $0.contains(".sqlite") }
        for name in stray {
            guard unlink(self.directory.path + "/" + name) == 0 || errno == ENOENT else {
                throw POSIXFailure.error("unlink", path: self.directory.path + "/" + name)
            }
        }
        if !stray.isEmpty {
            try DataDirectory.flushDirectory(self.directory.path)
            self.logger.notice(
                "removed what an interrupted backup left behind", metadata: ["files.count": "\(stray.count)"])
        }
    }

    /// Destroys the backup keys older than `retentionDays` (by the store's clock), which makes their
    /// backups unreadable; returns how many (with `dryRun`, how many would be). Each backup does this
    /// first, and so does each retention sweep, so a key outlives its retention by at most the time
    /// to the next sweep even when no backup is taken.
    public func destroyExpiredBackupKeys(_ keys: BackupKeyFile, retentionDays: Int, dryRun: Bool = false)
        throws(CaseVaultError) -> Int
    {
        try keys.destroy(createdBefore: self.now() - Int64(retentionDays) * 86_400_000, dryRun: dryRun)
    }

    /// The root key from `configuration`'s source, never created: a restore needs the vault's own key.
    static func rootKey(_ configuration: StoreConfiguration, passphrase: SecureBytes?) throws(CaseVaultError)
        -> SecureBytes
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

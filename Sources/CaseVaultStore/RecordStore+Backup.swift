package import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
package import CaseVaultSealing
internal import Foundation
internal import Logging

#if canImport(Glibc)
internal import Glibc
#endif

/// Backups (docs/ARCHITECTURE.md): one file, sealed as one secretstream under a key of its own.
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
    package static func newBackupID() -> String {
        Hex.encode(Random.bytes(count: 16))
    }

    /// Writes a backup through `write` (called with each piece of the file, in order), while the store
    /// serves. First rewrites the shred ledger's copy (`refreshShredLedgerCopy`) and destroys the backup
    /// keys older than `retentionDays`, then makes and keeps this backup's key.
    package func backup(
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
        let key = self.sealing.newBackupKey()
        try keys.add(id: idBytes, createdAt: now, key: key, sealing: self.sealing)
        let header =
            BackupFormat.magic + idBytes + UInt64(now).bigEndianBytes
            + self.sealing.rootKeyCheck.bigEndianBytes
        let stream = try BackupSealer(key: key)
        try write(header + stream.header)
        var first = true
        func push(_ item: BackupFormat.Item, _ body: [UInt8], final: Bool = false) throws(CaseVaultError) {
            let sealed = stream.seal([item.rawValue] + body, associatedData: first ? header : [], isFinal: final)
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
        let copy = try self.index.backupSnapshot(to: snapshot)
        let kept = copy.kept

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
        try copy.finish(leavingOut: taken)
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

    /// `not-on-this-backend`: a data directory is restored without the daemon, into an empty directory
    /// (`RecordStore.restore`, `casevaultctl restore --data-dir`).
    package func beginRestore(keys: BackupKeyFile, ledger: [RecordID: Int64], authority: Authority)
        throws(CaseVaultError) -> any BackupRestore
    {
        throw CaseVaultError(
            .notOnThisBackend,
            "a vault kept in a data directory is restored without the daemon: casevaultctl restore --data-dir EMPTY")
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
    package func destroyExpiredBackupKeys(_ keys: BackupKeyFile, retentionDays: Int, dryRun: Bool = false)
        throws(CaseVaultError) -> Int
    {
        try keys.destroy(createdBefore: self.now() - Int64(retentionDays) * 86_400_000, dryRun: dryRun)
    }
}

package import CaseVaultCore
package import CaseVaultCrypto
internal import CaseVaultFiles
package import CaseVaultSealing
internal import Foundation
package import Logging

#if canImport(Glibc)
internal import Glibc
#endif

/// What `casevaultctl migrate` wrote.
package struct MigrationSummary: Sendable, Equatable {
    package var fileID: String
    package var cases: Int
    package var records: Int
    package var sessionNotes: Int
    package var attachments: Int
    package var holds: Int
    package var shreds: Int
    package var certificates: Int
}

extension RecordStore {
    /// Opens the vault kept in `configuration`'s data directory, which no daemon may serve meanwhile (its
    /// lock is held throughout: `storage-failure` while one does), with the root key from its source
    /// (`passphrase` for that source), writes it through `write` (`writeMigration`), has `finish` make the
    /// file whole and durable, and then marks the directory as moved (`refuseMoved`), all under the lock.
    /// `not-found` for a directory that holds no vault.
    package static func writeMigration(
        of configuration: StoreConfiguration, passphrase: SecureBytes?, id: String, keys: BackupKeyFile,
        logger: Logger, write: (_ bytes: [UInt8]) throws(CaseVaultError) -> Void,
        finish: () throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> MigrationSummary {
        let path = configuration.dataDirectory.path
        guard DataDirectory.exists(DataDirectory(path: path).indexPath) else {
            throw CaseVaultError(.notFound, "\(path) holds no vault: it has no index.sqlite")
        }
        let lock = try DataDirectoryLock(directory: path)
        defer { withExtendedLifetime(lock) {} }
        let rootKey = try Self.rootKey(configuration, passphrase: passphrase)
        defer { rootKey.wipe() }
        let store = try RecordStore.open(configuration, rootKey: rootKey, logger: logger)
        defer { store.close() }
        let summary = try store.writeMigration(id: id, keys: keys, write: write)
        try finish()
        let mark = "migration \(id) at \(Timestamp.rfc3339(store.now()))"
        try RootKeyFile.writeNew(path: DataDirectory(path: path).movedPath, bytes: Array(mark.utf8))
        return summary
    }

    /// Refuses to serve a data directory whose vault `casevaultctl migrate` wrote out for PostgreSQL
    /// (`vault-moved`, naming the migration): served here and there, the two copies would drift
    /// apart, and a shred in one would leave the record readable in the other.
    package static func refuseMoved(_ configuration: StoreConfiguration) throws(CaseVaultError) {
        let path = DataDirectory(path: configuration.dataDirectory.path).movedPath
        var info = stat()
        if lstat(path, &info) != 0 {
            // Absent: no move marked the directory. Any other failure leaves it unknown, and fails closed.
            guard errno != ENOENT else { return }
            throw POSIXFailure.error("lstat", path: path)
        }
        // The file's presence is the mark; its text (the migration and its time) is quoted when it reads.
        let mark = (try? PosixFile(path: path, flags: O_RDONLY).readAll()).map { String(decoding: $0, as: UTF8.self) }
        throw CaseVaultError(
            .vaultMoved,
            "this data directory's vault was moved to PostgreSQL (casevaultctl migrate\(mark.map { ", \($0)" } ?? "")): serve it there; if the move was abandoned, casevaultctl migrate --cancel with this configuration serves it here again",
            field: "store.data_directory")
    }

    /// Removes the mark of a move (`casevaultctl migrate --cancel`), under the directory's lock; false when
    /// the directory bears none.
    package static func cancelMove(_ configuration: StoreConfiguration) throws(CaseVaultError) -> Bool {
        let path = configuration.dataDirectory.path
        guard DataDirectory.exists(DataDirectory(path: path).indexPath) else {
            throw CaseVaultError(.notFound, "\(path) holds no vault: it has no index.sqlite")
        }
        let lock = try DataDirectoryLock(directory: path)
        defer { withExtendedLifetime(lock) {} }
        let mark = DataDirectory(path: path).movedPath
        guard DataDirectory.exists(mark) else { return false }
        guard unlink(mark) == 0 else { throw POSIXFailure.error("unlink", path: mark) }
        try DataDirectory.flushDirectory(path)
        return true
    }

    /// Writes the whole vault through `write` (called with each piece of the file, in order) as a file
    /// that a daemon of a vault on PostgreSQL restores (`LogicalBackup`, magic `CVMG2`): the roster, every
    /// case, every live record (session notes included: the vault moves, it is not backed up) with its
    /// attachment's sealed bytes as they lie in the data directory, every hold, the shred ledger and every
    /// certificate. Each data key is unwrapped from its key slot and wrapped under the file's wrapping key,
    /// and each hold's reason is sealed again under a key of its own wrapped the same way, inside the
    /// sealing layer: the storage sees ciphertext only. The file's key is made and kept in `keys` (the
    /// backup key file), where the backup retention destroys it as any backup's. Run with the data
    /// directory's lock held, so that no daemon serves it meanwhile.
    package func writeMigration(
        id: String, keys: BackupKeyFile, write: (_ bytes: [UInt8]) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> MigrationSummary {
        guard let idBytes = Hex.decode(id), idBytes.count == 16 else {
            throw CaseVaultError(.invalidIdentifier, "a migration's id is 32 lowercase hexadecimal characters")
        }
        let now = self.now()
        let (writer, wrapping) = try LogicalBackup.Writer.begin(
            magic: LogicalBackup.migrationMagic, id: idBytes, createdAt: now, sealing: self.sealing, keys: keys)
        try write(writer.start)
        func push(_ item: LogicalBackup.Item, _ body: [UInt8]) throws(CaseVaultError) {
            try write(writer.frame(item, body))
        }
        var end = LogicalBackup.End()
        var (cases, sessionNotes) = (0, 0)

        let roster = try self.roster().map { Int64($0) }
        try push(.roster, LogicalBackup.encode(LogicalBackup.Roster(uids: roster)))
        try self.pages(from: "", next: \.id) { after throws(CaseVaultError) in
            try self.index.read { db in try Index.migrationCases(db, after: after, limit: LogicalBackup.page) }
        } each: { row throws(CaseVaultError) in
            try push(.caseRow, LogicalBackup.encode(row))
            cases += 1
        }

        let attached = Set(try self.attachmentNames())
        try self.pages(from: Int64(0), next: \.0) { after throws(CaseVaultError) in
            try self.index.read { db in try Index.migrationRecords(db, after: after, limit: LogicalBackup.page) }
        } each: { (_, id) throws(CaseVaultError) in
            let stored = try self.storedRecord(id)
            guard case .slot(let slot) = stored.key.wrap else {
                throw CaseVaultError(.storageFailure, "a record of the data directory is not under a key slot")
            }
            let metadata = stored.metadata
            let record = LogicalBackup.Record(
                id: id.rawValue, caseID: metadata.caseID.rawValue, type: metadata.type.rawValue,
                createdAt: metadata.createdAt, author: metadata.author, supersedes: metadata.supersedes?.rawValue,
                wrappedKey: try self.sealing.rewrap(
                    slotBytes: stored.key.wrapped, recordID: id, slot: slot, under: wrapping))
            try push(.recordAndBlob, LogicalBackup.recordItem(record, blob: stored.blob))
            end.records += 1
            if metadata.type == .sessionNote { sessionNotes += 1 }
            guard attached.contains(id.rawValue) else { return }
            try self.pushAttachment(id, push)
            end.attachments += 1
        }

        for hold in try self.sealedHolds() {
            let (wrappedKey, sealedReason) = try self.sealing.resealHold(hold, under: wrapping)
            try push(
                .hold,
                LogicalBackup.encode(
                    LogicalBackup.Hold(
                        id: hold.id.rawValue, caseID: hold.caseID.rawValue, placedAt: hold.placedAt,
                        placedByUID: hold.placedBy.uid.map { Int64($0) }, placedByRole: hold.placedBy.role,
                        wrappedKey: wrappedKey, sealedReason: sealedReason)))
            end.holds += 1
        }

        // The shred ledger, as entries of the target's ledger: a shred here overwrote its record in place,
        // so there is no erase epoch for a shred's row there to name.
        let ledger = try self.shredLedger()
        var start = 0
        while start < ledger.count {
            let page = ledger[start..<min(start + LogicalBackup.ledgerPage, ledger.count)]
            start += page.count
            try push(
                .ledger,
                LogicalBackup.encode(
                    LogicalBackup.Ledger(
                        records: page.map { .init(id: $0.recordID.rawValue, shreddedAt: $0.shreddedAt ?? now) })))
        }

        try self.pages(from: Int64(0), next: \.0) { after throws(CaseVaultError) in
            try self.index.read { db in try Index.migrationCertificates(db, after: after, limit: LogicalBackup.page) }
        } each: { (_, certificate) throws(CaseVaultError) in
            try push(.certificate, LogicalBackup.encode(certificate))
            end.certificates += 1
        }

        try write(writer.end(end))
        self.logger.notice(
            "vault written for PostgreSQL",
            metadata: ["migration.id": "\(id)", "records.count": "\(end.records)", "cases.count": "\(cases)"])
        return MigrationSummary(
            fileID: id, cases: cases, records: end.records, sessionNotes: sessionNotes, attachments: end.attachments,
            holds: end.holds, shreds: ledger.count, certificates: end.certificates)
    }

    /// Calls `each` with every row of the pages `read` gives, each page the rows after the key `next` gives
    /// of the last row of the page before, from `start`, until a page shorter than `LogicalBackup.page`.
    private func pages<Row, Key>(
        from start: Key, next: (Row) -> Key, _ read: (Key) throws(CaseVaultError) -> [Row],
        each: (Row) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) {
        var after = start
        while true {
            let page = try read(after)
            for row in page { try each(row) }
            guard page.count == LogicalBackup.page, let last = page.last else { return }
            after = next(last)
        }
    }

    /// `id`'s attachment: its start, its sealed bytes as the file holds them, a page at a time, and its end.
    private func pushAttachment(
        _ id: RecordID, _ push: (LogicalBackup.Item, [UInt8]) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) {
        let (_, file) = try self.openAttachment(id)
        let upload = Hex.encode(Random.bytes(count: 16))
        try push(
            .attachmentStart,
            LogicalBackup.encode(LogicalBackup.Attachment(recordID: id.rawValue, upload: upload, size: file.size)))
        var offset: Int64 = 0
        while offset < file.size {
            let count = Int(min(Int64(LogicalBackup.chunkBytes), file.size - offset))
            try push(.attachmentChunk, UInt64(offset).bigEndianBytes + (try file.read(count: count, at: offset)))
            offset += Int64(count)
        }
        try push(.attachmentEnd, [])
    }
}

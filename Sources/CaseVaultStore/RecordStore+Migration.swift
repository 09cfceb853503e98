package import CaseVaultCore
package import CaseVaultCrypto
internal import CaseVaultFiles
package import CaseVaultSealing
internal import Foundation
package import Logging

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
    /// (`passphrase` for that source), and writes it through `write` (`writeMigration`). `not-found` for a
    /// directory that holds no vault.
    package static func writeMigration(
        of configuration: StoreConfiguration, passphrase: SecureBytes?, id: String, keys: BackupKeyFile,
        logger: Logger, write: (_ bytes: [UInt8]) throws(CaseVaultError) -> Void
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
        return try store.writeMigration(id: id, keys: keys, write: write)
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
        let key = self.sealing.newBackupKey()
        try keys.add(id: idBytes, createdAt: now, key: key, sealing: self.sealing)
        let wrapping = try key.keyWrapping
        let writer = try LogicalBackup.Writer(
            magic: LogicalBackup.migrationMagic, id: idBytes, createdAt: now, vaultCheck: self.sealing.rootKeyCheck,
            key: key)
        try write(writer.start)
        func push(_ item: LogicalBackup.Item, _ body: [UInt8]) throws(CaseVaultError) {
            try write(writer.frame(item, body))
        }
        var summary = MigrationSummary(
            fileID: id, cases: 0, records: 0, sessionNotes: 0, attachments: 0, holds: 0, shreds: 0, certificates: 0)
        var end = LogicalBackup.End()

        let roster = try self.roster().map { Int64($0) }
        try push(.roster, LogicalBackup.encode(LogicalBackup.Roster(uids: roster)))
        var afterCase = ""
        while true {
            let from = afterCase
            let page = try self.index.read { db in try Index.migrationCases(db, after: from, limit: LogicalBackup.page)
            }
            for row in page { try push(.caseRow, LogicalBackup.encode(row)) }
            summary.cases += page.count
            guard page.count == LogicalBackup.page, let last = page.last else { break }
            afterCase = last.id
        }

        let attached = Set(try self.attachmentNames())
        var afterRecord: Int64 = 0
        while true {
            let from = afterRecord
            let page = try self.index.read { db in
                try Index.migrationRecords(db, after: from, limit: LogicalBackup.page)
            }
            for (_, id) in page {
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
                if metadata.type == .sessionNote { summary.sessionNotes += 1 }
                guard attached.contains(id.rawValue) else { continue }
                try self.pushAttachment(id, push)
                end.attachments += 1
            }
            guard page.count == LogicalBackup.page, let last = page.last else { break }
            afterRecord = last.0
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
        summary.shreds = ledger.count

        var afterCertificate: Int64 = 0
        while true {
            let from = afterCertificate
            let page = try self.index.read { db in
                try Index.migrationCertificates(db, after: from, limit: LogicalBackup.page)
            }
            for (_, certificate) in page { try push(.certificate, LogicalBackup.encode(certificate)) }
            end.certificates += page.count
            guard page.count == LogicalBackup.page, let last = page.last else { break }
            afterCertificate = last.0
        }

        try write(writer.end(end))
        summary.records = end.records
        summary.attachments = end.attachments
        summary.holds = end.holds
        summary.certificates = end.certificates
        self.logger.notice(
            "vault written for PostgreSQL",
            metadata: ["migration.id": "\(id)", "records.count": "\(end.records)", "cases.count": "\(summary.cases)"])
        return summary
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

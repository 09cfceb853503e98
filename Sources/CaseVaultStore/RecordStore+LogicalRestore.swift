internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import CaseVaultSealing
internal import Foundation
internal import Logging

extension RecordStore {
    /// Restores a `LogicalBackup` file, whose header and stream `restore` has opened, into the empty data
    /// directory `configuration` names: a database's backup (`CVBK2`), or a vault moved from a database
    /// (`CVMG2`, which alone may hold session notes). The store is made afresh and every item filed through
    /// it as the daemon files: each record under a key slot of its own (its data key unwrapped from the
    /// file's wrapping key inside the sealing layer) with its own filing time, each case with its header,
    /// each attachment's sealed bytes, each hold's reason sealed again under the root key's hold subkey,
    /// each certificate as it was issued; the file's shreds and ledger entries go into the vault's ledger
    /// with `ledger`, which is re-applied as for any restore. Anything refused removes the directory.
    static func restoreLogical(
        header: [UInt8], stream: BackupOpener, wrapping: EpochKey,
        exactly: (Int) throws(CaseVaultError) -> [UInt8], atEnd: () throws(CaseVaultError) -> Bool,
        into configuration: StoreConfiguration, rootKey: RootKey, ledger: [ShredLedgerEntry], copyEntries: Int?,
        logger: Logger
    ) throws(CaseVaultError) -> RestoreSummary {
        let target = configuration.dataDirectory.path
        var made = false
        var lock: DataDirectoryLock?
        defer { withExtendedLifetime(lock) {} }
        do {
            try DataDirectory.makeDirectory(target, createParents: true)
            made = true
            lock = try DataDirectoryLock(directory: target)
            var fresh = configuration
            fresh.keySource = .file
            fresh.shredLedgerCopy = nil
            let store = try RecordStore.open(fresh, rootKey: rootKey, logger: logger)
            defer { store.close() }
            var restore = LogicalRestore(
                store: store, wrapping: wrapping,
                migration: Array(header[0..<6]) == LogicalBackup.migrationMagic)
            var first = true
            while !restore.ended {
                let length = Int(UInt32(bigEndianBytes: try exactly(4)))
                guard length > 0, length <= LogicalBackup.maxMessage else {
                    throw LogicalBackup.damaged("a frame has an impossible length")
                }
                let message: [UInt8]
                do {
                    message = try stream.open(try exactly(length), associatedData: first ? header : [])
                } catch let error as CaseVaultError {
                    throw error
                } catch {
                    throw LogicalBackup.damaged("a part of it does not authenticate")
                }
                first = false
                try restore.item(message, finished: stream.isFinished)
            }
            do {
                try stream.finish()
            } catch {
                throw LogicalBackup.damaged("it was cut short")
            }
            guard try exactly(4) == [0, 0, 0, 0], try atEnd() else {
                throw LogicalBackup.damaged("it goes on after its end")
            }
            try restore.check()
            // The restored vault starts an audit log of its own, or goes on with one moved into it: every
            // entry from the first is checked at its next start.
            try store.setAuditAnchor(.empty)
            let applied = try store.reapplyLedger(ShredLedgerEntry.union([restore.shreds, ledger]))
            logger.notice(
                "backup restored",
                metadata: [
                    "records.count": "\(restore.counted.records)", "records.reshredded": "\(applied.reshredded)",
                    "ledger.added": "\(applied.added)",
                ])
            return RestoreSummary(
                backupID: Hex.encode(header[6..<22]), createdAt: Int64(bigEndianBytes: header[22..<30]),
                records: restore.counted.records, attachments: restore.counted.attachments,
                reshredded: applied.reshredded, ledgerAdded: applied.added, copyEntries: copyEntries)
        } catch let error as CaseVaultError {
            // Nothing of a refused restore stays behind.
            if made { try? FileManager.default.removeItem(atPath: target) }
            throw error
        } catch {
            if made { try? FileManager.default.removeItem(atPath: target) }
            throw CaseVaultError(.storageFailure, "the restore failed: \(error)")
        }
    }
}

/// One `LogicalBackup` file's items filed into a fresh store, in the file's order.
private struct LogicalRestore {
    let store: RecordStore
    let wrapping: EpochKey
    /// A vault moved from a database, which holds its session notes; a backup never does.
    let migration: Bool
    var counted = LogicalBackup.End()
    var ended = false
    var end: LogicalBackup.End?
    /// Cases by their header's id, until their header is filed.
    var cases: [String: LogicalBackup.CaseRow] = [:]
    /// The file's shreds and ledger entries.
    var shreds: [ShredLedgerEntry] = []
    /// The record the last item filed, which an attachment may follow.
    var lastRecord: RecordID?
    var attachment: (sink: any AttachmentSink, size: Int64, next: Int64)?

    mutating func item(_ message: [UInt8], finished: Bool) throws(CaseVaultError) {
        guard let kind = message.first.flatMap(LogicalBackup.Item.init(rawValue:)) else {
            throw LogicalBackup.damaged("an item of an unknown kind")
        }
        let body = message[1...]
        guard self.attachment == nil || kind == .attachmentChunk || kind == .attachmentEnd else {
            throw LogicalBackup.damaged("an attachment without its end")
        }
        guard kind == .end || !finished else { throw LogicalBackup.damaged("it ends before its end item") }
        switch kind {
        case .roster:
            for uid in try LogicalBackup.decode(LogicalBackup.Roster.self, body).uids {
                guard let uid = UInt32(exactly: uid) else { throw LogicalBackup.damaged("a uid out of range") }
                _ = try self.store.addToRoster(uid)
            }
        case .caseRow:
            let row = try LogicalBackup.decode(LogicalBackup.CaseRow.self, body)
            self.cases[row.headerID] = row
        case .record, .recordAndBlob:
            let (row, blob) = try LogicalBackup.record(kind, body)
            try self.file(row, blob: blob)
        case .attachmentStart:
            let row = try LogicalBackup.decode(LogicalBackup.Attachment.self, body)
            guard let last = self.lastRecord, last.rawValue == row.recordID, row.size > 0 else {
                throw LogicalBackup.damaged("an attachment that follows no record of its own")
            }
            self.lastRecord = nil
            self.attachment = (try self.store.beginAttachment(last).file, row.size, 0)
        case .attachmentChunk:
            guard var attachment = self.attachment, body.count > 8 else {
                throw LogicalBackup.damaged("an attachment's chunk out of place")
            }
            let bytes = Array(body.dropFirst(8))
            guard Int64(bigEndianBytes: body.prefix(8)) == attachment.next,
                attachment.next + Int64(bytes.count) <= attachment.size
            else { throw LogicalBackup.damaged("an attachment's chunks out of order") }
            try attachment.sink.append(bytes)
            attachment.next += Int64(bytes.count)
            self.attachment = attachment
        case .attachmentEnd:
            guard let attachment = self.attachment, attachment.next == attachment.size else {
                throw LogicalBackup.damaged("an attachment's end out of place")
            }
            try self.store.finishAttachment(attachment.sink)
            self.attachment = nil
            self.counted.attachments += 1
        case .hold:
            let row = try LogicalBackup.decode(LogicalBackup.Hold.self, body)
            let uid = try row.placedByUID.map { uid throws(CaseVaultError) -> UInt32 in
                guard let uid = UInt32(exactly: uid) else { throw LogicalBackup.damaged("a uid out of range") }
                return uid
            }
            let hold = try self.store.sealing.movedHold(
                id: try Self.identifier(row.id), caseID: try Self.identifier(row.caseID), placedAt: row.placedAt,
                placedBy: Authority(uid: uid, role: row.placedByRole), sealedReason: Array(row.sealedReason),
                wrappedKey: Array(row.wrappedKey), under: self.wrapping)
            try self.store.insertHold(hold)
            self.counted.holds += 1
        case .shred:
            let row = try LogicalBackup.decode(LogicalBackup.Shred.self, body)
            self.shreds.append(
                ShredLedgerEntry(
                    recordID: try Self.identifier(row.id), caseID: try Self.identifier(row.caseID),
                    type: RecordType(rawValue: row.type), shreddedAt: row.shreddedAt))
        case .ledger:
            for entry in try LogicalBackup.decode(LogicalBackup.Ledger.self, body).records {
                self.shreds.append(
                    ShredLedgerEntry(recordID: try Self.identifier(entry.id), shreddedAt: entry.shreddedAt))
            }
        case .certificate:
            let row = try LogicalBackup.decode(LogicalBackup.Certificate.self, body)
            let _: CaseID = try Self.identifier(row.caseID)
            try self.store.index.write { db in try Index.insertMovedCertificate(db, row) }
            self.counted.certificates += 1
        case .end:
            self.end = try LogicalBackup.decode(LogicalBackup.End.self, body)
            self.ended = true
        }
    }

    /// Files one record: a case's header opens its case, with the state the file gives it.
    private mutating func file(_ row: LogicalBackup.Record, blob: [UInt8]) throws(CaseVaultError) {
        guard let type = RecordType(rawValue: row.type), type != .sessionNote || self.migration else {
            throw LogicalBackup.damaged("a record of a type a backup does not hold")
        }
        let id: RecordID = try Self.identifier(row.id)
        let caseID: CaseID = try Self.identifier(row.caseID)
        let supersedes = try row.supersedes.map { text throws(CaseVaultError) -> RecordID in try Self.identifier(text) }
        var effects = FilingEffects()
        var supervisors: [UInt32] = []
        if type == .caseHeader {
            guard let opened = self.cases.removeValue(forKey: row.id), opened.id == row.caseID,
                let state = CaseState(rawValue: opened.state)
            else { throw LogicalBackup.damaged("a case's header without its case") }
            let mediators = opened.mediators.compactMap { UInt32(exactly: $0) }
            supervisors = opened.supervisors.compactMap { UInt32(exactly: $0) }
            guard mediators.count == opened.mediators.count, supervisors.count == opened.supervisors.count else {
                throw LogicalBackup.damaged("a uid out of range")
            }
            effects.newCase = (
                CaseSummary(
                    id: caseID, state: .intake, participantCount: opened.participantCount, mediators: mediators,
                    createdAt: opened.createdAt, closedAt: nil),
                id
            )
            effects.caseState = (caseID, state, opened.closedAt, opened.outcome)
        }
        let record = try self.store.sealing.movedRecord(
            id: id, caseID: caseID, type: type, author: row.author, supersedes: supersedes, blob: blob,
            wrappedKey: Array(row.wrappedKey), under: self.wrapping)
        _ = try self.store.commit(record, effects: effects, createdAt: row.createdAt)
        if !supervisors.isEmpty { try self.store.assign(.supervisors, caseID, supervisors) }
        self.counted.records += 1
        self.lastRecord = id
    }

    /// The end must have come, every case with its header, and the counts match what came.
    func check() throws(CaseVaultError) {
        guard let end = self.end, self.attachment == nil else { throw LogicalBackup.damaged("it ends too soon") }
        guard self.cases.isEmpty else { throw LogicalBackup.damaged("a case without its header") }
        guard end.records == self.counted.records, end.attachments == self.counted.attachments,
            end.holds == self.counted.holds, end.certificates == self.counted.certificates
        else { throw LogicalBackup.damaged("its counts do not match what it holds") }
    }

    private static func identifier<Tag>(_ text: String) throws(CaseVaultError) -> Identifier<Tag> {
        do {
            return try Identifier<Tag>(text)
        } catch {
            throw LogicalBackup.damaged("an id in it is malformed")
        }
    }
}

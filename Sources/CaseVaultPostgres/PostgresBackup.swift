package import CaseVaultCore
internal import CaseVaultCrypto
package import CaseVaultSealing
internal import Foundation
internal import Logging
internal import PostgresNIO

extension PostgresStorage {
    /// Writes a backup through `write` (called with each piece of the file, in order) while the daemons
    /// serve: the rows of one snapshot (a read-only REPEATABLE READ transaction), each record and hold's
    /// key rewrapped from its erase epoch to the backup's wrapping key. First destroys the backup keys older
    /// than `retentionDays`, then makes and keeps this backup's key. A record shredded after the snapshot
    /// was taken, and before its page is written, is left out; each key is read as it is now (a turn may
    /// have rewrapped it since the snapshot), under the epochs this daemon's file holds.
    package func backup(
        id: String, keys: BackupKeyFile, retentionDays: Int, write: (_ bytes: [UInt8]) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> BackupSummary {
        try self.backup(id: id, keys: keys, retentionDays: retentionDays, migration: false, write: write)
    }

    /// Writes the whole vault as a file a data directory is restored from (`casevaultctl migrate`, magic
    /// `CVMG2`): what a backup holds, session notes included, while no daemon serves the vault. Every
    /// daemon must have stopped: each known one's presence lock (`DaemonPresence`) is taken on a connection
    /// held until the file is written (`storage-failure` naming the first that serves), then the serving
    /// lock alone, which every serving daemon holds shared, so that no daemon that holds its place, of a
    /// name the database knows or not, serves or starts meanwhile, and the filing lock. A daemon of an
    /// earlier build, which takes no serving lock, that joined meanwhile all the same (it registers as it
    /// starts) fails the write once it is done, since the file may lack its shreds or holds. A daemon whose
    /// session ended (a failover) is held off by those locks only from its next step on; until then each of
    /// its writes waits for the filing lock held here and then finds the mark
    /// (`PostgresRecords.shareFilingLockUnlessMoved`; docs/SECURITY.md).
    package func writeMigration(
        id: String, keys: BackupKeyFile, retentionDays: Int, write: (_ bytes: [UInt8]) throws(CaseVaultError) -> Void,
        finish: () throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> BackupSummary {
        let logger = self.logger
        let connection = try self.checkOut()
        defer { Self.discard(connection) }
        let known = try self.holdEveryDaemon(on: connection)
        let summary = try self.backup(id: id, keys: keys, retentionDays: retentionDays, migration: true, write: write)
        // A daemon the database did not know may have joined meanwhile, and shredded or placed a hold after
        // the snapshot: then the file is not the vault, and is not kept.
        if let joined = try Self.wait(closing: connection, { try await Self.daemons(on: connection, logger: logger) })
            .first(where: { !known.contains($0) })
        {
            throw CaseVaultError(
                .storageFailure,
                "daemon \(joined) joined the vault while it was written, so the file may lack its changes: stop it, and move the vault again"
            )
        }
        try finish()
        let time = self.now()
        do throws(CaseVaultError) {
            try Self.wait(closing: connection) {
                try await PostgresSchema.markMoved(id: id, at: time, on: connection, logger: logger)
            }
        } catch {
            throw CaseVaultError(
                error.code,
                "the vault could not be marked as moved (\(error.message)), so the file is not kept: move it again, after migrate --cancel if the mark was made all the same"
            )
        }
        return summary
    }

    /// Removes the mark a move left (`casevaultctl migrate --cancel`), every daemon of the vault stopped,
    /// as for the move; false when the vault bears none.
    package func cancelMove() throws(CaseVaultError) -> Bool {
        let logger = self.logger
        let connection = try self.checkOut()
        defer { Self.discard(connection) }
        _ = try self.holdEveryDaemon(on: connection)
        return try Self.wait(closing: connection) {
            try await PostgresSchema.cancelMove(on: connection, logger: logger)
        }
    }

    /// Checks that the database's schema is this build's and its root key this storage's, then takes, on
    /// `connection`, the presence lock of every daemon the database knows (`storage-failure` naming the
    /// first that serves), the serving lock alone (`storage-failure` when any daemon serves) and the filing
    /// lock: the locks are the session's, held until `connection` is discarded. Returns the daemons' names.
    private func holdEveryDaemon(on connection: PostgresConnection) throws(CaseVaultError) -> [String] {
        let logger = self.logger
        let check = self.sealing.rootKeyCheck
        /// Who serves the vault: nobody, a daemon the database knows by its name, or one it holds the serving
        /// lock shared for.
        enum Serving {
            case nobody
            case daemon(String)
            case unnamed
        }
        let (serving, known) = try Self.wait(closing: connection) { () async throws -> (Serving, [String]) in
            let version = try await PostgresSchema.version(connection, logger: logger)
            guard version == PostgresSchema.currentVersion else {
                throw CaseVaultError(
                    .invalidConfiguration,
                    "the database's schema is version \(version), this build's \(PostgresSchema.currentVersion): start a daemon of this build on it once, then stop it",
                    field: "storage.connection")
            }
            try await PostgresSchema.checkRootKey(check, on: connection, logger: logger)
            let names = try await Self.daemons(on: connection, logger: logger)
            for name in names {
                guard let daemon = try? DaemonName(name) else { continue }
                for try await taken in try await connection.query(
                    "SELECT pg_try_advisory_lock(\(DaemonPresence.key(daemon)))", logger: logger
                ).decode(Bool.self) where !taken {
                    return (.daemon(name), names)
                }
            }
            // Then the serving lock alone, which every serving daemon holds shared (`DaemonPresence`): none
            // the database does not know serves either, and none begins to until the connection goes.
            for try await taken in try await connection.query(
                "SELECT pg_try_advisory_lock(\(DaemonPresence.servingLock))", logger: logger
            ).decode(Bool.self) where !taken {
                return (.unnamed, names)
            }
            // And the filing lock, alone: a daemon of an earlier build, which takes no serving lock, files
            // nothing meanwhile. Waited for at most 30 s: a filing left open would otherwise hold the move,
            // and with it every daemon's start, for good.
            try await connection.perform("SET lock_timeout = '30s'", logger: logger)
            try await connection.perform(
                "SELECT pg_advisory_lock(\(PostgresRecords.filingLock))", logger: logger)
            return (.nobody, names)
        }
        switch serving {
        case .nobody:
            return known
        case .daemon(let name):
            throw CaseVaultError(
                .storageFailure, "daemon \(name) serves the vault: stop every daemon of the vault before moving it")
        case .unnamed:
            throw CaseVaultError(
                .storageFailure,
                "a daemon serves the vault (or another move holds it): stop every daemon of the vault before moving it")
        }
    }

    /// The names of the daemons the database knows.
    private static func daemons(on connection: PostgresConnection, logger: Logger) async throws -> [String] {
        var names: [String] = []
        for try await name in try await connection.query(
            """
            SELECT daemon FROM casevault_daemons UNION SELECT daemon FROM casevault_epoch_holders ORDER BY 1
            """, logger: logger
        ).decode(String.self) {
            names.append(name)
        }
        return names
    }

    private func backup(
        id: String, keys: BackupKeyFile, retentionDays: Int, migration: Bool,
        write: (_ bytes: [UInt8]) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> BackupSummary {
        guard let idBytes = Hex.decode(id), idBytes.count == 16 else {
            throw CaseVaultError(.invalidIdentifier, "a backup id is 32 lowercase hexadecimal characters")
        }
        let now = self.now()
        let destroyed = try keys.destroy(createdBefore: now - Int64(retentionDays) * 86_400_000)
        let (writer, wrapping) = try LogicalBackup.Writer.begin(
            magic: migration ? LogicalBackup.migrationMagic : LogicalBackup.magic, id: idBytes, createdAt: now,
            sealing: self.sealing, keys: keys)
        try write(writer.start)
        func push(_ item: LogicalBackup.Item, _ body: [UInt8]) throws(CaseVaultError) {
            try write(writer.frame(item, body))
        }
        let end = try self.withSnapshot { () throws(CaseVaultError) -> LogicalBackup.End in
            try push(.roster, LogicalBackup.encode(LogicalBackup.Roster(uids: try self.snapshotRoster())))
            try self.snapshotCases { row throws(CaseVaultError) in try push(.caseRow, LogicalBackup.encode(row))
            }
            var end = LogicalBackup.End()
            var leftOut: [ByteBuffer] = []
            try self.snapshotRecords(wrapping: wrapping, notes: migration, leftOut: &leftOut) {
                record, blob, attachment throws(CaseVaultError) in
                try push(.recordAndBlob, LogicalBackup.recordItem(record, blob: blob.readableBytesView))
                end.records += 1
                guard let attachment else { return }
                end.attachments += 1
                try push(.attachmentStart, LogicalBackup.encode(attachment))
                try self.snapshotChunks(attachment) { at, bytes throws(CaseVaultError) in
                    try push(.attachmentChunk, UInt64(at).bigEndianBytes + bytes)
                }
                try push(.attachmentEnd, [])
            }
            for hold in try self.snapshotHolds(wrapping: wrapping) {
                try push(.hold, LogicalBackup.encode(hold))
                end.holds += 1
            }
            try self.snapshotShreds { row throws(CaseVaultError) in try push(.shred, LogicalBackup.encode(row)) }
            try self.snapshotLedger(adding: leftOut) { page throws(CaseVaultError) in
                try push(.ledger, LogicalBackup.encode(page))
            }
            try self.snapshotCertificates { row throws(CaseVaultError) in
                try push(.certificate, LogicalBackup.encode(row))
                end.certificates += 1
            }
            return end
        }
        try write(writer.end(end))
        self.logger.notice(
            "backup written",
            metadata: [
                "backup.id": "\(id)", "records.count": "\(end.records)", "backup_keys.destroyed": "\(destroyed)",
            ])
        return BackupSummary(
            backupID: id, createdAt: now, records: end.records, attachments: end.attachments,
            destroyedKeys: destroyed)
    }

    /// Runs `body` with every call of this storage on this thread reading one snapshot: a read-only
    /// REPEATABLE READ transaction on a connection of its own, ended when `body` returns. Calls that must
    /// see what is committed now leave it (`current`).
    private func withSnapshot<T>(_ body: () throws(CaseVaultError) -> T) throws(CaseVaultError) -> T {
        let logger = self.logger
        let connection = try self.beginPinnable(["BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"])
        let outcome = self.pinning(connection, failing: "the backup's snapshot failed", body)
        do throws(CaseVaultError) {
            try Self.wait(closing: connection) { try await connection.perform("ROLLBACK", logger: logger) }
            self.checkIn(connection)
        } catch {
            Self.discard(connection)
        }
        return try outcome.get()
    }

    /// Runs `body` on a connection of its own, outside the snapshot this thread reads: what is committed now.
    private func current<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T)
        throws(CaseVaultError) -> T
    {
        do {
            return try Self.$pinned.withValue(nil) { try self.run(body) }
        } catch let error as CaseVaultError {
            throw error
        } catch {
            throw CaseVaultError(.storageFailure, "a read outside the backup's snapshot failed", cause: error)
        }
    }

    private func snapshotRoster() throws(CaseVaultError) -> [Int64] {
        let logger = self.logger
        return try self.run { connection in
            var uids: [Int64] = []
            for try await uid in try await connection.query(
                "SELECT uid FROM casevault_roster ORDER BY uid", logger: logger
            ).decode(Int64.self) {
                uids.append(uid)
            }
            return uids
        }
    }

    private func snapshotCases(_ each: (LogicalBackup.CaseRow) throws(CaseVaultError) -> Void)
        throws(CaseVaultError)
    {
        let logger = self.logger
        var after = ByteBuffer()
        while true {
            let from = after
            let rows = try self.run { connection in
                var rows: [LogicalBackup.CaseRow] = []
                for try await (id, state, count, mediators, supervisors, created, closed, outcome, header)
                    in try await connection.query(
                        """
                        SELECT id, state, participant_count, mediators, supervisors, created_at, closed_at, outcome,
                            header_id
                        FROM casevault_cases WHERE id > \(from) ORDER BY id LIMIT \(LogicalBackup.page)
                        """, logger: logger
                    ).decode(
                        (ByteBuffer, String, Int, [Int64], [Int64], Int64, Int64?, String?, ByteBuffer).self)
                {
                    rows.append(
                        LogicalBackup.CaseRow(
                            id: Hex.encode(id.readableBytesView), state: state, participantCount: count,
                            mediators: mediators, supervisors: supervisors, createdAt: created, closedAt: closed,
                            outcome: outcome, headerID: Hex.encode(header.readableBytesView)))
                }
                return rows
            }
            for row in rows { try each(row) }
            guard rows.count == LogicalBackup.page, let last = rows.last, let bytes = Hex.decode(last.id)
            else { return }
            after = ByteBuffer(bytes: bytes)
        }
    }

    /// Every record but session notes (with them when `notes`), in filing order, page by page: its row from the snapshot, its key as
    /// it is now rewrapped under `wrapping`, its sealed blob and its finished attachment. A record no longer
    /// live now (shredded since the snapshot) is left out, its id added to `leftOut`.
    private func snapshotRecords(
        wrapping: EpochKey, notes: Bool, leftOut: inout [ByteBuffer],
        _ each: (LogicalBackup.Record, ByteBuffer, LogicalBackup.Attachment?) throws(CaseVaultError)
            -> Void
    ) throws(CaseVaultError) {
        let logger = self.logger
        var after: Int64 = 0
        while true {
            let from = after
            // A page's rows without their blobs, each blob's length with them; the blobs then a few at a time.
            let page = try self.run { connection in
                var rows: [(Int64, ByteBuffer, ByteBuffer, String, Int64, String?, ByteBuffer?, Int64)] = []
                for try await row in try await connection.query(
                    """
                    SELECT filed, id, case_id, type, created_at, author, supersedes, octet_length(blob)
                    FROM casevault_records
                    WHERE filed > \(from) AND (\(notes) OR type <> \(RecordType.sessionNote.rawValue))
                    ORDER BY filed LIMIT \(LogicalBackup.page)
                    """, logger: logger
                ).decode((Int64, ByteBuffer, ByteBuffer, String, Int64, String?, ByteBuffer?, Int64).self) {
                    rows.append(row)
                }
                var attachments: [ByteBuffer: (ByteBuffer, Int64)] = [:]
                for try await (record, upload, size) in try await connection.query(
                    """
                    SELECT record_id, upload, size FROM casevault_attachments
                    WHERE record_id = ANY(\(rows.map(\.1)))
                    """, logger: logger
                ).decode((ByteBuffer, ByteBuffer, Int64).self) {
                    attachments[record] = (upload, size)
                }
                return (rows, attachments)
            }
            guard let last = page.0.last else { return }
            after = last.0
            let keys = try self.keysNow(.records, ids: page.0.map(\.1), under: wrapping)
            var blobs: [ByteBuffer: ByteBuffer] = [:]
            for (index, (_, id, caseID, type, createdAt, author, supersedes, _)) in page.0.enumerated() {
                // Shredded since the snapshot: left out, and named in the backup's ledger.
                guard let rewrapped = keys[id] else {
                    leftOut.append(id)
                    continue
                }
                if blobs[id] == nil {
                    blobs = try self.snapshotBlobs(page.0[index...].map { ($0.1, $0.7) })
                }
                guard let blob = blobs.removeValue(forKey: id) else {
                    throw CaseVaultError(.integrityFailure, "a record's blob is missing from the backup's snapshot")
                }
                let recordID = RecordID(bytes: Array(id.readableBytesView))
                let record = LogicalBackup.Record(
                    id: recordID.rawValue, caseID: Hex.encode(caseID.readableBytesView), type: type,
                    createdAt: createdAt, author: author,
                    supersedes: supersedes.map { Hex.encode($0.readableBytesView) }, wrappedKey: rewrapped)
                let attachment = page.1[id].map { upload, size in
                    LogicalBackup.Attachment(
                        recordID: recordID.rawValue, upload: Hex.encode(upload.readableBytesView), size: size)
                }
                try each(record, blob, attachment)
            }
        }
    }

    /// The blobs of the first of `rows` (ids and blob lengths, in order) and of those after it while they
    /// add up to 16 MiB, from the snapshot: so that memory holds a few blobs at a time, however large.
    private func snapshotBlobs(_ rows: [(ByteBuffer, Int64)]) throws(CaseVaultError) -> [ByteBuffer: ByteBuffer] {
        var ids: [ByteBuffer] = []
        var total: Int64 = 0
        for (id, length) in rows {
            guard ids.isEmpty || total + length <= 16 << 20 else { break }
            ids.append(id)
            total += length
        }
        let logger = self.logger
        let wanted = ids
        return try self.run { connection in
            var blobs: [ByteBuffer: ByteBuffer] = [:]
            for try await (id, blob) in try await connection.query(
                "SELECT id, blob FROM casevault_records WHERE id = ANY(\(wanted))", logger: logger
            ).decode((ByteBuffer, ByteBuffer).self) {
                blobs[id] = blob
            }
            return blobs
        }
    }

    /// The tables whose rows hold a key wrapped under an erase epoch.
    private enum Wrapped {
        case records, holds
    }

    /// The key of each of `ids` still in `table` now (outside the snapshot), rewrapped from the erase epoch
    /// it is under now to `wrapping`: a turn may have rewrapped it since the snapshot. Read again once when
    /// this daemon's file lacks the epoch: a turn between the two reads.
    private func keysNow(_ table: Wrapped, ids: [ByteBuffer], under wrapping: EpochKey) throws(CaseVaultError)
        -> [ByteBuffer: [UInt8]]
    {
        do {
            return try self.keysNowOnce(table, ids: ids, under: wrapping)
        } catch  where error.code == .keyUnavailable {
            return try self.keysNowOnce(table, ids: ids, under: wrapping)
        }
    }

    private func keysNowOnce(_ table: Wrapped, ids: [ByteBuffer], under wrapping: EpochKey) throws(CaseVaultError)
        -> [ByteBuffer: [UInt8]]
    {
        guard !ids.isEmpty else { return [:] }
        let logger = self.logger
        let query: PostgresQuery =
            switch table {
            case .holds: "SELECT id, epoch, wrapped_key FROM casevault_holds WHERE id = ANY(\(ids))"
            case .records: "SELECT id, epoch, wrapped_key FROM casevault_records WHERE id = ANY(\(ids))"
            }
        let rows = try self.current { connection in
            var rows: [(ByteBuffer, UInt64, [UInt8])] = []
            for try await (id, epoch, wrapped) in try await connection.query(query, logger: logger).decode(
                (ByteBuffer, Int64, ByteBuffer).self)
            {
                rows.append((id, UInt64(epoch), Array(wrapped.readableBytesView)))
            }
            return rows
        }
        let epochKeys = try self.epochKeys.epochKeys()
        var keys: [ByteBuffer: [UInt8]] = [:]
        for (id, epoch, wrapped) in rows {
            guard id.readableBytes == 16 else {
                throw CaseVaultError(.integrityFailure, "a row's id in the database is malformed")
            }
            let key = try Self.epochKey(epoch, in: epochKeys)
            let bytes = Array(id.readableBytesView)
            keys[id] =
                switch table {
                case .records: try key.rewrap(wrapped, recordID: RecordID(bytes: bytes), under: wrapping)
                case .holds: try key.rewrap(wrapped, holdID: HoldID(bytes: bytes), under: wrapping)
                }
        }
        return keys
    }

    /// The key of erase epoch `number` among `keys` (this daemon's file); `key-unavailable` when the file does
    /// not hold it: a turn rewrapped the key and destroyed the epoch between the read of the key and of the
    /// file, or this daemon, just joined, has not received that epoch.
    private static func epochKey(_ number: UInt64, in keys: [EpochKey]) throws(CaseVaultError) -> EpochKey {
        guard let key = keys.first(where: { $0.number == number }) else {
            throw CaseVaultError(
                .keyUnavailable,
                "this daemon does not hold erase epoch \(number)'s key, which a record or hold is wrapped under: a turn destroyed it while the backup ran, or this daemon has not received it yet; take the backup again"
            )
        }
        return key
    }

    private func snapshotChunks(
        _ attachment: LogicalBackup.Attachment, _ each: (Int64, [UInt8]) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) {
        guard let upload = Hex.decode(attachment.upload) else { return }
        let logger = self.logger
        var next: Int64 = 0
        while true {
            let from = next
            let chunks = try self.run { connection in
                var chunks: [(Int64, [UInt8])] = []
                for try await (at, bytes) in try await connection.query(
                    """
                    SELECT at, bytes FROM casevault_attachment_chunks
                    WHERE upload = \(ByteBuffer(bytes: upload)) AND at >= \(from)
                    ORDER BY at LIMIT \(LogicalBackup.chunkPage)
                    """, logger: logger
                ).decode((Int64, ByteBuffer).self) {
                    chunks.append((at, Array(bytes.readableBytesView)))
                }
                return chunks
            }
            for (at, bytes) in chunks { try each(at, bytes) }
            guard chunks.count == LogicalBackup.chunkPage, let last = chunks.last else { return }
            next = last.0 + 1
        }
    }

    private func snapshotHolds(wrapping: EpochKey) throws(CaseVaultError) -> [LogicalBackup.Hold] {
        let logger = self.logger
        let rows = try self.run { connection in
            var rows: [(ByteBuffer, ByteBuffer, Int64, Int64?, String, ByteBuffer)] = []
            for try await row in try await connection.query(
                """
                SELECT id, case_id, placed_at, placed_by_uid, placed_by_role, sealed_reason FROM casevault_holds
                ORDER BY filed
                """, logger: logger
            ).decode((ByteBuffer, ByteBuffer, Int64, Int64?, String, ByteBuffer).self) {
                rows.append(row)
            }
            return rows
        }
        guard !rows.isEmpty else { return [] }
        let keys = try self.keysNow(.holds, ids: rows.map(\.0), under: wrapping)
        var holds: [LogicalBackup.Hold] = []
        for (id, caseID, placedAt, uid, role, reason) in rows {
            // Released since the snapshot: left out.
            guard let rewrapped = keys[id] else { continue }
            let holdID = HoldID(bytes: Array(id.readableBytesView))
            holds.append(
                LogicalBackup.Hold(
                    id: holdID.rawValue, caseID: Hex.encode(caseID.readableBytesView), placedAt: placedAt,
                    placedByUID: uid, placedByRole: role, wrappedKey: rewrapped,
                    sealedReason: Array(reason.readableBytesView)))
        }
        return holds
    }

    private func snapshotShreds(_ each: (LogicalBackup.Shred) throws(CaseVaultError) -> Void)
        throws(CaseVaultError)
    {
        let logger = self.logger
        var after = ByteBuffer()
        while true {
            let from = after
            let rows = try self.run { connection in
                var rows: [LogicalBackup.Shred] = []
                for try await (id, caseID, type, at, epoch, method, uid, role) in try await connection.query(
                    """
                    SELECT id, case_id, type, shredded_at, epoch, method, authority_uid, authority_role
                    FROM casevault_shreds WHERE id > \(from) ORDER BY id LIMIT \(LogicalBackup.page * 5)
                    """, logger: logger
                ).decode((ByteBuffer, ByteBuffer, String, Int64, Int64, String, Int64?, String).self) {
                    rows.append(
                        LogicalBackup.Shred(
                            id: Hex.encode(id.readableBytesView), caseID: Hex.encode(caseID.readableBytesView),
                            type: type, shreddedAt: at, epoch: epoch, method: method, authorityUID: uid,
                            authorityRole: role))
                }
                return rows
            }
            for row in rows { try each(row) }
            guard rows.count == LogicalBackup.page * 5, let last = rows.last, let bytes = Hex.decode(last.id)
            else { return }
            after = ByteBuffer(bytes: bytes)
        }
    }

    /// The ledger a backup carries, a page an item: the snapshot's `casevault_ledger` (records this vault
    /// knows of only from a restore), then the shreds, as committed now, of the records in `leftOut`.
    private func snapshotLedger(
        adding leftOut: [ByteBuffer], _ each: (LogicalBackup.Ledger) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) {
        let logger = self.logger
        var after = ByteBuffer()
        while true {
            let from = after
            let rows = try self.run { connection in
                var rows: [(ByteBuffer, Int64)] = []
                for try await row in try await connection.query(
                    """
                    SELECT id, shredded_at FROM casevault_ledger WHERE id > \(from) ORDER BY id
                    LIMIT \(LogicalBackup.ledgerPage)
                    """, logger: logger
                ).decode((ByteBuffer, Int64).self) {
                    rows.append(row)
                }
                return rows
            }
            if !rows.isEmpty { try each(Self.ledger(rows)) }
            guard rows.count == LogicalBackup.ledgerPage, let last = rows.last else { break }
            after = last.0
        }
        var start = 0
        while start < leftOut.count {
            let ids = Array(leftOut[start..<min(start + LogicalBackup.ledgerPage, leftOut.count)])
            start += ids.count
            let rows = try self.current { connection in
                var rows: [(ByteBuffer, Int64)] = []
                for try await row in try await connection.query(
                    "SELECT id, shredded_at FROM casevault_shreds WHERE id = ANY(\(ids)) ORDER BY id", logger: logger
                ).decode((ByteBuffer, Int64).self) {
                    rows.append(row)
                }
                return rows
            }
            if !rows.isEmpty { try each(Self.ledger(rows)) }
        }
    }

    private static func ledger(_ rows: [(ByteBuffer, Int64)]) -> LogicalBackup.Ledger {
        LogicalBackup.Ledger(
            records: rows.map { id, at in .init(id: Hex.encode(id.readableBytesView), shreddedAt: at) })
    }

    private func snapshotCertificates(_ each: (LogicalBackup.Certificate) throws(CaseVaultError) -> Void)
        throws(CaseVaultError)
    {
        let logger = self.logger
        var after: Int64 = 0
        while true {
            let from = after
            let rows = try self.run { connection in
                var rows: [(Int64, LogicalBackup.Certificate)] = []
                for try await (filed, id, caseID, issuedAt, epoch, completes, document) in try await connection.query(
                    """
                    SELECT filed, id, case_id, issued_at, epoch, completes, document FROM casevault_certificates
                    WHERE filed > \(from) ORDER BY filed LIMIT \(LogicalBackup.page * 5)
                    """, logger: logger
                ).decode((Int64, String, ByteBuffer, Int64, Int64, String?, ByteBuffer).self) {
                    rows.append(
                        (
                            filed,
                            LogicalBackup.Certificate(
                                id: id, caseID: Hex.encode(caseID.readableBytesView), issuedAt: issuedAt, epoch: epoch,
                                completes: completes, document: Array(document.readableBytesView))
                        ))
                }
                return rows
            }
            for (_, row) in rows { try each(row) }
            guard rows.count == LogicalBackup.page * 5, let last = rows.last else { return }
            after = last.0
        }
    }
}

/// A restore of a backup (`PostgresStorage.backup`) into a vault on PostgreSQL that holds nothing yet, fed
/// the backup's bytes as they arrive (`feed`) and committed whole at its end (`finish`), in one
/// transaction that holds the filing lock alone, so that nothing is filed meanwhile and nothing of it is
/// kept unless all of it is. Every key is rewrapped from the backup's wrapping key to the erase epoch new
/// wraps use. A record the ledger given names is shredded again: only its shred's row is written (method
/// `restore_ledger`), never its key, blob or attachment, and its case gets a certificate. The ledger's
/// other records, and those the backup's own ledger names, are kept in `casevault_ledger`, which the
/// vault's ledger export lists. Used by one task at a time; `abandon` (or the end of the connection)
/// undoes it.
package final class PostgresRestore: BackupRestore, @unchecked Sendable {
    private let storage: PostgresStorage
    private let connection: PostgresConnection
    private let keys: BackupKeyFile
    private let ledger: [RecordID: Int64]
    private let order: ShredOrder
    private let epoch: EpochKey
    /// When the restore began: the time of the shreds it writes.
    private let time: Int64
    private var pending: [UInt8] = []
    private var header: [UInt8]?
    private var stream: BackupOpener?
    private var wrapping: EpochKey?
    private var ended: LogicalBackup.End?
    private var counted = LogicalBackup.End()
    /// The records of the backup the ledger names, by case: shredded again.
    private var shreddedAgain: [CaseID: (records: [(RecordID, RecordType)], epoch: UInt64)] = [:]
    /// The record the last item was, which an attachment may follow, and whether it is kept.
    private var lastRecord: (id: [UInt8], kept: Bool)?
    private var attachment: (record: [UInt8], upload: [UInt8], size: Int64, next: Int64, kept: Bool)?
    private var open = true

    init(
        storage: PostgresStorage, connection: PostgresConnection, keys: BackupKeyFile, ledger: [RecordID: Int64],
        order: ShredOrder, epoch: EpochKey
    ) {
        self.storage = storage
        self.connection = connection
        self.keys = keys
        self.ledger = ledger
        self.order = order
        self.epoch = epoch
        self.time = storage.now()
    }

    deinit {
        if self.open { PostgresStorage.discard(self.connection) }
    }

    /// Takes the next bytes of the backup, restoring every item they complete.
    package func feed(_ bytes: UnsafeRawBufferPointer) throws(CaseVaultError) {
        self.pending.append(contentsOf: bytes)
        do {
            try self.consume()
        } catch {
            self.abandon()
            throw error
        }
    }

    /// Ends the restore: the backup must have ended whole. Certifies the shreds of what the ledger named,
    /// keeps the rest of the ledger, commits, and returns what was restored. Each step is a statement or a
    /// page of them, each under the time limit of one.
    package func finish() throws(CaseVaultError) -> RestoredBackup {
        defer { self.abandon() }
        guard let header = self.header, let ended = self.ended else {
            throw LogicalBackup.damaged("it ends too soon")
        }
        guard self.pending == [0, 0, 0, 0] else { throw LogicalBackup.damaged("it goes on after its end") }
        guard ended.records == self.counted.records, ended.attachments == self.counted.attachments,
            ended.holds == self.counted.holds, ended.certificates == self.counted.certificates
        else { throw LogicalBackup.damaged("its counts do not match what it holds") }
        let (connection, logger, order, time) = (self.connection, self.storage.logger, self.order, self.time)
        let certifying = (self.storage.sealing, self.storage.eraseWindow)
        for (caseID, shreds) in self.shreddedAgain {
            let one = [caseID: shreds]
            try self.perform {
                try await PostgresStorage.certify(
                    one, order: order, at: time, certifying: certifying, on: connection, logger: logger)
            }
        }
        // The ledger's records that are neither shredded again nor shreds the backup held.
        let entries = self.ledger.map { LogicalBackup.Ledger.Entry(id: $0.key.rawValue, shreddedAt: $0.value) }
        var start = 0
        while start < entries.count {
            let page = Array(entries[start..<min(start + LogicalBackup.ledgerPage * 10, entries.count)])
            start += page.count
            try self.keepLedger(LogicalBackup.Ledger(records: page))
        }
        do throws(CaseVaultError) {
            try self.perform { try await connection.commit(logger: logger) }
        } catch {
            throw PostgresStorage.committing(error)
        }
        let again = self.shreddedAgain.values.reduce(0) { $0 + $1.records.count }
        self.open = false
        self.storage.checkIn(connection)
        let summary = RestoredBackup(
            backupID: Hex.encode(header[6..<22]), createdAt: Int64(bigEndianBytes: header[22..<30]),
            records: self.counted.records, attachments: self.counted.attachments, holds: self.counted.holds,
            certificates: self.counted.certificates, shreddedAgain: again)
        logger.notice(
            "backup restored",
            metadata: [
                "backup.id": "\(summary.backupID)", "records.count": "\(summary.records)",
                "records.shredded_again": "\(summary.shreddedAgain)",
            ])
        return summary
    }

    /// Undoes whatever the restore wrote (closing its session ends its transaction).
    package func abandon() {
        guard self.open else { return }
        self.open = false
        PostgresStorage.discard(self.connection)
    }

    private func perform(_ body: @escaping @Sendable () async throws -> Void) throws(CaseVaultError) {
        try PostgresStorage.wait(closing: self.connection, body)
    }

    private func consume() throws(CaseVaultError) {
        guard self.open else { throw CaseVaultError(.storageFailure, "the restore was ended already") }
        if self.header == nil {
            let size = LogicalBackup.headerSize + BackupOpener.headerByteCount
            guard self.pending.count >= size else {
                if self.pending.count >= 6 { try self.checkMagic() }
                return
            }
            try self.start(Array(self.pending[0..<size]))
            self.pending.removeFirst(size)
        }
        while self.ended == nil, self.pending.count >= 4 {
            let length = Int(UInt32(bigEndianBytes: self.pending[0..<4]))
            guard length > 0, length <= LogicalBackup.maxMessage else {
                throw LogicalBackup.damaged("a frame has an impossible length")
            }
            guard self.pending.count >= 4 + length else { return }
            let sealed = Array(self.pending[4..<(4 + length)])
            self.pending.removeFirst(4 + length)
            try self.item(sealed)
        }
        if self.ended != nil, self.pending.count > 4 { throw LogicalBackup.damaged("it goes on after its end") }
    }

    private func checkMagic() throws(CaseVaultError) {
        let magic = Array(self.pending[0..<6])
        guard magic == LogicalBackup.magic || magic == LogicalBackup.migrationMagic else {
            if magic == LogicalBackup.localMagic {
                throw CaseVaultError(
                    .invalidField,
                    "this is a backup of a vault kept in a data directory: restore it with casevaultctl restore --data-dir, without the daemon",
                    field: "backup")
            }
            throw CaseVaultError(.invalidField, "this is not a CaseVault backup file", field: "backup")
        }
    }

    private func start(_ bytes: [UInt8]) throws(CaseVaultError) {
        try self.checkMagic()
        let header = Array(bytes[0..<LogicalBackup.headerSize])
        let idBytes = Array(header[6..<22])
        guard Int64(bigEndianBytes: header[30..<38]) == self.storage.sealing.rootKeyCheck else {
            throw CaseVaultError(
                .unsealRefused, "this backup belongs to another vault: its root key is not this vault's")
        }
        guard let key = try self.keys.key(id: idBytes, sealing: self.storage.sealing) else {
            throw CaseVaultError(
                .notFound,
                "the key of backup \(Hex.encode(idBytes)) is not in \(self.keys.path): it was destroyed by the backup retention, or the backup was taken by another daemon, whose backup key file holds it"
            )
        }
        do {
            self.stream = try BackupOpener(key: key, header: Array(bytes[LogicalBackup.headerSize...]))
        } catch {
            throw LogicalBackup.damaged("its stream header is damaged")
        }
        self.wrapping = try key.keyWrapping
        self.header = header
        self.migration = Array(header[0..<6]) == LogicalBackup.migrationMagic
    }

    private func item(_ sealed: [UInt8]) throws(CaseVaultError) {
        guard let stream = self.stream, let header = self.header, let wrapping = self.wrapping else { return }
        let message: [UInt8]
        do {
            message = try stream.open(sealed, associatedData: self.started ? [] : header)
        } catch {
            throw LogicalBackup.damaged("a part of it does not authenticate")
        }
        self.started = true
        guard let kind = message.first.flatMap(LogicalBackup.Item.init(rawValue:)) else {
            throw LogicalBackup.damaged("an item of an unknown kind")
        }
        let body = message[1...]
        guard self.attachment == nil || kind == .attachmentChunk || kind == .attachmentEnd else {
            throw LogicalBackup.damaged("an attachment without its end")
        }
        if kind == .end {
            guard stream.isFinished else { throw LogicalBackup.damaged("its end is not the stream's end") }
            self.ended = try LogicalBackup.decode(LogicalBackup.End.self, body)
            return
        }
        guard !stream.isFinished else { throw LogicalBackup.damaged("it ends before its end item") }
        try self.restore(kind, body, wrapping: wrapping)
    }
    private var started = false
    /// Whether the file is a vault moved from a data directory (`casevaultctl migrate`), which holds its
    /// session notes, rather than a backup, which never does.
    private var migration = false
    /// Whether a ledger item came: every record comes before.
    private var ledgerSeen = false

    private func restore(_ kind: LogicalBackup.Item, _ body: ArraySlice<UInt8>, wrapping: EpochKey)
        throws(CaseVaultError)
    {
        let (connection, logger, epoch) = (self.connection, self.storage.logger, self.epoch)
        switch kind {
        case .roster:
            let roster = try LogicalBackup.decode(LogicalBackup.Roster.self, body)
            try self.perform {
                try await connection.perform(
                    """
                    INSERT INTO casevault_roster (uid) SELECT unnest(\(roster.uids)) ON CONFLICT DO NOTHING
                    """, logger: logger)
            }
        case .caseRow:
            let row = try LogicalBackup.decode(LogicalBackup.CaseRow.self, body)
            let (id, header) = (try Self.bytes(row.id), try Self.bytes(row.headerID))
            try self.perform {
                try await connection.perform(
                    """
                    INSERT INTO casevault_cases (id, state, participant_count, mediators, supervisors, created_at,
                        closed_at, outcome, header_id)
                    VALUES (\(id), \(row.state), \(row.participantCount), \(row.mediators), \(row.supervisors),
                        \(row.createdAt), \(row.closedAt), \(row.outcome), \(header))
                    """, logger: logger)
            }
        case .record, .recordAndBlob:
            let (row, blob) = try LogicalBackup.record(kind, body)
            try self.restore(row, blob: blob, wrapping: wrapping)
        case .attachmentStart:
            let row = try LogicalBackup.decode(LogicalBackup.Attachment.self, body)
            guard let record = Hex.decode(row.recordID), record.count == 16, let upload = Hex.decode(row.upload),
                upload.count == 16, let last = self.lastRecord, last.id == record, row.size > 0
            else { throw LogicalBackup.damaged("an attachment that follows no record of its own") }
            self.lastRecord = nil
            self.attachment = (record, upload, row.size, 0, last.kept)
        case .attachmentChunk:
            guard var attachment = self.attachment, body.count > 8 else {
                throw LogicalBackup.damaged("an attachment's chunk out of place")
            }
            // The sealed bytes in order, each chunk where the last ended, none past the attachment's size.
            let (at, bytes) = (Int64(bigEndianBytes: body.prefix(8)), Array(body.dropFirst(8)))
            guard at == attachment.next, at + Int64(bytes.count) <= attachment.size else {
                throw LogicalBackup.damaged("an attachment's chunks out of order")
            }
            attachment.next = at + Int64(bytes.count)
            self.attachment = attachment
            // The attachment of a record shredded again: never written.
            guard attachment.kept else { return }
            let (record, upload) = (attachment.record, attachment.upload)
            try self.perform {
                try await connection.perform(
                    """
                    INSERT INTO casevault_attachment_chunks (record_id, upload, at, bytes)
                    VALUES (\(ByteBuffer(bytes: record)), \(ByteBuffer(bytes: upload)), \(at), \(ByteBuffer(bytes: bytes)))
                    """, logger: logger)
            }
        case .attachmentEnd:
            guard let attachment = self.attachment, attachment.next == attachment.size else {
                throw LogicalBackup.damaged("an attachment's end out of place")
            }
            self.attachment = nil
            self.counted.attachments += 1
            guard attachment.kept else { return }
            try self.perform {
                try await connection.perform(
                    """
                    INSERT INTO casevault_attachments (record_id, upload, size)
                    VALUES (\(ByteBuffer(bytes: attachment.record)), \(ByteBuffer(bytes: attachment.upload)),
                        \(attachment.size))
                    """, logger: logger)
            }
        case .hold:
            let row = try LogicalBackup.decode(LogicalBackup.Hold.self, body)
            let holdID: HoldID = try Self.identifier(row.id)
            let wrapped = try wrapping.rewrap(Array(row.wrappedKey), holdID: holdID, under: epoch)
            let caseID = try Self.bytes(row.caseID)
            try self.perform {
                try await connection.perform(
                    """
                    INSERT INTO casevault_holds (id, case_id, placed_at, placed_by_uid, placed_by_role, epoch,
                        wrapped_key, sealed_reason)
                    VALUES (\(ByteBuffer(bytes: holdID.bytes)), \(caseID), \(row.placedAt), \(row.placedByUID),
                        \(row.placedByRole), \(Int64(epoch.number)), \(ByteBuffer(bytes: wrapped)),
                        \(ByteBuffer(bytes: row.sealedReason)))
                    """, logger: logger)
            }
            self.counted.holds += 1
        case .shred:
            let row = try LogicalBackup.decode(LogicalBackup.Shred.self, body)
            let (id, caseID) = (try Self.bytes(row.id), try Self.bytes(row.caseID))
            try self.perform {
                try await connection.perform(
                    """
                    INSERT INTO casevault_shreds (id, case_id, type, shredded_at, epoch, method, authority_uid,
                        authority_role)
                    VALUES (\(id), \(caseID), \(row.type), \(row.shreddedAt), \(row.epoch), \(row.method),
                        \(row.authorityUID), \(row.authorityRole))
                    """, logger: logger)
            }
        case .ledger:
            self.ledgerSeen = true
            try self.keepLedger(try LogicalBackup.decode(LogicalBackup.Ledger.self, body), fromFile: true)
        case .certificate:
            let row = try LogicalBackup.decode(LogicalBackup.Certificate.self, body)
            let caseID = try Self.bytes(row.caseID)
            // Restored: an erasure it promises rests on the key files of the daemons that issued it, which
            // this vault's daemons cannot see, so this vault never certifies it complete (`certifyErasures`).
            try self.perform {
                try await connection.perform(
                    """
                    INSERT INTO casevault_certificates (id, case_id, issued_at, epoch, completes, document, restored)
                    VALUES (\(row.id), \(caseID), \(row.issuedAt), \(row.epoch), \(row.completes),
                        \(ByteBuffer(bytes: row.document)), true)
                    """, logger: logger)
            }
            self.counted.certificates += 1
        case .end:
            return
        }
    }

    /// Restores one record; one the ledger names is shredded again instead: its shred's row written, its
    /// key and blob never.
    private func restore(_ row: LogicalBackup.Record, blob: [UInt8], wrapping: EpochKey)
        throws(CaseVaultError)
    {
        let (connection, logger, epoch) = (self.connection, self.storage.logger, self.epoch)
        guard !self.ledgerSeen else { throw LogicalBackup.damaged("a record after its ledger") }
        let recordID: RecordID = try Self.identifier(row.id)
        guard let type = RecordType(rawValue: row.type), type != .sessionNote || self.migration else {
            throw LogicalBackup.damaged("a record of a type a backup does not hold")
        }
        let (id, caseID) = (ByteBuffer(bytes: recordID.bytes), try Self.bytes(row.caseID))
        self.counted.records += 1
        let kept = self.ledger[recordID] == nil
        self.lastRecord = (recordID.bytes, kept)
        guard kept else {
            let (time, order) = (self.time, self.order)
            try self.perform {
                try await connection.perform(
                    """
                    INSERT INTO casevault_shreds (id, case_id, type, shredded_at, epoch, method, authority_uid,
                        authority_role)
                    VALUES (\(id), \(caseID), \(row.type), \(time), \(Int64(epoch.number)), \(order.method.rawValue),
                        \(order.authority.uid.map { Int64($0) }), \(order.authority.role))
                    """, logger: logger)
            }
            // Nothing of it was written here: its erasure is complete once the epoch it would be under is
            // destroyed, as a shred's would be.
            let key = CaseID(bytes: Array(caseID.readableBytesView))
            self.shreddedAgain[key, default: ([], epoch.number)].records.append((recordID, type))
            return
        }
        let wrapped = try wrapping.rewrap(Array(row.wrappedKey), recordID: recordID, under: epoch)
        let supersedes = try row.supersedes.map { text throws(CaseVaultError) in try Self.bytes(text) }
        try self.perform {
            try await connection.perform(
                """
                INSERT INTO casevault_records (id, case_id, type, created_at, epoch, wrapped_key, blob, author,
                    supersedes)
                VALUES (\(id), \(caseID), \(row.type), \(row.createdAt), \(Int64(epoch.number)),
                    \(ByteBuffer(bytes: wrapped)), \(ByteBuffer(bytes: blob)), \(row.author), \(supersedes))
                """, logger: logger)
        }
    }

    /// Keeps `ledger`'s records in `casevault_ledger`, but those whose shred this vault holds.
    private func keepLedger(_ ledger: LogicalBackup.Ledger, fromFile: Bool = false) throws(CaseVaultError) {
        guard !ledger.records.isEmpty else { return }
        var parsed: [ByteBuffer] = []
        for entry in ledger.records {
            let id: RecordID = try Self.identifier(entry.id)
            parsed.append(ByteBuffer(bytes: id.bytes))
        }
        let (ids, times, connection, logger) = (
            parsed, ledger.records.map(\.shreddedAt), self.connection, self.storage.logger
        )
        try self.perform {
            // The file's own ledger names records it no longer holds: one that names a record it restored
            // contradicts itself.
            if fromFile {
                for try await held in try await connection.query(
                    "SELECT EXISTS (SELECT 1 FROM casevault_records WHERE id = ANY(\(ids)))", logger: logger
                ).decode(Bool.self) where held {
                    throw LogicalBackup.damaged("its ledger names a record it holds")
                }
            }
            try await connection.perform(
                """
                INSERT INTO casevault_ledger (id, shredded_at)
                SELECT l.id, l.at FROM unnest(\(ids)::bytea[], \(times)::bigint[]) AS l(id, at)
                WHERE NOT EXISTS (SELECT 1 FROM casevault_shreds s WHERE s.id = l.id)
                ON CONFLICT (id) DO NOTHING
                """, logger: logger)
        }
    }

    private static func identifier<Tag>(_ text: String) throws(CaseVaultError) -> Identifier<Tag> {
        do {
            return try Identifier<Tag>(text)
        } catch {
            throw LogicalBackup.damaged("an id in it is malformed")
        }
    }

    private static func bytes(_ text: String) throws(CaseVaultError) -> ByteBuffer {
        guard let bytes = Hex.decode(text), bytes.count == 16 else {
            throw LogicalBackup.damaged("an id in it is malformed")
        }
        return ByteBuffer(bytes: bytes)
    }
}

extension PostgresStorage {
    /// Begins a restore into this vault, which must hold nothing yet (`vault-not-empty` otherwise: no case,
    /// record, attachment or upload, shred, ledger entry, certificate or hold; a roster is joined): a
    /// transaction on a connection of its own, holding the filing lock alone until the restore ends, under
    /// the erase epoch new wraps use, whose key this daemon's file must hold. `ledger`: the shred ledger's
    /// records and times, exported from the vault the backup was taken of; those the backup holds are
    /// shredded again on `authority`'s order instead of restored.
    package func beginRestore(keys: BackupKeyFile, ledger: [RecordID: Int64], authority: Authority)
        throws(CaseVaultError) -> any BackupRestore
    {
        guard !self.closed.withLock({ $0 }) else { throw Self.closedError }
        let logger = self.logger
        // Read before the transaction takes the filing lock: a failure here leaves no session holding it.
        let held = try self.epochKeys.epochKeys()
        let connection = try self.checkOut()
        let number: UInt64
        do throws(CaseVaultError) {
            number = try Self.wait(closing: connection) { () async throws -> UInt64 in
                try await connection.perform(PostgresConnection.begin, logger: logger)
                try await connection.perform(
                    "SELECT pg_advisory_xact_lock(\(PostgresRecords.filingLock))", logger: logger)
                // Read after the lock's grant, as every write reads it: a restore into a vault a move
                // marked would be kept only here.
                try await PostgresSchema.refuseMoved(on: connection, logger: logger)
                var holds = true
                for try await value in try await connection.query(
                    """
                    SELECT EXISTS (SELECT 1 FROM casevault_cases) OR EXISTS (SELECT 1 FROM casevault_records)
                        OR EXISTS (SELECT 1 FROM casevault_attachments) OR EXISTS (SELECT 1 FROM casevault_uploads)
                        OR EXISTS (SELECT 1 FROM casevault_attachment_chunks)
                        OR EXISTS (SELECT 1 FROM casevault_shreds) OR EXISTS (SELECT 1 FROM casevault_ledger)
                        OR EXISTS (SELECT 1 FROM casevault_certificates) OR EXISTS (SELECT 1 FROM casevault_holds)
                    """, logger: logger
                ).decode(Bool.self) {
                    holds = value
                }
                guard !holds else {
                    throw CaseVaultError(
                        .vaultNotEmpty,
                        "a backup is restored only into a vault that holds nothing yet: this one holds cases, records, attachments or uploads, shreds or ledger entries, certificates or holds"
                    )
                }
                guard let epoch = try await EpochExchange.wrapEpoch(connection, logger: logger) else {
                    throw CaseVaultError(
                        .keyUnavailable, "no erase epoch is ready for new wraps yet: no daemon has turned to one")
                }
                return epoch
            }
        } catch {
            Self.discard(connection)
            throw error
        }
        guard let epoch = held.first(where: { $0.number == number }) else {
            Self.discard(connection)
            throw CaseVaultError(
                .keyUnavailable,
                "this daemon does not hold erase epoch \(number)'s key, which new wraps use: it has not received it yet"
            )
        }
        return PostgresRestore(
            storage: self, connection: connection, keys: keys, ledger: ledger,
            order: ShredOrder(method: .restoreLedger, authority: authority), epoch: epoch)
    }
}

internal import CaseVaultCore
internal import GRDB

extension Index {
    /// A record a backup keeps: its key slot and where its sealed blob lies.
    typealias BackupRecord = (id: RecordID, slot: Int64, location: Segments.Location)

    /// A backup's copy of the index (`VACUUM INTO` a file of its own), open while the backup reads the records
    /// it keeps, then finished and closed so that its file can go into the backup.
    struct BackupSnapshot {
        fileprivate let copy: DatabaseQueue
        /// The live records other than session notes as of the snapshot, in the order their blobs lie on disk.
        let kept: [BackupRecord]

        /// Takes out of the copy the records shredded since the snapshot (`taken`), compacts it and closes it.
        func finish(leavingOut taken: [RecordID]) throws(CaseVaultError) {
            do {
                try self.copy.writeWithoutTransaction { db in
                    for id in taken {
                        try db.execute(sql: "DELETE FROM records WHERE id = ?", arguments: [id.rawValue])
                    }
                    try db.execute(sql: "VACUUM")
                }
                try self.copy.close()
            } catch {
                throw Index.backupSnapshotFailure(error)
            }
        }
    }

    /// Copies the index as of one instant to `path` and deletes from the copy what a backup must not hold:
    /// records not live (being shredded) or session notes, the shred orders and the records removed under them
    /// still waiting for their certificates. Returns the copy, open, with
    /// the records it keeps.
    func backupSnapshot(to path: String) throws(CaseVaultError) -> BackupSnapshot {
        do {
            try self.snapshotInto(path)
            let copy = try DatabaseQueue(path: path)
            let kept: [BackupRecord] = try copy.writeWithoutTransaction { db in
                // temp_store: the VACUUM that compacts the copy builds it in memory, not in a temporary file.
                try db.execute(sql: "PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;")
                // Records removed but not yet certified go with their orders: the vault they came from
                // certifies them, and a restored copy must not certify them a second time.
                try db.execute(
                    sql: """
                        DELETE FROM records WHERE state <> 'live' OR type = 'session_note';
                        DELETE FROM shred_certifying;
                        DELETE FROM shred_certified;
                        DELETE FROM shred_order_list;
                        """
                )
                return try GRDB.Row.fetchAll(
                    db, sql: "SELECT id, slot, segment, offset, sealed_size FROM records ORDER BY segment, offset"
                )
                .map { row in
                    (
                        try RecordID(try row.decode(forColumn: "id") as String),
                        try row.decode(forColumn: "slot") as Int64,
                        Segments.Location(
                            segment: try row.decode(forColumn: "segment") as UInt32,
                            offset: try row.decode(forColumn: "offset"),
                            length: try row.decode(forColumn: "sealed_size"))
                    )
                }
            }
            return BackupSnapshot(copy: copy, kept: kept)
        } catch let error as CaseVaultError {
            throw error
        } catch {
            throw Self.backupSnapshotFailure(error)
        }
    }

    /// A failure of the backup's index snapshot, as the backup reports it.
    fileprivate static func backupSnapshotFailure(_ error: any Error) -> CaseVaultError {
        CaseVaultError(.storageFailure, "the index snapshot for the backup failed: \(error)")
    }
}

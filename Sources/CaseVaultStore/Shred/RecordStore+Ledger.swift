package import CaseVaultCore
internal import CaseVaultFiles
internal import CaseVaultSealing
internal import Logging

/// The shred ledger (`shred_ledger` in the index): every record shredded in this vault, and every record a
/// restore was told was shredded elsewhere. A restore re-applies it; its copy outside the data directory
/// (`ShredLedgerFile`) survives the loss of the data directory.
extension RecordStore {
    /// The shred ledger: every shredded record with its case, type and time, oldest first.
    package func shredLedger() throws(CaseVaultError) -> [ShredLedgerEntry] {
        try self.index.read { db in try Index.ledgerEntries(db) }
    }

    /// The ledger's ids and times, for its export.
    package func shreddedRecords() throws(CaseVaultError) -> [(id: RecordID, shreddedAt: Int64)] {
        // The index always holds a time.
        try self.shredLedger().map { ($0.recordID, $0.shreddedAt ?? 0) }
    }

    /// The shred ledger of the vault in `dataDirectory`, read without opening the store (read-only): what
    /// `casevaultctl restore --live-data` re-applies.
    package static func shredLedger(ofDataDirectory dataDirectory: String) throws(CaseVaultError) -> [ShredLedgerEntry]
    {
        let path = dataDirectory + "/index.sqlite"
        guard DataDirectory.exists(path) else {
            throw CaseVaultError(.notFound, "no vault index at \(path)")
        }
        do {
            return try Index.ledgerEntries(readOnlyAt: path)
        } catch let error as CaseVaultError {
            throw error
        } catch {
            throw CaseVaultError(.storageFailure, "the live vault's shred ledger could not be read: \(error)")
        }
    }

    /// Re-applies `ledger` to a vault just restored, as the only shredder: shreds again every record it names
    /// that the backup held (method `restore_ledger`, whatever hold the backup knew), then enters every
    /// entry in this vault's ledger (`-` for a case or type the source did not give, the restore's time for
    /// a time it did not give). Without the second step a record shredded elsewhere and absent from this
    /// backup would be unknown here, and a later restore of an older backup that holds it, reading this
    /// vault's ledger, would bring it back. Returns how many records were shredded again and how many
    /// entries the ledger gained.
    func reapplyLedger(_ ledger: [ShredLedgerEntry]) throws(CaseVaultError) -> (reshredded: Int, added: Int) {
        guard !ledger.isEmpty else { return (0, 0) }
        return try self.asShredder { () throws(CaseVaultError) -> (reshredded: Int, added: Int) in
            let before = try self.index.read { db in try Index.ledgerCount(db) }
            let (rows, _) = try self.runShred(
                from: .ordered, order: ShredOrder(method: .restoreLedger, authority: .daemon)
            ) { () throws(CaseVaultError) in
                try self.index.read { db in
                    try Index.rows(db, ids: ledger.map(\.recordID.rawValue)).values.filter { $0.state == .live }
                }.sorted { $0.metadata.id < $1.metadata.id }
            }
            let now = self.now()
            let after = try self.asWriter { () throws(CaseVaultError) -> Int in
                try self.index.write { db in
                    try Index.enterInLedger(db, ledger, defaultTime: now)
                    return try Index.ledgerCount(db)
                }
            }
            return (rows.count, after - before)
        }
    }

    // MARK: The copy outside the data directory

    /// The ledger copy this store keeps (`StoreConfiguration.shredLedgerCopy`), or `nil` for none. A copy
    /// inside the data directory is refused: it would be lost with the data it stands in for.
    func shredLedgerCopy() throws(CaseVaultError) -> ShredLedgerFile? {
        guard let url = self.configuration.shredLedgerCopy else { return nil }
        guard RootKeyFile.isOutside(url.path, dataDirectory: self.directory.path) else {
            throw CaseVaultError(
                .invalidConfiguration,
                "the shred ledger copy must live outside the data directory, which is what a restore replaces",
                field: "backup.ledger_file"
            )
        }
        return ShredLedgerFile(path: url.path)
    }

    /// Rewrites the ledger copy, if the store keeps one, as the union of the copy and the index's ledger:
    /// at open, at each backup and at each sweep. Lines of the copy that do not check out under this
    /// vault's root key are dropped, and said so in an error line of the log.
    package func refreshShredLedgerCopy() throws(CaseVaultError) {
        guard let copy = try self.shredLedgerCopy() else { return }
        let dropped = try copy.rewrite(sealing: self.sealing) { () throws(CaseVaultError) in try self.shredLedger() }
        if dropped > 0 {
            self.logger.error(
                "lines of the shred ledger copy did not check out (altered, or another vault's) and were dropped",
                metadata: ["ledger.lines_dropped": "\(dropped)"]
            )
        }
    }

    /// At open: the ledger copy catches up with the index (after a restore, or after an append that
    /// failed). A failure is logged as an error and the store opens all the same: a shred is no less done
    /// without the copy, and backups and sweeps, which rewrite it, fail until it can be written.
    func catchUpShredLedgerCopy() {
        do throws(CaseVaultError) {
            // What the copy says was shredded stays shredded here, whatever the data directory holds: a
            // shred made while a restore ran is in the copy, not in the restored index.
            if let copy = try self.shredLedgerCopy(), let entries = try copy.entries(sealing: self.sealing) {
                let (reshredded, _) = try self.reapplyLedger(entries)
                if reshredded > 0 {
                    self.logger.notice(
                        "records the ledger copy names as shredded were shredded again",
                        metadata: ["records.count": "\(reshredded)"])
                }
            }
            try self.refreshShredLedgerCopy()
        } catch {
            self.logger.error(
                "the shred ledger copy could not be written",
                metadata: ["error.code": "\(error.code.rawValue)", "error.detail": "\(error.message)"]
            )
        }
    }

    /// Adds records whose shred was just committed to the ledger copy, before the shred returns. A failure
    /// cannot undo the shred: it is logged as an error, and the next open, backup or sweep adds the entries.
    func appendToShredLedgerCopy(_ rows: [Index.Row], shreddedAt time: Int64) {
        do throws(CaseVaultError) {
            guard let copy = try self.shredLedgerCopy() else { return }
            let entries = rows.map { row in
                ShredLedgerEntry(
                    recordID: row.metadata.id, caseID: row.metadata.caseID, type: row.metadata.type, shreddedAt: time
                )
            }
            try copy.append(entries, sealing: self.sealing)
        } catch {
            self.logger.error(
                "shredded records could not be added to the shred ledger copy; the next open, backup or sweep adds them",
                metadata: [
                    "records.count": "\(rows.count)", "error.code": "\(error.code.rawValue)",
                    "error.detail": "\(error.message)",
                ]
            )
        }
    }
}

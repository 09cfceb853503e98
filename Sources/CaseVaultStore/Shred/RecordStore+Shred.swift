package import CaseVaultCore
internal import CaseVaultCrypto
internal import Foundation
internal import Logging
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

extension RecordStore {
    /// Shreds a record by the protocol of docs/ARCHITECTURE.md: once this returns, its key slot and ciphertext are
    /// overwritten, nothing decrypts it, and reads answer `shredded`. Throws `not-found` for an unknown id
    /// and `shredded` for one already shredded.
    package func shred(_ id: RecordID, order: ShredOrder = ShredOrder(method: .request, authority: .daemon))
        throws(CaseVaultError)
    {
        _ = try self.shred([id], order: order)
    }

    /// Shreds several records with one flush per step. Unknown or already shredded ids, and records a
    /// legal hold covers (`held`), throw before anything changes. Returns the metadata of the records shredded.
    @discardableResult
    package func shred(
        _ ids: [RecordID],
        order: ShredOrder = ShredOrder(method: .request, authority: .daemon)
    ) throws(CaseVaultError) -> [RecordMetadata] {
        try self.asWriter { () throws(CaseVaultError) in
            // First what a failure left half done: a repeated shred of the same record finishes it.
            self.retryPendingShreds()
            var rows: [Index.Row] = []
            for id in Set(ids).sorted() {
                rows.append(try self.liveRow(id))
            }
            try self.refuseHeld(rows)
            try self.runShred(rows, from: .ordered, order: order)
            self.logger.info("records shredded", metadata: ["records.count": "\(rows.count)"])
            return rows.map(\.metadata)
        }
    }

    /// Runs the shred protocol from `start` on. The caller holds the writer role.
    /// `order` is recorded with the mark; a resumed shred finds it there. Returns the certificates issued.
    @discardableResult
    func runShred(_ rows: [Index.Row], from start: ShredProgress, order: ShredOrder? = nil) throws(CaseVaultError)
        -> Int
    {
        guard !rows.isEmpty else { return 0 }
        var certificates = 0
        var progress = start
        while let step = progress.next {
            switch step {
            case .mark:
                try self.index.write { db in
                    try Index.markShredding(db, rows.map(\.metadata.id), order: order)
                }
                self.observe(.shredAfterMark)
            case .overwriteKeySlots:
                // In file order, so that the flush writes runs of blocks rather than scattered ones.
                for slot in rows.map(\.slot).sorted() {
                    try self.slots.scrub(slot)
                }
                try self.slots.flush()
                self.observe(.shredAfterSlotOverwrite)
            case .destroyCiphertext:
                let stream = OverwriteStream()
                for location in rows.map(\.location).sorted(by: { ($0.segment, $0.offset) < ($1.segment, $1.offset) }) {
                    try self.segments.overwrite(location, from: stream)
                }
                try self.segments.flush(Set(rows.map(\.location.segment)))
                try self.removeAttachments(rows.map(\.metadata.id))
                self.observe(.shredAfterCiphertextOverwrite)
            case .removeFromIndex:
                let shreddedAt = self.now()
                try self.index.write { db in
                    certificates = try Index.issueCertificates(
                        db, for: rows.map(\.metadata), at: shreddedAt, signedWith: self.sealing.signCertificate)
                    try Index.removeShredded(db, rows.map(\.metadata.id), shreddedAt: shreddedAt)
                    // Orders no record still waits on.
                    try Index.deleteFinishedShredOrders(db)
                }
                self.writer.withLock { state in
                    state.slots.free.append(contentsOf: rows.map(\.slot))
                }
                // Before the shred returns, so that an acknowledged shred survives the loss of the data directory.
                self.appendToShredLedgerCopy(rows, shreddedAt: shreddedAt)
                // The rows are gone from the database's pages; their images in the WAL go too. The shred is
                // done either way: a WAL left behind is truncated by the next shred, close or open.
                do {
                    try self.index.truncateWAL()
                } catch {
                    self.logger.warning(
                        "the index's WAL could not be truncated after a shred",
                        metadata: ["error.code": "\(error.code.rawValue)"])
                }
                self.observe(.shredAfterIndexRemoval)
            }
            progress.finished(step)
        }
        return certificates
    }
}

extension RecordStore {
    /// Finishes every shred a failure left marked (a write or flush that failed after the mark): before
    /// any new shred, so that a failed one is retried while the daemon runs, not only at the next open.
    /// Its overwrites are written again, never trusted to a page cache a failed flush may have dropped.
    /// Returns the certificates it issued. Recovery at open calls it and refuses to open if it fails.
    @discardableResult
    func finishPendingShreds() throws(CaseVaultError) -> Int {
        let pending = try self.index.read { db in try Index.shreddingRows(db) }
        guard !pending.isEmpty else { return 0 }
        self.logger.notice(
            "finishing shreds a failure or a crash interrupted", metadata: ["records.count": "\(pending.count)"])
        return try self.runShred(pending, from: .resumed)
    }

    /// `finishPendingShreds` before a shred, a sweep batch or a final agreement's destruction, under the
    /// writer role. A failure is logged and left for the next try: one record whose shred keeps failing
    /// must not stop every other erasure. Returns the certificates it issued.
    @discardableResult
    func retryPendingShreds() -> Int {
        do {
            return try self.finishPendingShreds()
        } catch {
            self.logger.error(
                "a shred a failure interrupted could not be finished yet",
                metadata: ["error.code": "\(error.code.rawValue)"])
            return 0
        }
    }
}

// MARK: Destruction certificates

extension RecordStore {
    /// The vault's certificate public key (Ed25519, 32 bytes).
    package var certificatePublicKey: [UInt8] { self.sealing.certificatePublicKey }

    /// Signs the audit log's checkpoints under the audit subkey (derived from the root key).
    package var auditSigner: AuditSigner { self.sealing.auditSigner }

    /// The data directory's audit folder (`audit/`), created 0700 with the store.
    package var auditDirectory: String { self.directory.auditPath }

    /// Certificate documents, oldest first; of one case when `caseID` is given.
    package func certificates(caseID: CaseID? = nil) throws(CaseVaultError) -> [[UInt8]] {
        try self.index.read { db in try Index.certificateDocuments(db, caseID: caseID) }
    }

    /// One certificate document; `not-found` for an unknown id.
    package func certificate(_ id: String) throws(CaseVaultError) -> [UInt8] {
        guard
            let document = try self.index.lookup({ db in try Index.certificateDocument(db, id: id) })
        else {
            throw CaseVaultError(.notFound, "no certificate has this id; list them with GET /v1/certificates")
        }
        return document
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto
package import CaseVaultSealing
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
        try self.asShredder { () throws(CaseVaultError) in
            // First what a failure left half done: a repeated shred of the same record finishes it.
            self.retryPendingShreds()
            let (rows, _) = try self.runShred(from: .ordered, order: order) { () throws(CaseVaultError) in
                var rows: [Index.Row] = []
                for id in Set(ids).sorted() {
                    rows.append(try self.liveRow(id, fromIndex: true))
                }
                try self.refuseHeld(rows)
                return rows
            }
            self.logger.info("records shredded", metadata: ["records.count": "\(rows.count)"])
            return rows.map(\.metadata)
        }
    }

    /// How many records one writer section of a shred handles: a sweep's batch of thousands would otherwise
    /// hold the writer role, and the puts queued behind it, for the whole of its overwrites and deletes.
    /// Until its turn is over (`shredTurn`), a shred goes on from a section to the next.
    package static let shredSection = 500

    /// Runs `body` as the only shredder. Shreds (on request, by the sweep, by a final agreement, by a
    /// restored ledger, by recovery) run one at a time, each from its first step to its last, and whoever
    /// calls `runShred`, `finishPendingShreds` or `retryPendingShreds` holds this: otherwise one shred could
    /// finish the records another has marked and is still working on, and free their key slots for new puts
    /// before the other's next overwrite. Taken before the writer role, never while holding it.
    func asShredder<Result>(_ body: () throws(CaseVaultError) -> Result) throws(CaseVaultError) -> Result {
        self.shredder.lock()
        defer { self.shredder.unlock() }
        return try body()
    }

    /// Runs the shred protocol from `start` on, for the rows `select` gives, as the only shredder
    /// (`asShredder`). `select` runs as the only writer in the section that marks what it gives, so that
    /// what it checks (the rows are live, no hold covers them) still holds when they are marked.
    @discardableResult
    func runShred(
        from start: ShredProgress,
        order: ShredOrder? = nil,
        _ select: () throws(CaseVaultError) -> [Index.Row]
    ) throws(CaseVaultError) -> (rows: [Index.Row], certificates: Int) {
        try self.runShred(
            from: start, order: order.map { .new($0) }, sections: { () throws(CaseVaultError) in (try select(), true) }
        )
    }

    /// Whom a shred marks its records for: a new order row written with its first marks, or an order row
    /// already written (a sweep's, open across its batches).
    enum OrderRow {
        case new(ShredOrder)
        case existing(Int64)
    }

    /// Runs the shred protocol from `start` on, as the only shredder (`asShredder`). Each step runs as the
    /// only writer, in sections of about `shredSection` records, so that queued puts commit between
    /// sections once they have waited `shredTurn`: between two, the records stand marked in the index,
    /// which is what a crash there leaves too, and nothing but a shred touches a marked record's slot or
    /// blob.
    ///
    /// `select` gives the records to shred a section at a time, and says which section is the last; each
    /// call runs as the only writer in the section that marks what it gives, so that what it checks (the
    /// rows are live, no hold covers them) still holds when they are marked. A resumed shred (no mark)
    /// calls it once. `order` is recorded with the mark; a resumed shred finds it there. Returns the rows
    /// shredded and the certificates issued: those of the orders its last removal finished.
    ///
    /// The index's WAL is truncated after the removal (`truncateWALAfterShred`) unless `truncatingWAL` is
    /// false: a sweep's batches, whose sweep truncates it once when its order closes, after its certificates.
    @discardableResult
    func runShred(
        from start: ShredProgress,
        order: OrderRow? = nil,
        truncatingWAL: Bool = true,
        sections select: () throws(CaseVaultError) -> (rows: [Index.Row], last: Bool)
    ) throws(CaseVaultError) -> (rows: [Index.Row], certificates: Int) {
        var rows: [Index.Row]?
        var certificates = 0
        var progress = start
        while let step = progress.next {
            switch step {
            case .mark:
                var marked: [Index.Row] = []
                var last = false
                // One order row for the whole shred, written with its first marks unless it exists: its
                // records share it, and a case gets one certificate.
                var orderID: Int64?
                if case .existing(let id) = order { orderID = id }
                while !last {
                    try self.asShredWriter { () throws(CaseVaultError) in
                        // A commit per section, and sections on until the writer's turn is over.
                        repeat {
                            let next = try select()
                            last = next.last
                            if !next.rows.isEmpty {
                                try self.settle(ifTouching: next.rows)
                                orderID = try self.liveRows.changing { () throws(CaseVaultError) in
                                    try self.index.write { db in
                                        guard orderID == nil, case .new(let order) = order else {
                                            try Index.markShredding(db, next.rows, orderID: orderID)
                                            return orderID
                                        }
                                        let created = try Index.insertShredOrder(db, order, open: false)
                                        try Index.markShredding(db, next.rows, orderID: created)
                                        return created
                                    }
                                }
                                marked += next.rows
                            }
                        } while !last && !self.shredTurnIsOver
                        if last, !marked.isEmpty { self.observe(.shredAfterMark) }
                    }
                }
                rows = marked
            case .overwriteKeySlots:
                if rows == nil {
                    // A resumed shred: the records found marked.
                    rows = try self.asShredWriter { () throws(CaseVaultError) in
                        let found = try select().rows
                        try self.settle(ifTouching: found)
                        return found
                    }
                }
                // In file order, so that the flush writes runs of blocks rather than scattered ones.
                var slots = (rows ?? []).map(\.slot).sorted()[...]
                while !slots.isEmpty {
                    try self.asShredWriter { () throws(CaseVaultError) in
                        try self.whileShredTurnLasts(&slots) { (section) throws(CaseVaultError) in
                            for slot in section {
                                try self.slots.scrub(slot)
                            }
                        }
                        // Flushed before a put may flush the same file (see the blobs' overwrite below).
                        try self.slots.flush()
                        if slots.isEmpty { self.observe(.shredAfterSlotOverwrite) }
                    }
                }
            case .destroyCiphertext:
                let rows = rows ?? []
                let stream = OverwriteStream()
                // The whole frame: its head names the record and holds a copy of the wrapped key.
                var locations = Segments.Location.runs(rows.map(\.region), maxRegions: Self.shredSection)[...]
                while !locations.isEmpty {
                    try self.asShredWriter { () throws(CaseVaultError) in
                        var written = Set<UInt32>()
                        // A section counts the records its runs cover, so it writes what it did run by run.
                        try self.whileShredTurnLasts(&locations, weight: \.regions) {
                            (section) throws(CaseVaultError) in
                            for (run, _) in section {
                                try self.segments.overwrite(run, from: stream)
                            }
                            written.formUnion(section.map(\.run.segment))
                        }
                        // Flushed before a put may flush the same file: a write-back error of these overwrites
                        // must fail this shred, not be reported to the put and then lost to the shred.
                        try self.segments.flush(written)
                        if locations.isEmpty {
                            try self.removeAttachments(rows.map(\.metadata.id))
                            self.observe(.shredAfterCiphertextOverwrite)
                        }
                    }
                }
            case .removeFromIndex:
                // In the order the records were selected (a sweep's and a resumed shred's: the index's, so that
                // a section rewrites neighbouring pages rather than one page per record); certificates wait
                // for the order to finish (`certifyFinishedOrders`), so a case still gets one.
                var remaining = (rows ?? [])[...]
                while !remaining.isEmpty {
                    try self.asShredWriter { () throws(CaseVaultError) in
                        try self.removeShredded(&remaining)
                    }
                }
                certificates += try self.certifyFinishedOrders()
                if truncatingWAL { self.truncateWALAfterShred() }
                try self.asShredWriter { () throws(CaseVaultError) in self.observe(.shredAfterIndexRemoval) }
            }
            if rows?.isEmpty ?? true { return ([], 0) }
            progress.finished(step)
        }
        return (rows ?? [], certificates)
    }

    /// Truncates the index's WAL after a shred's removal (or a sweep's last certificates): the removed rows are gone
    /// from the database's pages (`secure_delete`), and their images in the WAL go too. The WAL is copied into the
    /// database off the writer first (`Index.checkpointBeforeTruncating`), so that the truncation, as the only writer,
    /// which every put waits for, copies only what came since. Called as the only shredder, not as the writer. The
    /// shred is done either way: a WAL left behind (a failure is logged; a store closed meanwhile truncated it as it
    /// closed) is truncated by the next shred, close or open.
    func truncateWALAfterShred() {
        self.index.checkpointBeforeTruncating()
        try? self.asShredWriter { () throws(CaseVaultError) in self.truncateWALAsWriter() }
    }

    private func truncateWALAsWriter() {
        do throws(CaseVaultError) {
            try self.index.truncateWAL()
        } catch {
            self.logger.warning(
                "the index's WAL could not be truncated after a shred",
                metadata: ["error.code": "\(error.code.rawValue)"])
        }
    }

    /// How long a put (or another writer) may wait for a shred's sections before the shred lets it in: a shred
    /// goes on from section to section while none has waited this long, and ends its turn after the section
    /// in hand once one has. Letting each put in at once made a sweep of 100,000 records with four writers
    /// putting take twice as long as the sweep alone: over a thousand batches of one to four puts came
    /// between its sections, each with its own flush. A put then waits this, the section in hand, and what
    /// ends the turn (a flush, the removal's commit, a checkpoint of the index's WAL when one falls due):
    /// 64-94 ms at most while a sweep of 100,000 records ran here (by the hour), a measured figure and not a
    /// bound.
    static let shredTurn: UInt64 = 20_000_000

    /// Whether a put or another writer has waited `shredTurn` for the shred that leads, or the store is
    /// closing (its close waits for the writer in flight).
    var shredTurnIsOver: Bool {
        self.isClosed || self.writes.hasWaited(atLeast: Self.shredTurn)
    }

    /// Hands `items` to `body` a section (items of at most `size` in all, by `weight`; at least one item) at
    /// a time, taking each off `items`, and goes on to the next section until the shred's turn is over
    /// (`shredTurnIsOver`): a put that comes waits until it has waited `shredTurn`, then for the section in
    /// hand and what ends the turn.
    private func whileShredTurnLasts<Item, Failure: Error>(
        _ items: inout ArraySlice<Item>, size: Int = RecordStore.shredSection, weight: (Item) -> Int = { _ in 1 },
        _ body: (ArraySlice<Item>) throws(Failure) -> Void
    ) throws(Failure) {
        repeat {
            var count = 0
            var total = 0
            for item in items {
                total += weight(item)
                if count > 0 && total > size { break }
                count += 1
            }
            let section = items.prefix(count)
            items = items.dropFirst(section.count)
            try body(section)
            self.observe(.shredAfterSection)
        } while !items.isEmpty && !self.shredTurnIsOver
    }

    /// The last step, as the only writer, for a section of `rows` and the next ones until its turn is over
    /// (one commit for them all): their rows deleted, their slots freed, the ledger copy told; they wait to be
    /// certified (`certifyFinishedOrders`). Takes what it removed off `rows`.
    private func removeShredded(_ rows: inout ArraySlice<Index.Row>) throws(CaseVaultError) {
        let shreddedAt = self.now()
        var rest = rows
        var removed: [Index.Row] = []
        // The rows were marked, so no get kept them since; the cache is shut for the removal all the same.
        try self.liveRows.changing { () throws(CaseVaultError) in
            try self.index.write { db in
                (rest, removed) = (rows, [])
                try self.whileShredTurnLasts(&rest) { section in
                    try Index.removeShredded(db, Array(section), shreddedAt: shreddedAt)
                    removed += section
                }
            }
        }
        rows = rest
        self.writer.withLock { state in
            state.slots.free.append(contentsOf: removed.map(\.slot))
        }
        // Before the shred returns, so that an acknowledged shred survives the loss of the data directory.
        self.appendToShredLedgerCopy(removed, shreddedAt: shreddedAt)
    }

    /// How many sections of certificates one commit holds at most: the first put that comes waits for that
    /// commit, so its size stays bounded (about 10,000 records' worth).
    static let certificationSectionsPerCommit = 20

    /// Certifies the finished shred orders (`Index.certify`), as the only writer in sections of about
    /// `shredSection` records' worth (`StoreConfiguration.certificationSection`: records certified, or an
    /// order's rows removed from the index once all its cases are), going on until the shred's turn is over,
    /// up to `certificationSectionsPerCommit` in one commit: a sweep's hundred thousand records make a
    /// thousand certificates, which one section would make every put wait for, and a commit per section two
    /// hundred flushes of the index. The records waiting are read once (`Index.certificationPlan`), outside
    /// the write transactions: every caller is the only shredder (`asShredder`), so nothing adds to the
    /// finished orders or takes from them meanwhile. Returns how many certificates were issued.
    @discardableResult
    func certifyFinishedOrders() throws(CaseVaultError) -> Int {
        var plan = try self.index.read { db in try Index.certificationPlan(db) }
        var issued = 0
        while !plan.isEmpty {
            try self.asShredWriter { () throws(CaseVaultError) in
                issued += try self.index.write { db in
                    var (certificates, sections) = (0, 0)
                    plan.beginCommit()
                    repeat {
                        certificates += try Index.certify(
                            db, &plan, at: self.now(), signedWith: self.sealing.signCertificate,
                            limit: self.configuration.certificationSection)
                        sections += 1
                    } while !plan.isEmpty && !plan.commitDue && sections < Self.certificationSectionsPerCommit
                        && !self.shredTurnIsOver
                    return certificates
                }
            }
            self.observe(.certifyAfterCommit)
        }
        return issued
    }
}

extension RecordStore {
    /// Finishes every shred a failure left marked (a write or flush that failed after the mark): before
    /// any new shred, so that a failed one is retried while the daemon runs, not only at the next open.
    /// Its overwrites are written again, never trusted to a page cache a failed flush may have dropped.
    /// Returns the certificates it issued. Recovery at open calls it and refuses to open if it fails.
    @discardableResult
    func finishPendingShreds() throws(CaseVaultError) -> Int {
        let finished = try self.runShred(from: .resumed) { () throws(CaseVaultError) in
            let pending = try self.index.read { db in try Index.shreddingRows(db) }
            if !pending.isEmpty {
                self.logger.notice(
                    "finishing shreds a failure or a crash interrupted", metadata: ["records.count": "\(pending.count)"]
                )
            }
            return pending
        }
        // With nothing left marked, the certificates a failure held back (an order finished since, or a
        // certification that failed) are issued here; a shred that finished records issued them itself.
        guard finished.rows.isEmpty, try self.index.read({ db in try Index.awaitsCertificates(db) }) else {
            return finished.certificates
        }
        // The rows it deletes from `shred_certifying` (a sweep's that a crash or a failure stopped, say) go
        // from the WAL too.
        defer { self.truncateWALAfterShred() }
        return try self.certifyFinishedOrders()
    }

    /// `finishPendingShreds` before a shred, a sweep batch or a final agreement's destruction, as the only
    /// shredder. A failure is logged and left for the next try: one record whose shred keeps failing
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

    /// `not-on-this-backend`: a vault kept in a data directory has one daemon, and its shreds overwrite in
    /// place; no other daemon's key file holds anything back.
    package func forgetDaemon(_ name: DaemonName) throws(CaseVaultError) -> [UInt64] {
        throw CaseVaultError(
            .notOnThisBackend,
            "a vault kept in a data directory has one daemon and no erase epochs: there is no other daemon to forget")
    }

    /// `not-on-this-backend`: a vault kept in a data directory has no erase epochs (`rotate` rotates its
    /// key-encryption key).
    package func rotateErasureEpochs() throws(CaseVaultError) -> ErasureRotation {
        throw CaseVaultError(
            .notOnThisBackend, "a vault kept in a data directory has no erase epochs: its shreds overwrite in place")
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
package import CaseVaultSealing
internal import Foundation
internal import Logging
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

// Filing sealed records: committed in groups with one flush per file. The content was sealed by the
// sealing layer (`Vault`) on the caller's thread, in parallel with other callers.
extension RecordStore {
    final class PendingPut {
        let metadata: RecordMetadata
        let record: SealedRecord
        let effects: FilingEffects
        /// `SegmentFrame.blobDigest` of the blob, computed on the caller's thread.
        let blobDigest: [UInt8]

        /// A put of `record` filed at `createdAt`.
        init(_ record: SealedRecord, effects: FilingEffects, createdAt: Int64) {
            self.metadata = RecordMetadata(
                id: record.id,
                caseID: record.caseID,
                type: record.type,
                createdAt: createdAt,
                author: record.author,
                supersedes: record.supersedes,
                sealedSize: record.blob.count
            )
            self.record = record
            self.effects = effects
            self.blobDigest = SegmentFrame.blobDigest(record.blob)
        }
    }

    /// Files a sealed record durably with `effects` (the storage protocol's `commit`): when this returns,
    /// the record survives a crash.
    package func commit(_ record: SealedRecord, effects: FilingEffects) throws(CaseVaultError) -> RecordMetadata {
        try self.commit(record, effects: effects, createdAt: self.now())
    }

    /// Files a sealed record as `commit(_:effects:)` does, with the filing time it was given: a record
    /// moved from another storage keeps its own (`restoreLogical`).
    func commit(_ record: SealedRecord, effects: FilingEffects, createdAt: Int64) throws(CaseVaultError)
        -> RecordMetadata
    {
        // Only placing the blob and the slot, the flush and the index commit are batched.
        let pending = PendingPut(record, effects: effects, createdAt: createdAt)
        return try self.writes.submit(pending, prepare: { self.prepare($0, drain: $1) }, finish: { self.finish($0) })
            .get()
    }

    /// A put batch between its two stages: failed already, or flushed and waiting for its index commit.
    enum StagedBatch {
        case done([Result<RecordMetadata, CaseVaultError>])
        case flushed(FlushedBatch)
    }

    /// What a batch's index commit needs from its first stage.
    struct FlushedBatch {
        let batch: [PendingPut]
        let frames: [(slot: Int64, location: Segments.Location)]
        let rows: [Index.PutRow]
        let after: WriterState
        let settling: Bool
        /// The batch failures counted when it began (`BatchFailures`): it commits only if none came since.
        let failures: UInt64
        var clock: BatchPhases.Clock
    }

    /// Failed index commits of put batches, and how many of them the writer's state has been reloaded
    /// since: a batch that prepared while an earlier one was still committing placed its frames after that
    /// one's, on the writer's state as it stood, so it fails too when that one fails, and the next batch to
    /// lead reloads the state once every batch before it has finished.
    struct BatchFailures {
        var failed: UInt64 = 0
        var reloaded: UInt64 = 0
    }

    /// A put batch's first stage, as the only writer: one frame per record (`SegmentFrame`: the record's row
    /// and wrapped key beside its blob) appended to the segment, and one device flush, the segment's, for
    /// all of them. The key slots are written without a flush of their own: recovery rebuilds them, and the
    /// index rows, from the frames past the settled mark (`replayUnsettledFrames`). A batch with filing
    /// effects, or one that ends far past the mark, flushes them as well and settles in its commit.
    /// `drain` waits until every batch before this one has committed (or failed).
    func prepare(_ batch: [PendingPut], drain: () -> Void) -> StagedBatch {
        // A batch that leads after `close` began writes nothing: its keys may be wiped by now, and a slot
        // wrapped under a wiped key would open for anyone.
        do throws(CaseVaultError) {
            try self.refuseIfClosed()
        } catch {
            return .done(batch.map { _ in .failure(error) })
        }
        // After a failed commit, the state batches were placed on is read again from the index, once no
        // batch before this one is still committing. A commit that fails after this count was taken fails
        // this batch too.
        let (failures, reloaded) = self.batchFailures.withLock { ($0.failed, $0.reloaded) }
        if failures != reloaded {
            drain()
            do throws(CaseVaultError) {
                try self.reloadAfterFailedBatches()
            } catch {
                return .done(batch.map { _ in .failure(error) })
            }
        }
        var clock = BatchPhases.Clock()
        let before = self.writer.withLock { $0 }
        // A rotation changes the epoch only as the only writer, so it holds for the whole batch.
        let epoch = self.currentEpoch
        let frames: [(bytes: [UInt8], head: Int, slot: Int64, wrappedKey: [UInt8])]
        do throws(CaseVaultError) {
            let slots = try self.takeUnownedSlots(batch.count)
            clock.end(\.slotsNanoseconds)
            frames = try zip(batch, slots).map { (put, slot) throws(CaseVaultError) in
                let wrappedKey = try put.record.wrappedKey(slot: slot, epoch: epoch)
                let frame = SegmentFrame(
                    metadata: put.metadata, participant: put.record.sealedParticipant, slot: slot,
                    wrappedKey: wrappedKey, replayable: put.effects.isEmpty)
                let (bytes, head) = frame.encode(blob: put.record.blob, blobDigest: put.blobDigest)
                return (bytes, head, slot, wrappedKey)
            }
        } catch {
            // Nothing was placed: the slots taken go back (the batches before this one change neither the
            // slots nor the cursor).
            self.writer.withLock { $0.restorePlacement(before) }
            return .done(batch.map { _ in .failure(error) })
        }
        clock.end(\.framesNanoseconds)
        let placed = self.writer.withLock { state in
            frames.map { frame in state.cursor.reserve(frame.bytes.count, maxBytes: self.segments.maxBytes) }
        }
        let after = self.writer.withLock { $0 }
        let settling = !batch.allSatisfy(\.effects.isEmpty) || self.isFarFromSettled(after)
        do throws(CaseVaultError) {
            for (frame, place) in zip(frames, placed) {
                try self.segments.write(frame.bytes, at: place)
                self.observe(.putAfterFrameWrite)
                try self.slots.write(frame.slot, frame.wrappedKey)
            }
            clock.end(\.writesNanoseconds)
            // What the audit log wrote before this point (the batch's request entries among it) is written
            // back first, and made durable by the segment's device flush. The frames' pages are sent to
            // the device while the log's are, rather than after them: a batch that carries the log then
            // waits for one write to the device before the flush, not two in turn. A write-back that cannot
            // be started fails the batch; an error in the writing itself is the flush's to report.
            let rider = self.rider.withLock { $0 }
            let ride = rider?.prepareRide()
            let written = Set(placed.map(\.segment))
            if ride != nil {
                try self.segments.startWriteBack(written)
            }
            let boarded = ride.map { rider?.board($0) ?? false } ?? false
            try self.segments.flush(written)
            if let rider, let ride, boarded { rider.rode(ride) }
            if settling {
                try self.slots.flush()
            }
            self.observe(.putAfterFlush)
            clock.end(\.flushNanoseconds)
        } catch {
            // Placed after the batches still committing: their commits come first, then the state is read
            // again from the index.
            drain()
            let answer = self.undo(zip(frames, placed).map { ($0.slot, $1) }) ? error : Self.mayBeKept(error)
            self.reloadWriterState(orRestore: before)
            self.logBatchFailure(batch.count, error)
            return .done(batch.map { _ in .failure(answer) })
        }
        let rows = zip(zip(batch, frames), placed).map { (pair, place) in
            Index.PutRow(
                metadata: pair.0.metadata, participant: pair.0.record.sealedParticipant, slot: pair.1.slot,
                location: Segments.Location(
                    segment: place.segment, offset: place.offset + Int64(pair.1.head),
                    length: pair.0.record.blob.count),
                frameStart: place.offset, effects: pair.0.effects)
        }
        return .flushed(
            FlushedBatch(
                batch: batch, frames: zip(frames, placed).map { ($0.slot, $1) }, rows: rows, after: after,
                settling: settling, failures: failures, clock: clock))
    }

    /// A put batch's second stage, in the order the batches led, once every batch before it has committed:
    /// its index commit. A batch whose first stage came after a failed commit fails too, and undoes its
    /// frames and slots as that one did.
    func finish(_ staged: StagedBatch) -> [Result<RecordMetadata, CaseVaultError>] {
        var flushed: FlushedBatch
        switch staged {
        case .done(let outcomes): return outcomes
        case .flushed(let batch): flushed = batch
        }
        self.observe(.putBeforeCommit)
        // The time spent waiting for the batches before it is not this batch's commit.
        flushed.clock.restart()
        let batch = flushed.batch
        // Whether the index was asked to commit: before that, a failure certainly left nothing committed.
        var committing = false
        do throws(CaseVaultError) {
            guard self.batchFailures.withLock({ $0.failed == flushed.failures }) else {
                throw CaseVaultError(
                    .storageFailure, "a batch of puts before this one failed to commit; nothing of this one was kept")
            }
            if self.configuration.failingCommit?() == true {
                throw CaseVaultError(.storageFailure, "the index refused the commit (a test's injected failure)")
            }
            committing = true
            let waited = self.index.checkpoints.waitedNanoseconds
            if flushed.settling {
                // A filing's effects may mark records for shredding (a final agreement's notes): then no get
                // takes their rows from `liveRows` while the commit runs.
                let commit = { () throws(CaseVaultError) in
                    try self.index.write { db in
                        try Index.insertPuts(db, flushed.rows, writer: flushed.after, settled: true)
                    }
                }
                if batch.contains(where: { !$0.effects.markShredding.isEmpty }) {
                    try self.liveRows.changing(commit)
                } else {
                    try commit()
                }
                self.writer.withLock { $0.settled = max($0.settled, flushed.after.cursor) }
            } else {
                try self.index.writeUnflushed { db in
                    try Index.insertPuts(db, flushed.rows, writer: flushed.after, settled: false)
                }
            }
            self.observe(.putAfterCommit)
            flushed.clock.end(\.commitNanoseconds, checkpoint: self.index.checkpoints.waitedNanoseconds - waited)
            self.phases.withLock { $0.add(flushed.clock.phases) }
            return batch.map { .success($0.metadata) }
        } catch {
            // Nothing was acknowledged. The batches behind this one fail as well, and the next to lead reads the
            // writer's state again.
            self.batchFailures.withLock { failures in
                if failures.failed == flushed.failures { failures.failed += 1 }
            }
            // A commit refused for the index's loss of commits (`Index.Loss`, its error `restart casevaultd`)
            // may be on the disk: its flush may have failed after its frames were written, or it committed and
            // a checkpoint met the loss while it waited (`Index.Checkpoints`). Undone, a commit that stayed would
            // leave a live row whose key slot is scrubbed, unreadable for good. So its frames and slots are
            // left for the next open (the store is closed meanwhile), whose recovery keeps the rows the disk
            // kept and rebuilds or scrubs the others whole (`recover`): the put may have been done. Otherwise
            // nothing committed (an error SQLite raised before its commit; a failure of its shared memory after
            // the WAL's frames were written, which is not counted as a loss, is taken as none), and what
            // reached the disk is undone so that no orphan key or ciphertext remains (an undo that fails
            // answers that the put may be kept: `mayBeKept`).
            let left = committing && Index.Loss.isLoss(error)
            let answer = left || self.undo(flushed.frames) ? error : Self.mayBeKept(error)
            self.logBatchFailure(batch.count, error)
            return batch.map { _ in .failure(answer) }
        }
    }

    /// Overwrites the frames and scrubs the slots of a batch that failed, and flushes both. Whether all of it
    /// succeeded: a frame left whole past the settled mark is one the next open may take back (`recover`).
    private func undo(_ frames: [(slot: Int64, location: Segments.Location)]) -> Bool {
        let stream = OverwriteStream()
        var undone = true
        for (slot, place) in frames {
            do throws(CaseVaultError) {
                try self.slots.scrub(slot)
                try self.segments.overwrite(place, from: stream)
            } catch {
                undone = false
            }
        }
        do throws(CaseVaultError) {
            try self.segments.flush(Set(frames.map(\.location.segment)))
            try self.slots.flush()
        } catch {
            undone = false
        }
        return undone
    }

    /// The answer to a batch whose undo failed: what it wrote may still be on the disk when the store next
    /// opens, and its recovery may take the puts back, so the answer must not say that nothing was kept.
    static func mayBeKept(_ error: CaseVaultError) -> CaseVaultError {
        CaseVaultError(
            .storageFailure,
            "the put failed and what it wrote could not be overwritten: it may be kept once casevaultd starts again, "
                + "so list the case's records before sending it again; check the disk and free space",
            cause: error)
    }

    /// Reads the writer's state again from the index when a put batch's commit failed since it was last
    /// read: called as the only writer, once every batch has finished (`WriteQueue.exclusive`), or by the
    /// next batch to lead once those before it have. Throws when the index cannot be read: nothing may be
    /// written on a state past what failed.
    func reloadAfterFailedBatches() throws(CaseVaultError) {
        let (failed, reloaded) = self.batchFailures.withLock { ($0.failed, $0.reloaded) }
        guard failed != reloaded else { return }
        let state = try self.readWriterState()
        self.writer.withLock { $0 = state }
        self.batchFailures.withLock { $0.reloaded = max($0.reloaded, failed) }
    }

    /// The writer's state as the index has it.
    private func readWriterState() throws(CaseVaultError) -> WriterState {
        try self.index.read { db in try Index.writerState(db) }
    }

    /// After a batch failed in its first stage, once no batch before it is committing: the writer's state
    /// as the index has it (a slot dropped by `takeUnownedSlots` stays dropped), or, when the index cannot be
    /// read, the slots and cursor the batch began with.
    private func reloadWriterState(orRestore before: WriterState) {
        let reloaded = try? self.readWriterState()
        self.writer.withLock { state in
            if let reloaded {
                state = reloaded
            } else {
                state.restorePlacement(before)
            }
        }
    }

    private func logBatchFailure(_ count: Int, _ error: CaseVaultError) {
        self.logger.error(
            "a batch of puts failed",
            metadata: ["batch.size": "\(count)", "error.code": "\(error.code.rawValue)"]
        )
    }

    /// Whether a batch ending at `state.cursor` leaves more than `settleDistance` bytes of frames to replay
    /// after a power cut: then it settles, so that recovery reads at most that much.
    private func isFarFromSettled(_ state: WriterState) -> Bool {
        // (A cursor behind the mark, after a failed batch, settles too: the mark must never stand past frames
        // recovery should replay.)
        state.cursor < state.settled || state.cursor.segment != state.settled.segment
            || state.cursor.end - state.settled.end > Self.settleDistance
    }

    /// How far past the settled mark puts go before a batch settles.
    static let settleDistance: Int64 = 16 << 20

    /// `count` distinct slots that no record in the index owns, taken from the allocator. A slot the free
    /// list or the high-water mark offers although a record owns it (an index damaged by hand or by a
    /// disk, never by the store) is not written: writing it would destroy that record's key, and so would
    /// scrubbing it when the batch fails. It leaves the free list for good, and the log says how many.
    private func takeUnownedSlots(_ count: Int) throws(CaseVaultError) -> [Int64] {
        var chosen: [Int64] = []
        var seen: Set<Int64> = []
        var owned: Set<Int64> = []
        while chosen.count < count {
            let candidates = self.writer.withLock { state in (chosen.count..<count).map { _ in state.slots.take() } }
            let found = try self.index.lookup { db in try Index.ownedSlots(db, among: candidates) }
            if !found.isEmpty {
                owned.formUnion(found)
                // A high-water mark below an owned slot: start above every owned slot at once.
                let top = try self.index.lookup { db in try Index.maxSlot(db) } ?? -1
                self.writer.withLock { state in state.slots.highWater = max(state.slots.highWater, top + 1) }
            }
            for slot in candidates where !found.contains(slot) && seen.insert(slot).inserted {
                chosen.append(slot)
            }
        }
        if !owned.isEmpty {
            try self.index.write { db in try Index.takeOffFreeList(db, owned) }
            self.logger.error(
                "the free-slot list offered key slots that records own; they were taken off it unwritten",
                metadata: ["slots.count": "\(owned.count)"]
            )
        }
        return chosen
    }
}

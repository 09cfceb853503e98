internal import CaseVaultCore
internal import CaseVaultSealing
internal import Logging
internal import Synchronization

extension RecordStore {
    /// Brings the data directory back to a state every invariant holds in, after a crash at any instant:
    /// 0. the puts past the settled mark get back the key slots and index rows a power cut took from them,
    ///    from their segment frames (`replayUnsettledFrames`);
    /// 1. every record left `shredding` is shredded to the end, and every shred order certified: a sweep's
    ///    order, left open by a crash, is closed;
    /// 2. every slot no record owns (freed, or past the high-water mark) that still looks like a wrapped key
    ///    is scrubbed: it belonged to a put that was never acknowledged;
    /// 3. segment bytes past the end of the log (what those same puts wrote) are overwritten and cut off.
    /// Each costs in proportion to what a crash can leave, not to the size of the vault.
    func recover() throws(CaseVaultError) {
        // Before any writer settles: settling first would move the mark past frames it has not replayed.
        try self.writes.exclusive { () throws(CaseVaultError) in try self.replayUnsettledFrames() }
        _ = try self.asShredder { () throws(CaseVaultError) in
            let removedCertified = try self.asWriter { () throws(CaseVaultError) in
                try self.index.write { db in try Index.closeOpenShredOrders(db) }
            }
            try self.finishPendingShreds()
            // Certified records' rows it removed: their images leave the WAL too, as a shred's do (a
            // certification truncates it already).
            if removedCertified { self.truncateWALAfterShred() }
        }
        try self.asWriter { () throws(CaseVaultError) in

            // The free list and the high-water mark are checked against the records first: a slot a record
            // owns is never scrubbed, whatever a damaged index says of it.
            let owned = try self.repairSlotAccounting()
            let state = self.writer.withLock { $0 }
            let tail = try self.slots.slotCount()
            var scrubbedSlots = 0
            for slot in state.slots.free + Array(state.slots.highWater..<max(state.slots.highWater, tail))
            where !owned.contains(slot) {
                if KeySlot.mayHoldKey(try self.slots.read(slot)) {
                    try self.slots.scrub(slot)
                    scrubbedSlots += 1
                }
            }
            let scrubbedBytes = try self.segments.scrubUncommitted(after: state.cursor)
            try self.recoverAttachments()
            try self.removeBackupSnapshots()
            try self.slots.flush()
            if !owned.isEmpty {
                self.logger.error(
                    "the index's free-slot list or high-water mark named key slots that records own; corrected, the slots left untouched",
                    metadata: ["slots.count": "\(owned.count)"]
                )
            }
            if scrubbedSlots > 0 || scrubbedBytes > 0 {
                self.logger.notice(
                    "scrubbed what an interrupted put left behind",
                    metadata: ["slots.scrubbed": "\(scrubbedSlots)", "segment.bytes_scrubbed": "\(scrubbedBytes)"]
                )
            }
        }
    }

    /// Step 0 of `recover`. The frames from the settled mark on are read in order, each whole one taken:
    /// its key slot is written again from it, and its index row added when the index lost it (a put's commit
    /// is not flushed: `RecordStore.commit`). The first frame that cannot be taken ends the log: a torn or
    /// never-written one, one whose put had filing effects (committed only with a flushed transaction, which
    /// would have moved the mark past it), or one that disagrees with the index. Everything from there on is
    /// what puts that were never acknowledged left, and step 3 scrubs it. The segment cursor and the mark
    /// then move to the end of the last frame taken.
    func replayUnsettledFrames() throws(CaseVaultError) {
        let state = self.writer.withLock { $0 }
        var position = state.settled
        var taken: [(frame: SegmentFrame, blob: Segments.Location, frameStart: Int64, indexed: Bool)] = []
        var claimed: Set<Int64> = []
        // Within the mark's segment only: a batch that begins a new segment settles before it is
        // acknowledged, so what lies in a later one belongs to puts that never were, and is scrubbed.
        while true {
            guard let (frame, at, head) = try self.segments.frame(at: position), claimed.insert(frame.slot).inserted
            else { break }
            let blob = Segments.Location(
                segment: at.segment, offset: at.offset + Int64(head), length: frame.metadata.sealedSize)
            let (row, takeable) = try self.index.read { db in
                let owned = try Index.ownedSlots(db, among: [frame.slot])
                let shredded = try Index.isShredded(db, id: frame.metadata.id)
                return (try Index.row(db, id: frame.metadata.id), frame.replayable && owned.isEmpty && !shredded)
            }
            if let row {
                guard row.slot == frame.slot, row.location == blob else { break }
            } else if !takeable {
                break
            }
            taken.append((frame, blob, at.offset, row != nil))
            position = Segments.Cursor(segment: at.segment, end: at.offset + Int64(at.length))
        }
        guard !taken.isEmpty || state.settled != state.cursor else { return }
        for entry in taken {
            try self.slots.write(entry.frame.slot, entry.frame.wrappedKey)
        }
        try self.slots.flush()
        let end = max(state.cursor, position)
        let fresh = try self.index.write { db in
            for entry in taken where !entry.indexed {
                try Index.insertLiveRecord(
                    db, entry.frame.metadata, participant: entry.frame.participant, slot: entry.frame.slot,
                    location: entry.blob, frameStart: entry.frameStart)
                try Index.takeOffFreeList(db, [entry.frame.slot])
            }
            // The slots between the old high-water mark and a replayed one go on the free list (scrubbed in
            // step 2 if a put that never committed left a key there).
            let top = (taken.map(\.frame.slot).max() ?? -1) + 1
            if top > state.slots.highWater {
                try Index.setMeta(db, "slot_high_water", top)
                for slot in state.slots.highWater..<top {
                    try Index.freeUnlessOwned(db, slot: slot)
                }
            }
            try Index.setMeta(db, "segment_current", Int64(end.segment))
            try Index.setMeta(db, "segment_end", end.end)
            try Index.setSettled(db, end)
            return try Index.writerState(db)
        }
        self.writer.withLock { $0 = fresh }
        let added = taken.count { !$0.indexed }
        if added > 0 {
            self.logger.notice(
                "rebuilt from the segments' frames the index rows and key slots a crash or power cut left unwritten",
                metadata: ["records.added": "\(added)", "slots.rewritten": "\(taken.count)"]
            )
        }
    }

    /// Takes off the free list every slot a record owns, raises the high-water mark above every owned
    /// slot and the segment cursor past every record's blob, then reloads the writer's state from the
    /// index (which also drops any slot an interrupted shred listed twice). Returns the slots that had been
    /// offered although owned.
    private func repairSlotAccounting() throws(CaseVaultError) -> Set<Int64> {
        let state = self.writer.withLock { $0 }
        let tail = try self.slots.slotCount()
        var moved = false
        let fresh = try self.index.write { db -> (Set<Int64>, WriterState) in
            let owned = try Index.ownedSlots(
                db, among: state.slots.free + Array(state.slots.highWater..<max(state.slots.highWater, tail)))
            try Index.takeOffFreeList(db, owned)
            let top = try Index.maxSlot(db).map { $0 + 1 } ?? 0
            if top > state.slots.highWater {
                // The slots skipped below the new mark go on the free list, to be scrubbed and reused.
                for slot in state.slots.highWater..<top where !owned.contains(slot) {
                    try Index.freeUnlessOwned(db, slot: slot)
                }
                try Index.setMeta(db, "slot_high_water", top)
            }
            // The same for the segment cursor: past the end of every record's blob, so that neither the
            // next put nor the scrub of uncommitted bytes below touches one (one scan of the index, at open).
            if let last = try Index.sealedContentEnd(db) {
                let (segment, end) = (last.segment, last.end)
                let current = try Index.meta(db, "segment_current")
                let currentEnd = try Index.meta(db, "segment_end")
                if segment > current || (segment == current && end > currentEnd) {
                    try Index.setMeta(db, "segment_current", segment)
                    try Index.setMeta(db, "segment_end", end)
                    moved = true
                }
            }
            return (owned, try Index.writerState(db))
        }
        self.writer.withLock { $0 = fresh.1 }
        if moved {
            self.logger.error("the index's segment cursor lay behind a record's sealed content; moved past it")
        }
        return fresh.0
    }
}

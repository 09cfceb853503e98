internal import CaseVaultCore
internal import CaseVaultSealing
internal import Logging
internal import Synchronization

extension RecordStore {
    /// Brings the data directory back to a state every invariant holds in, after a crash at any instant:
    /// 1. every record left `shredding` is shredded to the end, and every shred order certified: a sweep's
    ///    order, left open by a crash, is closed;
    /// 2. every slot no record owns (freed, or past the high-water mark) that still looks like a wrapped key
    ///    is scrubbed: it belonged to a put that crashed before its commit;
    /// 3. segment bytes past the committed end (blobs of those same puts) are overwritten and cut off.
    /// Each costs in proportion to what a crash can leave, not to the size of the vault.
    func recover() throws(CaseVaultError) {
        _ = try self.asShredder { () throws(CaseVaultError) in
            try self.asWriter { () throws(CaseVaultError) in
                try self.index.write { db in try Index.closeOpenShredOrders(db) }
            }
            try self.finishPendingShreds()
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

package import CaseVaultCore
internal import CaseVaultSealing

/// What a rotation call did (docs/SECURITY.md: rotation opens a new epoch and rewraps slots; an epoch is retired
/// once no slot uses it).
package struct RotationReport: Sendable, Equatable {
    /// The epoch every slot is being moved to.
    package var epoch: UInt32
    /// Whether this call opened that epoch (otherwise it carried on a rotation already under way).
    package var opened: Bool
    /// Slots rewrapped by this call.
    package var rewrapped: Int
    /// Live slots still under an older epoch.
    package var remaining: Int
    /// Epochs this call retired.
    package var retired: [UInt32]

    package var complete: Bool { self.remaining == 0 }
}

extension RecordStore {
    /// The epoch new keys are wrapped under.
    package var currentEpoch: UInt32 {
        self.epochs.withLock { $0.current }
    }

    /// Epochs not yet retired, oldest first.
    package func activeEpochs() throws(CaseVaultError) -> [UInt32] {
        try self.index.read { db in try Index.activeEpochs(db) }
    }

    /// The current key-encryption epoch and every one not yet retired, for the status.
    package func keyEpochs() throws(CaseVaultError) -> (current: UInt64, active: [UInt64]) {
        (UInt64(self.currentEpoch), try self.activeEpochs().map(UInt64.init))
    }

    /// Rotates the key-encryption key: opens a new epoch unless a rotation is under way (more than one
    /// active epoch: a rotation a crash or a `limit` interrupted), then rewraps live slots under it in
    /// batches of `batch`, at most `limit` of them, and retires every older epoch once no live slot uses
    /// one.
    ///
    /// Each batch runs as the only writer: every slot is read, unwrapped with its own epoch's key, wrapped
    /// under the new one for the same slot and record, and written back in place (a 128-byte slot lies
    /// within one disk sector, so a crash leaves it old or new, and both open); then one flush. New puts
    /// use the new epoch from the moment it is committed. Shreds and puts wait while a batch runs.
    package func rotate(limit: Int? = nil, batch: Int = 5000, progress: (RotationReport) -> Void = { _ in })
        throws(CaseVaultError) -> RotationReport
    {
        let batch = max(1, batch)
        let (target, opened) = try self.asWriter { () throws(CaseVaultError) -> (UInt32, Bool) in
            let active = try self.activeEpochs()
            if active.count > 1, let newest = active.last {
                return (newest, false)
            }
            let next = (active.last ?? 1) + 1
            let now = self.now()
            try self.index.write { db in try Index.openEpoch(db, next, createdAt: now) }
            self.epochs.withLock { $0.current = next }
            self.observe(.rotateAfterEpoch)
            return (next, true)
        }
        var report = RotationReport(epoch: target, opened: opened, rewrapped: 0, remaining: 0, retired: [])
        var pending = try self.slotsToRewrap(target: target)
        while !pending.isEmpty, report.rewrapped < (limit ?? Int.max) {
            let take = min(batch, pending.count, (limit ?? Int.max) - report.rewrapped)
            let chunk = Array(pending.prefix(take))
            pending.removeFirst(take)
            report.rewrapped += try self.asWriter { () throws(CaseVaultError) -> Int in
                try self.rewrap(chunk, target: target)
            }
            self.observe(.rotateAfterBatch)
            report.remaining = pending.count
            progress(report)
        }
        report.remaining = pending.count
        if pending.isEmpty {
            report.retired = try self.asWriter { () throws(CaseVaultError) -> [UInt32] in
                // Checked again as the only writer: no put or shred can slip an old slot in meanwhile.
                report.remaining = try self.slotsToRewrap(target: target).count
                guard report.remaining == 0 else { return [] }
                // The slots were read from the page cache, which keeps rewraps a failed flush lost (in this
                // run or an earlier one): written again and flushed first, so that none is left on the disk
                // under an epoch retired here.
                try self.slots.rewriteAndFlush(count: try self.slots.slotCount())
                let now = self.now()
                let retired = try self.index.write { db in try Index.retireEpochs(db, except: target, retiredAt: now) }
                self.sealing.retire(retired)
                return retired
            }
        }
        self.logger.notice(
            "key rotation",
            metadata: [
                "epoch": "\(target)", "slots.rewrapped": "\(report.rewrapped)",
                "slots.remaining": "\(report.remaining)",
            ]
        )
        return report
    }

    /// Live records whose slot is under another epoch than `target`: one read of the slot file.
    func slotsToRewrap(target: UInt32) throws(CaseVaultError) -> [(id: RecordID, slot: Int64)] {
        let live = try self.index.read { db in try Index.liveRecordSlots(db) }
        guard let last = live.last?.1 else { return [] }
        let file = try self.slots.readRange(0, count: last + 1)
        return live.filter { _, slot in
            let offset = Int(slot) * KeySlot.size
            return KeySlot.epoch(of: file[offset..<(offset + KeySlot.size)]) != target
        }
    }

    /// Rewraps `slots` under `target` and flushes them: called as the only writer. A record shredded or
    /// rewrapped since the list was made is skipped. First the copy of each old wrapped key in its record's
    /// segment frame is zeroed and flushed (the settled frames are never replayed): a slot is rewrapped
    /// only once its copy is gone, so a slot under the new epoch never leaves one under the epoch the
    /// rotation retires, whatever fails or crashes in between (the next rotation redoes both).
    private func rewrap(_ slots: [(id: RecordID, slot: Int64)], target: UInt32) throws(CaseVaultError) -> Int {
        guard let first = slots.first?.slot, let last = slots.last?.slot else { return 0 }
        let (stillLive, copies) = try self.index.read { db in
            (
                try Index.liveSlots(db, from: first, through: last),
                try Index.frameKeyCopies(db, from: first, through: last)
            )
        }
        var pending: [(id: RecordID, slot: Int64, bytes: [UInt8])] = []
        var cleared = Set<UInt32>()
        for (id, slot) in slots where stillLive.contains(slot) {
            let bytes = try self.slots.read(slot)
            guard KeySlot.epoch(of: bytes[...]) != target else { continue }
            if let copy = copies[slot] {
                try self.segments.clear(copy)
                cleared.insert(copy.segment)
            }
            pending.append((id, slot, bytes))
        }
        try self.segments.flush(cleared)
        for (id, slot, bytes) in pending {
            let rewrapped: [UInt8]
            do throws(CaseVaultError) {
                rewrapped = try self.sealing.rewrap(slotBytes: bytes, recordID: id, slot: slot, epoch: target)
            } catch {
                guard error.code == .integrityFailure else { throw error }
                // The rotation cannot go past a slot that does not open, and the old epoch stays until it can:
                // the operator is told which record (its id, as in its URL), to restore or shred it.
                self.logger.error(
                    "a key slot failed authentication: the rotation stops there",
                    metadata: ["record.id": "\(id.rawValue)", "error.code": "\(error.code.rawValue)"])
                throw CaseVaultError(
                    .integrityFailure,
                    "record \(id.rawValue)'s key slot failed authentication, so the rotation cannot go past it: "
                        + "restore the data directory from a backup, or shred that record (it cannot be read)",
                    cause: error)
            }
            try self.slots.write(slot, rewrapped)
            self.observe(.rotateAfterSlotWrite)
        }
        try self.slots.flush()
        return pending.count
    }
}

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

        init(metadata: RecordMetadata, record: SealedRecord, effects: FilingEffects) {
            self.metadata = metadata
            self.record = record
            self.effects = effects
        }
    }

    /// Files a sealed record durably with `effects` (the storage protocol's `commit`): when this returns,
    /// the record survives a crash.
    package func commit(_ record: SealedRecord, effects: FilingEffects) throws(CaseVaultError) -> RecordMetadata {
        let metadata = RecordMetadata(
            id: record.id,
            caseID: record.caseID,
            type: record.type,
            createdAt: self.now(),
            author: record.author,
            supersedes: record.supersedes,
            sealedSize: record.blob.count
        )
        // Only placing the blob and the slot, the flush and the index commit are batched.
        let pending = PendingPut(metadata: metadata, record: record, effects: effects)
        return try self.writes.submit(pending, perform: self.commit).get()
    }

    /// The leader's half of a put batch: one slot and one segment region per record, one filesystem
    /// flush for all of them, one index commit.
    private func commit(_ batch: [PendingPut]) -> [Result<RecordMetadata, CaseVaultError>] {
        // A batch that leads after `close` began writes nothing: its keys may be wiped by now, and a slot
        // wrapped under a wiped key would open for anyone.
        do throws(CaseVaultError) {
            try self.refuseIfClosed()
        } catch {
            return batch.map { _ in .failure(error) }
        }
        let before = self.writer.withLock { $0 }
        let slots: [Int64]
        do throws(CaseVaultError) {
            slots = try self.takeUnownedSlots(batch.count)
        } catch {
            self.writer.withLock { $0 = before }
            return batch.map { _ in .failure(error) }
        }
        let placed = self.writer.withLock { state in
            zip(batch, slots).map { put, slot in
                (slot: slot, location: state.cursor.reserve(put.record.blob.count, maxBytes: self.segments.maxBytes))
            }
        }
        let after = self.writer.withLock { $0 }
        // A rotation changes the epoch only as the only writer, so it holds for the whole batch.
        let epoch = self.currentEpoch
        do throws(CaseVaultError) {
            for (put, place) in zip(batch, placed) {
                try self.segments.write(put.record.blob, at: place.location)
                self.observe(.putAfterBlobWrite)
                try self.slots.write(place.slot, try put.record.wrappedKey(slot: place.slot, epoch: epoch))
            }
            // What the audit log wrote before this point (the batch's request entries among it) is written
            // back beside the segment and made durable by the key slots' device flush.
            let rider = self.rider.withLock { $0 }
            let ride = rider?.prepareRide()
            try self.segments.flush(Set(placed.map(\.location.segment)))
            let boarded = ride.map { rider?.board($0) ?? false } ?? false
            try self.slots.flush()
            if let rider, let ride, boarded { rider.rode(ride) }
            self.observe(.putAfterSlotFlush)
            try self.index.write { db in
                for (put, place) in zip(batch, placed) {
                    try Index.insertLiveRecord(
                        db, put.metadata, participant: put.record.sealedParticipant, slot: place.slot,
                        location: place.location)
                    try Index.takeOffFreeList(db, [place.slot])
                    try Index.apply(db, put.effects)
                }
                try Index.setMeta(db, "slot_high_water", after.slots.highWater)
                try Index.setMeta(db, "segment_current", Int64(after.cursor.segment))
                try Index.setMeta(db, "segment_end", after.cursor.end)
            }
            self.observe(.putAfterCommit)
            return batch.map { .success($0.metadata) }
        } catch {
            // Nothing was acknowledged: undo what reached the disk so no orphan key or ciphertext remains.
            let stream = OverwriteStream()
            for place in placed {
                try? self.slots.scrub(place.slot)
                try? self.segments.overwrite(place.location, from: stream)
            }
            try? self.segments.flush(Set(placed.map(\.location.segment)))
            try? self.slots.flush()
            // The index holds what was committed; a slot dropped by `takeUnownedSlots` stays dropped.
            let reloaded = try? self.index.read { db in try Index.writerState(db) }
            self.writer.withLock { $0 = reloaded ?? before }
            self.logger.error(
                "a batch of puts failed",
                metadata: ["batch.size": "\(batch.count)", "error.code": "\(error.code.rawValue)"]
            )
            return batch.map { _ in .failure(error) }
        }
    }

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

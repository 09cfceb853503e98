internal import CaseVaultCore
internal import GRDB
internal import Logging
internal import Synchronization

extension RecordStore {
    /// Brings the data directory back to a state every invariant holds in, after a crash at any instant:
    /// 1. every record left `shredding` is shredded to the end;
    /// 2. every slot no record owns (freed, or past the high-water mark) that still looks like a wrapped key
    ///    is scrubbed: it belonged to a put that crashed before its commit;
    /// 3. segment bytes past the committed end (blobs of those same puts) are overwritten and cut off.
    /// Each costs in proportion to what a crash can leave, not to the size of the vault.
    func recover() throws(CaseVaultError) {
        try self.asWriter { () throws(CaseVaultError) in
            let interrupted = try self.index.read { db in
                try GRDB.Row.fetchAll(db, sql: "SELECT \(Index.columns) FROM records WHERE state = 'shredding'")
                    .map(Index.decode)
            }
            if !interrupted.isEmpty {
                self.logger.notice("finishing interrupted shreds", metadata: ["records.count": "\(interrupted.count)"])
                try self.runShred(interrupted, from: ShredStep.resumePoint)
            }

            let state = self.writer.withLock { $0 }
            let tail = try self.slots.slotCount()
            var scrubbedSlots = 0
            for slot in state.slots.free + Array(state.slots.highWater..<max(state.slots.highWater, tail)) {
                if KeySlot.mayHoldKey(try self.slots.read(slot)) {
                    try self.slots.scrub(slot)
                    scrubbedSlots += 1
                }
            }
            let scrubbedBytes = try self.segments.scrubUncommitted(after: state.cursor)
            try self.recoverAttachments()
            try self.removeBackupSnapshots()
            try self.slots.flush()
            if scrubbedSlots > 0 || scrubbedBytes > 0 {
                self.logger.notice(
                    "scrubbed what an interrupted put left behind",
                    metadata: ["slots.scrubbed": "\(scrubbedSlots)", "segment.bytes_scrubbed": "\(scrubbedBytes)"]
                )
            }
        }
    }
}

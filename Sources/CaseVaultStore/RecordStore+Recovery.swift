#if canImport(Glibc)
internal import Glibc
#endif
internal import CaseVaultCore
internal import GRDB
internal import Logging
internal import Synchronization

extension RecordStore {
    /// Brings the data directory back to a state every invariant holds in, after a crash at any instant:
    /// 1. every record left `shredding` is shredded to the end;
    /// 2. every slot no record owns (freed, or past the high-water mark) that still looks like a wrapped key
    ///    is scrubbed: a put that crashed before its commit;
    /// 3. after an unclean shutdown, every blob file no record owns is overwritten and removed.
    func recover() throws(CaseVaultError) {
        try self.writes.exclusive { () throws(CaseVaultError) in
            let interrupted = try self.index.read { db in
                try GRDB.Row.fetchAll(
                    db,
                    sql: """
                        SELECT id, case_id, type, state, created_at, author, supersedes, sealed_size, slot
                        FROM records WHERE state = 'shredding'
                        """
                ).map(Index.decode)
            }
            if !interrupted.isEmpty {
                self.logger.notice("finishing interrupted shreds", metadata: ["records.count": "\(interrupted.count)"])
                try self.runShred(interrupted, from: ShredStep.resumePoint())
            }

            let (free, highWater) = self.allocator.withLock { ($0.free, $0.highWater) }
            let tail = try self.slots.slotCount()
            var scrubbed = 0
            for slot in free + Array(highWater..<max(highWater, tail)) {
                if KeySlot.mayHoldKey(try self.slots.read(slot)) {
                    try self.slots.scrub(slot)
                    scrubbed += 1
                }
            }

            let cleanShutdown = DataDirectory.exists(self.directory.cleanShutdownMarker)
            var orphans = 0
            if !cleanShutdown {
                orphans = try self.removeOrphanBlobs()
            }
            try self.slots.flushFilesystem()
            if cleanShutdown {
                guard unlink(self.directory.cleanShutdownMarker) == 0 else {
                    throw POSIXFailure.error("unlink", path: self.directory.cleanShutdownMarker)
                }
                try DataDirectory.flushDirectory(self.directory.path)
            }
            if scrubbed > 0 || orphans > 0 {
                self.logger.notice(
                    "scrubbed what an interrupted write left behind",
                    metadata: ["slots.scrubbed": "\(scrubbed)", "blobs.removed": "\(orphans)"]
                )
            }
        }
    }

    /// Overwrites and removes blob files that no index row owns. Costs one directory walk; runs only
    /// after an unclean shutdown.
    private func removeOrphanBlobs() throws(CaseVaultError) -> Int {
        var removed = 0
        for folder in try Self.entries(of: self.directory.blobsPath) {
            let folderPath = self.directory.blobsPath + "/" + folder
            let names = try Self.entries(of: folderPath)
            let owned: Set<String> = try self.index.read { db in
                Set(try String.fetchAll(db, sql: "SELECT id FROM records WHERE id >= ? AND id < ?", arguments: [folder, folder + "g"]))
            }
            for name in names where !owned.contains(name) {
                let path = folderPath + "/" + name
                try SealedBlobs.overwrite(path: path)
                guard unlink(path) == 0 || errno == ENOENT else { throw POSIXFailure.error("unlink", path: path) }
                removed += 1
            }
        }
        return removed
    }

    private static func entries(of path: String) throws(CaseVaultError) -> [String] {
        guard let stream = opendir(path) else { throw POSIXFailure.error("opendir", path: path) }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." {
                names.append(name)
            }
        }
        return names
    }
}

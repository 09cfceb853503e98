internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// Sealed content, appended to segment files `segments/NNNNNNNN` (one grows at a time, up to
/// `maxBytes`). A record's blob is a region (segment, offset, length) named in the index; since index v11
/// each blob ends a frame (`SegmentFrame`) that makes the segments the log of record.
///
/// Why segments rather than SQLite rows or one file per record:
/// - a shred overwrites the region in place with random bytes; a SQLite row's old bytes can survive in
///   free pages, in cells a B-tree rebalance copied, and in WAL frames;
/// - one file per record spends most of a put creating an inode (ext4 scans past recently deleted
///   inodes: 72% of put CPU in `make bench` with per-record files), and a get opening one;
/// - a batch of puts is one pwrite per frame at the segment's end and one device flush.
///
/// Writers append only under the write queue's leadership; readers use `pread` on cached descriptors.
final class Segments: Sendable {
    struct Location: Equatable {
        var segment: UInt32
        var offset: Int64
        var length: Int

        /// `locations` in file order, each run of regions that touch merged into one, with how many regions
        /// it merges (at most `maxRegions`): a batch of records filed one after another is one overwrite per
        /// `maxRegions` records, not one per record. A run never covers a byte outside the regions it merges.
        static func runs(_ locations: [Location], maxRegions: Int) -> [(run: Location, regions: Int)] {
            var runs: [(run: Location, regions: Int)] = []
            for location in locations.sorted(by: { ($0.segment, $0.offset) < ($1.segment, $1.offset) }) {
                if let last = runs.last, last.regions < maxRegions, last.run.segment == location.segment,
                    last.run.offset + Int64(last.run.length) == location.offset
                {
                    runs[runs.count - 1].run.length += location.length
                    runs[runs.count - 1].regions += 1
                } else {
                    runs.append((location, 1))
                }
            }
            return runs
        }
    }

    /// Where the next blob goes: the current segment and the end of its committed bytes.
    struct Cursor: Comparable {
        var segment: UInt32
        var end: Int64

        static func < (lhs: Cursor, rhs: Cursor) -> Bool {
            (lhs.segment, lhs.end) < (rhs.segment, rhs.end)
        }

        mutating func reserve(_ length: Int, maxBytes: Int64) -> Location {
            if self.end > 0, self.end + Int64(length) > maxBytes {
                self.segment += 1
                self.end = 0
            }
            defer { self.end += Int64(length) }
            return Location(segment: self.segment, offset: self.end, length: length)
        }
    }

    /// Segments grow by this many zero bytes at a time, ahead of the blobs written into them: a put then
    /// overwrites blocks that already exist, so flushing it changes no file size or extent (no journal
    /// commit), and `fdatasync` costs one device flush.
    static let growth: Int64 = 4 << 20

    let path: String
    let maxBytes: Int64
    private let open = Mutex<[UInt32: PosixFile]>([:])
    /// Bytes on disk per segment (committed, uncommitted or zero), so growth needs no fstat per write.
    private let sizes = Mutex<[UInt32: Int64]>([:])

    init(path: String, maxBytes: Int64) throws(CaseVaultError) {
        try DataDirectory.makeDirectory(path, createParents: false)
        self.path = path
        self.maxBytes = maxBytes
    }

    func filePath(_ segment: UInt32) -> String {
        let digits = String(segment, radix: 10)
        return self.path + "/" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    /// The open file of `segment`, created unless `create` is false (a read: a segment the index names and
    /// the disk does not have is damage, and is not made, on a request's task, at a reader's word).
    private func file(_ segment: UInt32, create: Bool = true) throws(CaseVaultError) -> PosixFile {
        if let file = self.open.withLock({ $0[segment] }) {
            return file
        }
        let path = self.filePath(segment)
        let created = !DataDirectory.exists(path)
        if created, !create {
            throw CaseVaultError(
                .storageFailure,
                "the index names a segment file that is missing; restore the data directory from a backup")
        }
        let file = try PosixFile(path: path, flags: O_RDWR | O_CREAT, mode: 0o600)
        try DataDirectory.checkPrivate(try file.status(), path: path, isDirectory: false)
        if created {
            // A new segment's name must be durable before the index names it; fdatasync alone does not
            // persist a directory entry. When that flush fails, the new (empty) file is removed, so that the
            // next call makes it and flushes its name again rather than finding it and flushing nothing.
            do {
                try DataDirectory.flushDirectory(self.path)
            } catch {
                unlink(path)
                throw error
            }
        }
        return self.open.withLock { files in
            if let existing = files[segment] { return existing }
            files[segment] = file
            return file
        }
    }

    func read(_ location: Location) throws(CaseVaultError) -> [UInt8] {
        try self.file(location.segment, create: false).read(count: location.length, at: location.offset)
    }

    func write(_ bytes: [UInt8], at location: Location) throws(CaseVaultError) {
        precondition(bytes.count == location.length, "a blob must fill its region")
        let file = try self.file(location.segment)
        let end = location.offset + Int64(location.length)
        var size = try self.sizes.withLock { sizes throws(CaseVaultError) in
            if let size = sizes[location.segment] { return size }
            let size = try file.size()
            sizes[location.segment] = size
            return size
        }
        if end > size {
            let target = end + Self.growth
            try Self.grow(file, from: size, to: target)
            size = target
            self.sizes.withLock { $0[location.segment] = target }
        }
        try file.write(bytes, at: location.offset)
    }

    /// The whole frame that begins at `position`, with its place, or nil when none does there (zeros, a torn
    /// or overwritten frame, a blob filed before frames, the end of the file, no such segment).
    func frame(at position: Cursor) throws(CaseVaultError) -> (frame: SegmentFrame, at: Location, head: Int)? {
        guard DataDirectory.exists(self.filePath(position.segment)) else { return nil }
        let file = try self.file(position.segment, create: false)
        let room = try file.size() - position.end
        let prefix = try file.read(count: SegmentFrame.prefixSize, at: position.end)
        guard let lengths = SegmentFrame.lengths(prefix: prefix, maxFrameLength: room),
            let (frame, head) = SegmentFrame.decode(try file.read(count: lengths.frame, at: position.end))
        else { return nil }
        return (frame, Location(segment: position.segment, offset: position.end, length: lengths.frame), head)
    }

    /// Writes zeros over a region in place (not yet flushed).
    func clear(_ location: Location) throws(CaseVaultError) {
        try Self.fill(try self.file(location.segment), from: location.offset, count: Int64(location.length))
    }

    /// Starts writing `segments`' dirty pages to the device without waiting for them or flushing the
    /// device's cache (`sync_file_range`), so that they are in flight while something else is written.
    func startWriteBack(_ segments: Set<UInt32>) throws(CaseVaultError) {
        for segment in segments.sorted() {
            try self.file(segment).writeBack(.start)
        }
    }

    /// Makes the writes to `segments` durable.
    func flush(_ segments: Set<UInt32>) throws(CaseVaultError) {
        for segment in segments.sorted() {
            try self.file(segment).flushData()
        }
    }

    /// Overwrites a region in place with `stream`'s keystream (not yet flushed); one stream serves many
    /// regions.
    func overwrite(_ location: Location, from stream: OverwriteStream) throws(CaseVaultError) {
        try Self.fill(
            try self.file(location.segment), from: location.offset, count: Int64(location.length), with: stream)
    }

    /// Grows `file` from `size`, the end of its space this run of the store has grown and flushed (or found at
    /// open), to `target` with zeros, and flushes at once, while nothing else waits for it: the blocks are
    /// allocated and written here, so that a later flush of a frame or a slot only writes data. Left to that
    /// flush, a disk error in it could lose the allocation itself (ext4 converts unwritten extents when the
    /// write completes, and without a journal it does not write again a change to its own metadata whose
    /// write failed), and what was flushed there after the disk recovered would read back as zeros after a
    /// remount. For the same reason, what a growth that failed left past `size` is overwritten with zeros,
    /// flushed (it may hold frames or keys of puts never acknowledged) and cut off first, so that this growth
    /// changes the size and blocks anew and its flush writes them.
    static func grow(_ file: PosixFile, from size: Int64, to target: Int64) throws(CaseVaultError) {
        let actual = try file.size()
        if actual > size {
            try Self.fill(file, from: size, count: actual - size)
            try file.flushData()
            try file.truncate(to: size)
        }
        try Self.fill(file, from: size, count: target - size)
        try file.flushData()
    }

    /// Writes `count` bytes from `offset` on, in chunks of `PosixFile.fillChunk`: `stream`'s keystream, or zeros
    /// without one (`PosixFile.writeZeros`).
    static func fill(_ file: PosixFile, from offset: Int64, count: Int64, with stream: OverwriteStream? = nil)
        throws(CaseVaultError)
    {
        guard let stream else {
            try file.writeZeros(count: count, at: offset)
            return
        }
        var chunk = [UInt8](repeating: 0, count: Int(min(Int64(PosixFile.fillChunk), count)))
        var done: Int64 = 0
        while done < count {
            let length = Int(min(Int64(chunk.count), count - done))
            chunk.withUnsafeMutableBytes { stream.fill(UnsafeMutableRawBufferPointer(rebasing: $0[..<length])) }
            try file.write(length == chunk.count ? chunk : Array(chunk[..<length]), at: offset + done)
            done += Int64(length)
        }
    }

    /// After a crash: bytes past the end of the log (`RecordStore.replayUnsettledFrames`) are zeros or what
    /// puts that were never acknowledged wrote.
    /// Zero the latter (keeping the space allocated), and remove segments past the current one, overwritten
    /// first. Returns how many bytes were overwritten.
    func scrubUncommitted(after cursor: Cursor) throws(CaseVaultError) -> Int64 {
        var scrubbed: Int64 = 0
        let current = try self.file(cursor.segment)
        let size = try current.size()
        // Read the tail in chunks and rewrite only those that hold anything but zeros: after a clean stop
        // that is nothing, so opening costs a read of at most one growth step.
        var offset = cursor.end
        while offset < size {
            let count = Int(min(64 << 10, size - offset))
            if try current.read(count: count, at: offset).contains(where: { $0 != 0 }) {
                try Self.fill(current, from: offset, count: Int64(count))
                scrubbed += Int64(count)
            }
            offset += Int64(count)
        }
        if scrubbed > 0 {
            try current.flushData()
        }
        var next = cursor.segment + 1
        while DataDirectory.exists(self.filePath(next)) {
            let file = try self.file(next)
            let length = try file.size()
            try Self.fill(file, from: 0, count: length, with: OverwriteStream())
            try file.flushData()
            self.open.withLock { _ = $0.removeValue(forKey: next) }
            self.sizes.withLock { _ = $0.removeValue(forKey: next) }
            guard unlink(self.filePath(next)) == 0 else {
                throw POSIXFailure.error("unlink", path: self.filePath(next))
            }
            try DataDirectory.flushDirectory(self.path)
            scrubbed += length
            next += 1
        }
        return scrubbed
    }
}

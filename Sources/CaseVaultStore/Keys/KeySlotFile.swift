internal import CCaseVaultShims
internal import CaseVaultCore
internal import CaseVaultFiles
internal import CaseVaultSealing
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// `keyslots`: a file of fixed-size slots, each a wrapped data key. Shredding overwrites a slot in place.
/// The file grows by `growth` zeroed slots at a time, ahead of use, so that writing a new slot overwrites a
/// block that exists and its flush changes no file size (see `Segments.growth`).
///
/// A flush that fails may have lost what it was to make durable while the pages still read back (Linux marks
/// them clean after a writeback error: the "fsyncgate" lesson). So the file keeps each slot written since
/// the last flush that succeeded, and after a failure every flush writes them again before its own: what
/// the page cache shows is never trusted to be on the disk. Writes and flushes come from the only writer,
/// but for a put batch whose commit failed, which scrubs its slots and flushes while the batch after it may
/// be writing: that batch fails too (`RecordStore.BatchFailures`) and scrubs its own.
final class KeySlotFile: Sendable {
    static let growth: Int64 = 8192
    private let handle: PosixFile
    private let capacity: Mutex<Int64>
    private let unflushed = Mutex(Unflushed())

    /// The slots written since the last flush that succeeded, and whether a flush failed since.
    private struct Unflushed {
        var slots: [Int64: [UInt8]] = [:]
        var failed = false
    }

    init(path: String) throws(CaseVaultError) {
        self.handle = try PosixFile(path: path, flags: O_RDWR | O_CREAT, mode: 0o600)
        try DataDirectory.checkPrivate(try self.handle.status(), path: path, isDirectory: false)
        // On btrfs a slot overwrite must land on the same blocks: no copy-on-write for this file. The flag
        // takes only while the file is empty, so it is set at creation; elsewhere the call fails harmlessly.
        if try self.handle.size() == 0 {
            _ = casevault_set_nocow(self.handle.descriptor)
        }
        self.capacity = Mutex(try self.handle.size() / Int64(KeySlot.size))
    }

    /// Slots that exist in the file, written or not.
    func slotCount() throws(CaseVaultError) -> Int64 {
        (try self.handle.size() + Int64(KeySlot.size) - 1) / Int64(KeySlot.size)
    }

    func read(_ slot: Int64) throws(CaseVaultError) -> [UInt8] {
        try self.handle.read(count: KeySlot.size, at: slot * Int64(KeySlot.size))
    }

    /// `count` slots from `first` in one read (short at the end of the file).
    func readRange(_ first: Int64, count: Int64) throws(CaseVaultError) -> [UInt8] {
        var bytes = try self.handle.read(count: Int(count) * KeySlot.size, at: first * Int64(KeySlot.size))
        if bytes.count < Int(count) * KeySlot.size {
            bytes += [UInt8](repeating: 0, count: Int(count) * KeySlot.size - bytes.count)
        }
        return bytes
    }

    func write(_ slot: Int64, _ bytes: [UInt8]) throws(CaseVaultError) {
        precondition(bytes.count == KeySlot.size, "a key slot is \(KeySlot.size) bytes")
        let capacity = self.capacity.withLock { $0 }
        if slot >= capacity {
            let target = slot + Self.growth
            // Flushed at once (`Segments.grow`): a slot written here later changes data, never the file's
            // blocks. A failure here may have taken the error of slots written since the last flush that
            // succeeded: the next flush writes them again.
            do throws(CaseVaultError) {
                try Segments.grow(
                    self.handle, from: capacity * Int64(KeySlot.size), to: target * Int64(KeySlot.size))
            } catch {
                self.unflushed.withLock { $0.failed = true }
                throw error
            }
            self.capacity.withLock { $0 = max($0, target) }
        }
        // Kept before the write: a write that fails may have reached the page cache in part.
        self.unflushed.withLock { $0.slots[slot] = bytes }
        do throws(CaseVaultError) {
            try self.handle.write(bytes, at: slot * Int64(KeySlot.size))
        } catch {
            self.unflushed.withLock { $0.failed = true }
            throw error
        }
    }

    /// Overwrites a slot with random bytes (not yet flushed).
    func scrub(_ slot: Int64) throws(CaseVaultError) {
        // A slot past the file's grown space was never written: nothing to scrub, and no growth to make (the
        // undo of a batch whose growth failed would otherwise try it again, on a failing disk, per slot).
        guard slot < self.capacity.withLock({ $0 }) else { return }
        try self.write(slot, KeySlot.scrubbed())
    }

    /// Makes the slot file's writes durable: every write since the last flush that succeeded, those a
    /// failed flush may have lost among them.
    func flush() throws(CaseVaultError) {
        let again = self.unflushed.withLock { $0.failed ? $0.slots : [:] }
        for (slot, bytes) in again.sorted(by: { $0.key < $1.key }) {
            try self.handle.write(bytes, at: slot * Int64(KeySlot.size))
        }
        do throws(CaseVaultError) {
            try self.handle.flushData()
        } catch {
            self.unflushed.withLock { $0.failed = true }
            throw error
        }
        self.unflushed.withLock { $0 = Unflushed() }
    }

    /// Writes the first `count` slots again, as the page cache shows them, and flushes: what another open of
    /// the file (an earlier run of the daemon) wrote before a flush that failed is on the disk afterwards,
    /// though nothing here remembers it. Called as the only writer.
    func rewriteAndFlush(count: Int64) throws(CaseVaultError) {
        // 1 MiB at a time, so that memory stays flat however large the file.
        var first: Int64 = 0
        while first < count {
            let take = min(Self.growth, count - first)
            let bytes = try self.handle.read(count: Int(take) * KeySlot.size, at: first * Int64(KeySlot.size))
            try self.handle.write(bytes, at: first * Int64(KeySlot.size))
            first += take
        }
        try self.flush()
    }

}

/// Which slot each new record gets: the lowest freed slot first, else one past the high-water mark.
/// Its state is only touched by the writer that holds the write queue, and persisted in the index in the
/// same transaction that uses it.
struct SlotAllocator {
    var free: [Int64]
    var highWater: Int64

    mutating func take() -> Int64 {
        if let slot = self.free.popLast() {
            return slot
        }
        defer { self.highWater += 1 }
        return self.highWater
    }
}

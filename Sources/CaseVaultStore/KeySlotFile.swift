#if canImport(Glibc)
internal import Glibc
#endif
internal import CaseVaultCore

/// `keyslots`: a file of fixed-size slots, each a wrapped data key. Shredding overwrites a slot in place.
final class KeySlotFile: Sendable {
    private let handle: PosixFile

    init(path: String) throws(CaseVaultError) {
        self.handle = try PosixFile(path: path, flags: O_RDWR | O_CREAT, mode: 0o600)
        try DataDirectory.checkPrivate(try self.handle.status(), path: path, isDirectory: false)
    }

    /// Slots that exist in the file, written or not.
    func slotCount() throws(CaseVaultError) -> Int64 {
        (try self.handle.size() + Int64(KeySlot.size) - 1) / Int64(KeySlot.size)
    }

    func read(_ slot: Int64) throws(CaseVaultError) -> [UInt8] {
        try self.handle.read(count: KeySlot.size, at: slot * Int64(KeySlot.size))
    }

    func write(_ slot: Int64, _ bytes: [UInt8]) throws(CaseVaultError) {
        precondition(bytes.count == KeySlot.size, "a key slot is \(KeySlot.size) bytes")
        try self.handle.write(bytes, at: slot * Int64(KeySlot.size))
    }

    /// Overwrites a slot with random bytes (not yet flushed).
    func scrub(_ slot: Int64) throws(CaseVaultError) {
        try self.write(slot, KeySlot.scrubbed())
    }

    /// Makes the slot file's writes durable.
    func flush() throws(CaseVaultError) {
        try self.handle.flushData()
    }

    /// Makes every write on the data directory's filesystem durable: slots, segments and directory entries.
    func flushFilesystem() throws(CaseVaultError) {
        try self.handle.flushFilesystem()
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

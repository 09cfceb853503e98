package import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles

#if canImport(Glibc)
internal import Glibc
#endif

/// The backup keys (`[backup] key_file`, beside the root key and outside the data directory): one random
/// key per backup, sealed under a subkey of the root key, in fixed 128-byte slots
///
///     "CVBK" | backup id (16) | created, ms (8, big-endian) | nonce ‖ sealed key ‖ tag (72) | zeros
///
/// Destroying a key overwrites its slot in place with random bytes and flushes, as a shred overwrites a key
/// slot: a backup whose key is gone can never be read again, by anyone.
package struct BackupKeyFile: Sendable {
    static let slotSize = 128
    static let magic = Array("CVBK".utf8)
    package let path: String

    package init(path: String) {
        self.path = path
    }

    package struct Entry {
        package var slot: Int
        package var id: [UInt8]
        /// Big-endian milliseconds, as written (and bound to the sealed key).
        package var created: [UInt8]
        package var sealed: [UInt8]

        package var createdAt: Int64 { Int64(bigEndianBytes: self.created) }
    }

    package func entries() throws(CaseVaultError) -> [Entry] {
        try self.openLocked(writing: false)?.entries ?? []
    }

    /// The existing key file, opened and locked (shared to read, exclusive to write), with its entries as
    /// read under the lock; `nil` when there is no file. The lock lasts as long as the returned file.
    private func openLocked(writing: Bool) throws(CaseVaultError) -> (file: PosixFile, entries: [Entry])? {
        guard DataDirectory.exists(self.path) else { return nil }
        try DataDirectory.checkPrivateFile(self.path)
        let file = try PosixFile(path: self.path, flags: writing ? O_RDWR : O_RDONLY)
        try file.lock(writing ? LOCK_EX : LOCK_SH, path: self.path)
        return (file, Self.entries(in: try file.readAll()))
    }

    /// Every key slot's entry in the file's bytes.
    private static func entries(in bytes: [UInt8]) -> [Entry] {
        stride(from: 0, to: bytes.count - Self.slotSize + 1, by: Self.slotSize).compactMap { start in
            let slot = Array(bytes[start..<(start + Self.slotSize)])
            guard Array(slot[0..<4]) == Self.magic else { return nil }
            return Entry(
                slot: start / Self.slotSize, id: Array(slot[4..<20]), created: Array(slot[20..<28]),
                sealed: Array(slot[28..<100]))
        }
    }

    /// Seals `key` for backup `id` into a free slot and flushes. (Package-visible: the fuzz targets make
    /// their test key file with it.)
    package func add(id: [UInt8], createdAt: Int64, key: BackupKey, sealing: SealingServices) throws(CaseVaultError) {
        let directory = DataDirectory.parent(of: self.path)
        if !directory.isEmpty { try DataDirectory.makeDirectory(directory, createParents: true) }
        let file = try PosixFile(path: self.path, flags: O_RDWR | O_CREAT, mode: 0o600)
        // At every add, not only when the file was made here: a flush of its name that failed is not left for
        // ever, with a backup's key written under a name a power cut would take.
        try DataDirectory.flushDirectory(directory.isEmpty ? "." : directory)
        try DataDirectory.checkPrivateFile(self.path)
        // Another backup (a thread here, or `casevaultctl`) may be choosing a slot at the same time: the
        // file is read and written under an exclusive lock, so that no two keys take the same slot.
        try file.lock(LOCK_EX, path: self.path)
        let bytes = try file.readAll()
        var free = bytes.count / Self.slotSize
        for start in stride(from: 0, to: bytes.count - Self.slotSize + 1, by: Self.slotSize)
        where Array(bytes[start..<(start + 4)]) != Self.magic {
            free = start / Self.slotSize
            break
        }
        let created = createdAt.bigEndianBytes
        let sealed = sealing.sealBackupKey(key, id: id, created: created)
        var slot = Self.magic + id + created + sealed
        slot += [UInt8](repeating: 0, count: Self.slotSize - slot.count)
        try file.write(slot, at: Int64(free * Self.slotSize))
        try file.flushData()
    }

    /// The key of backup `id`, or `nil` when there is none (destroyed, or another vault's backup).
    package func key(id: [UInt8], sealing: SealingServices) throws(CaseVaultError) -> BackupKey? {
        guard let entry = try self.entries().first(where: { $0.id == id }) else { return nil }
        return try sealing.openBackupKey(entry.sealed, id: id, created: entry.created)
    }

    /// Overwrites, with random bytes, every key made before `cutoff` (ms); returns how many. With
    /// `dryRun`, only counts them.
    ///
    /// Every slot that holds no key is overwritten again too, and flushed: one whose overwrite a failed flush
    /// lost reads back as random bytes while the disk still holds its key (Linux marks the pages clean after
    /// a writeback error: the "fsyncgate" lesson), and only writing it again makes the destruction durable.
    package func destroy(createdBefore cutoff: Int64, dryRun: Bool = false) throws(CaseVaultError) -> Int {
        guard let (file, entries) = try self.openLocked(writing: !dryRun) else { return 0 }
        let doomed = entries.filter { $0.createdAt < cutoff }
        guard !dryRun else { return doomed.count }
        let kept = Set(entries.filter { $0.createdAt >= cutoff }.map(\.slot))
        let slots = Int(try file.size()) / Self.slotSize
        guard slots > kept.count else { return 0 }
        for slot in 0..<slots where !kept.contains(slot) {
            // Never the magic by chance: such a slot would read as a key.
            var noise = Random.bytes(count: Self.slotSize)
            if noise[0] == Self.magic[0] { noise[0] = 0 }
            try file.write(noise, at: Int64(slot * Self.slotSize))
        }
        try file.flushData()
        return doomed.count
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
package import CaseVaultSealing

#if canImport(Glibc)
internal import Glibc
#endif

/// The copy of the shred ledger kept outside the data directory (`[backup] ledger_file`, by default
/// `shred.ledger` beside the backup key file), so that a restore made because the data directory was lost
/// still knows every record shredded before the loss. Text, one line per shredded record:
///
///     casevault shred ledger v1
///     <record id> <case id> <type> <shredded at, ms> <MAC, 32 hex>
///
/// with `-` for a case, type or time the ledger does not know. The MAC is keyed BLAKE2b under a subkey of
/// the root key (`cv-ledg1`) over the rest of the line: a line altered or forged, or another vault's file,
/// does not check out. A line taken out, or the file replaced by an older copy of itself, is not detected.
/// The file holds what the index's `shred_ledger` holds in clear, and nothing else.
///
/// The store appends a shred's lines once the shred is committed and before it returns (`append`), and
/// rewrites the file as the union of itself and the index at open, at each backup and at each sweep
/// (`rewrite`). Writers hold an exclusive `flock` on the file. A rewrite writes `<path>.new`, flushes it
/// and renames it into place, so a reader (which takes no lock) finds the old file or the new one whole;
/// a last line without its newline is an append that a crash cut short, and is left out.
package struct ShredLedgerFile: Sendable {
    static let header = "casevault shred ledger v1"
    /// Longer than any line the file holds (two ids, a type, a time, a MAC and four spaces).
    static let longestLine = 256

    package let path: String

    package init(path: String) {
        self.path = path
    }

    /// Whether there is a file at `path`.
    package var exists: Bool {
        DataDirectory.exists(self.path)
    }

    /// The directory the file lives in, whose entries a create or rename changes.
    private var directory: String {
        let parent = DataDirectory.parent(of: self.path)
        return parent.isEmpty ? "." : parent
    }

    // MARK: Reading

    /// Every entry the file holds, each line checked under `barrier`; `nil` when there is no file. The
    /// whole file is refused if one line does not check out: a restore must not half-trust it.
    /// (Package-visible for the fuzz targets.)
    package func entries(sealing: SealingServices) throws(CaseVaultError) -> [ShredLedgerEntry]? {
        guard DataDirectory.exists(self.path) else { return nil }
        try DataDirectory.checkPrivateFile(self.path)
        let parsed = Self.parse(try PosixFile(path: self.path, flags: O_RDONLY).readAll(), sealing: sealing)
        if let line = parsed.firstBad {
            throw CaseVaultError(
                .integrityFailure,
                "the shred ledger copy \(self.path) does not check out at line \(line): it was altered, or it is another vault's",
                field: "backup.ledger_file"
            )
        }
        return parsed.entries
    }

    /// The entries of the lines that check out, how many lines do not, and the first of those (from 1).
    static func parse(_ bytes: [UInt8], sealing: SealingServices) -> (
        entries: [ShredLedgerEntry], bad: Int, firstBad: Int?
    ) {
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        // What follows the last newline: nothing, or an append that a crash cut short.
        lines.removeLast()
        var entries: [ShredLedgerEntry] = []
        var bad = 0
        var firstBad: Int?
        for (number, line) in lines.enumerated() {
            if number == 0 {
                if line.elementsEqual(Self.header.utf8) { continue }
            } else if let entry = Self.entry(line, sealing: sealing) {
                entries.append(entry)
                continue
            }
            bad += 1
            firstBad = firstBad ?? number + 1
        }
        return (entries, bad, firstBad)
    }

    /// The entry one line spells, if its MAC checks out.
    private static func entry(_ line: ArraySlice<UInt8>, sealing: SealingServices) -> ShredLedgerEntry? {
        guard line.count <= Self.longestLine, let space = line.lastIndex(of: UInt8(ascii: " ")) else { return nil }
        let body = Array(line[line.startIndex..<space])
        guard let mac = Hex.decode(String(decoding: line[(space + 1)...], as: UTF8.self)), mac.count == 16,
            Memory.constantTimeEquals(mac, sealing.shredLedgerMAC(body))
        else { return nil }
        let fields = body.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        guard fields.count == 4 else { return nil }
        var time: Int64?
        if fields[3] != ShredLedgerEntry.unknown {
            guard let milliseconds = Int64(fields[3]) else { return nil }
            time = milliseconds
        }
        return try? ShredLedgerEntry(recordID: fields[0], caseID: fields[1], type: fields[2], shreddedAt: time)
    }

    /// One line for `entry`: its fields, their MAC and a newline.
    static func line(_ entry: ShredLedgerEntry, sealing: SealingServices) -> [UInt8] {
        let body = Array(entry.line.utf8)
        return body + Array(" \(Hex.encode(sealing.shredLedgerMAC(body)))\n".utf8)
    }

    // MARK: Writing

    /// Appends a line for each of `entries` and flushes, creating the file (0600, with its header) if it
    /// is missing. A partial last line that a crash left is cut off first.
    func append(_ entries: [ShredLedgerEntry], sealing: SealingServices) throws(CaseVaultError) {
        guard !entries.isEmpty else { return }
        let (file, created) = try self.openLocked()
        var end = try file.size()
        if end > 0 {
            let length = min(end, Int64(Self.longestLine))
            let tail = try file.read(count: Int(length), at: end - length)
            if tail.last != UInt8(ascii: "\n") {
                if let newline = tail.lastIndex(of: UInt8(ascii: "\n")) {
                    end = end - length + Int64(newline) + 1
                } else if length == end {
                    end = 0
                } else {
                    throw CaseVaultError(
                        .integrityFailure,
                        "the shred ledger copy \(self.path) ends in a line longer than any it holds; move it aside"
                    )
                }
                try file.truncate(to: end)
            }
        }
        var bytes: [UInt8] = end == 0 ? Array((Self.header + "\n").utf8) : []
        for entry in entries {
            bytes += Self.line(entry, sealing: sealing)
        }
        try file.write(bytes, at: end)
        try file.flushData()
        if created { try DataDirectory.flushDirectory(self.directory) }
    }

    /// Rewrites the file as the union of the entries it holds and those `current` returns (called once
    /// the lock is held, so that no append falls between the two), through `<path>.new`, flushed and
    /// renamed into place, then the directory flushed. Lines that do not check out (another vault's file,
    /// or damage) are dropped: returns how many.
    @discardableResult
    func rewrite(
        sealing: SealingServices, adding current: () throws(CaseVaultError) -> [ShredLedgerEntry]
    ) throws(CaseVaultError) -> Int {
        let (file, _) = try self.openLocked()
        let held = Self.parse(try file.readAll(), sealing: sealing)
        let indexed = try current()
        var bytes = Array((Self.header + "\n").utf8)
        for entry in ShredLedgerEntry.union([held.entries, indexed]) {
            bytes += Self.line(entry, sealing: sealing)
        }
        let temporary = self.path + ".new"
        unlink(temporary)
        do {
            let handle = try PosixFile(path: temporary, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
            try handle.write(bytes, at: 0)
            try handle.flush()
        }
        guard rename(temporary, self.path) == 0 else { throw POSIXFailure.error("rename", path: self.path) }
        try DataDirectory.flushDirectory(self.directory)
        // Held on the file renamed over until now: a writer waiting for it then finds the new file in place.
        Self.unlock(file)
        return held.bad
    }

    /// The file, created (0600) if it is missing, under an exclusive lock, and whether this call created
    /// it. A rewrite may rename a new file into place between the open and the lock: the lock is then
    /// taken again on the file the path names now.
    private func openLocked() throws(CaseVaultError) -> (file: PosixFile, created: Bool) {
        let parent = DataDirectory.parent(of: self.path)
        if !parent.isEmpty { try DataDirectory.makeDirectory(parent, createParents: true) }
        while true {
            let existed = DataDirectory.exists(self.path)
            let file = try PosixFile(path: self.path, flags: O_RDWR | O_CREAT, mode: 0o600)
            try file.lock(LOCK_EX, path: self.path)
            let held = try file.status()
            var named = stat()
            guard lstat(self.path, &named) == 0 else {
                guard errno == ENOENT else { throw POSIXFailure.error("stat", path: self.path) }
                continue
            }
            if named.st_dev == held.st_dev && named.st_ino == held.st_ino {
                try DataDirectory.checkPrivate(held, path: self.path, isDirectory: false)
                return (file, !existed)
            }
        }
    }

    private static func unlock(_ file: PosixFile) {
        _ = flock(file.descriptor, LOCK_UN)
    }
}

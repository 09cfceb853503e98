internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Dispatch
internal import Foundation
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

// The check at attach: the log's files against the anchor and the chain key, and what accepting a break moves aside.
extension AuditLog {
    /// What the check at attach found, and from where the log cannot be trusted.
    struct Finding {
        var description: String
        /// The first line that does not check out, and the last entry before it that does: accepting the
        /// break moves the log aside from there. `nil` when nothing in the log itself is bad.
        var cut: Cut?
        /// Files of the log are missing before this entry: accepting the break moves the files before it
        /// aside, and the log begins here.
        var floor: UInt64?
    }

    struct Cut {
        /// The file the bad line is in, by its first entry, and where the line starts.
        var file: UInt64
        var offset: Int64
        var last: AuditAnchor
    }

    /// A file of the log as the check reads it, oldest first; the last is `log`.
    struct Part {
        var name: String
        var first: UInt64
        var file: PosixFile
        /// Where its entries end (`log`: the end of the last batch written).
        var end: Int64
    }

    private func parts() throws(CaseVaultError) -> [Part] {
        let (fileFirst, end) = self.chain.withLock { ($0.fileFirst, $0.end) }
        var parts: [Part] = []
        for archived in try AuditFiles.list(self.directory) {
            guard let first = archived.first else { continue }
            let file = try PosixFile(path: self.directory + "/" + archived.name, flags: O_RDONLY)
            parts.append(Part(name: archived.name, first: first, file: file, end: try file.size()))
        }
        parts.append(Part(name: AuditFiles.current, first: fileFirst, file: self.file, end: end))
        return parts
    }

    /// Whether the files follow one another: each rotated file begins with the entry its name gives and
    /// ends with the entry before the next file's first, by number and hash, and the oldest begins no later
    /// than the log's own record of its retention (the newest `rotate` checkpoint's `first_kept`). Reads
    /// the first and the last line of each file. With `signer` (at a start), a first line counts only if
    /// its MAC verifies (and a `rotate` checkpoint's hash follows from the `previous` it names), so that
    /// nobody without the root key can rewrite what a file says the log keeps or where it follows from.
    static func checkFiles(_ parts: [Part], signer: AuditSigner?) throws(CaseVaultError) -> Finding? {
        func trusted(_ line: AuditLine.Parsed) -> Bool {
            guard let signer else { return true }
            guard let mac = line.mac, Memory.constantTimeEquals(signer.mac(AuditChain.macMessage(line.hash)), mac)
            else { return false }
            guard line.entry.reason == AuditChain.rotateReason, line.entry.kind == .checkpoint else { return true }
            guard let text = line.entry.previous, let previous = Hex.decode(text) else { return false }
            return AuditChain.hash(previous: previous, json: line.json) == line.hash
        }
        var firsts: [AuditLine.Parsed?] = []
        for part in parts {
            firsts.append(part.end == 0 ? nil : try AuditFiles.firstLine(part.file))
        }
        var problems: [String] = []
        var floor: UInt64?
        var kept: UInt64 = 1
        for (index, part) in parts.enumerated() {
            let isRotated = index < parts.count - 1
            guard let first = firsts[index] else {
                if isRotated {
                    problems.append("the rotated file \(part.name) is empty")
                    floor = parts[index + 1].first
                }
                continue
            }
            guard !isRotated || trusted(first) else {
                problems.append("the first entry of \(part.name) does not verify under the root key")
                floor = parts[index + 1].first
                continue
            }
            if first.entry.reason == AuditChain.rotateReason, let value = first.entry.firstKept, trusted(first) {
                kept = max(kept, value)
            }
            guard isRotated else { continue }
            guard first.entry.seq == part.first else {
                problems.append(
                    "the rotated file \(part.name) begins at entry \(first.entry.seq), not the one its name gives")
                floor = parts[index + 1].first
                continue
            }
            guard let next = firsts[index + 1] else { continue }
            let follows: Bool
            if let last = try AuditFiles.lastLine(part.file), next.entry.seq > 0, last.entry.seq == next.entry.seq - 1 {
                if next.entry.reason == AuditChain.rotateReason, let text = next.entry.previous {
                    follows = trusted(next) && Hex.decode(text) == last.hash
                } else {
                    follows = AuditChain.hash(previous: last.hash, json: next.json) == next.hash
                }
            } else {
                follows = false
            }
            guard follows else {
                problems.append(
                    "\(parts[index + 1].name) does not follow from \(part.name): entries between them are missing or were replaced"
                )
                floor = next.entry.seq
                continue
            }
        }
        if let oldest = firsts.compactMap({ $0 }).first?.entry.seq, oldest > kept {
            problems.append(
                "the log begins at entry \(oldest) but keeps entries from \(kept): its oldest files were removed")
            floor = max(floor ?? oldest, oldest)
        }
        guard !problems.isEmpty else { return nil }
        return Finding(description: problems.joined(separator: "; "), cut: nil, floor: floor)
    }

    /// Whether the files of the log in `directory` follow one another (`checkFiles`), without the root key
    /// and without the daemon: what is wrong, or `nil`. For `casevaultctl doctor`.
    public static func filesProblem(directory: String) -> String? {
        do throws(CaseVaultError) {
            var parts: [Part] = []
            for found in try AuditFiles.list(directory) {
                let file = try PosixFile(path: directory + "/" + found.name, flags: O_RDONLY)
                var first = found.first ?? UInt64.max
                if found.first == nil, let line = try AuditFiles.firstLine(file) { first = line.entry.seq }
                parts.append(Part(name: found.name, first: first, file: file, end: try file.size()))
            }
            return try Self.checkFiles(parts, signer: nil)?.description
        } catch {
            return error.message
        }
    }

    /// What is wrong with the log against `store`'s anchor, or `nil` when it checks out: the files must
    /// follow one another (`checkFiles`), the anchor's entry must be where it says and follow from the entry
    /// before it, and every entry after it must check out under `signer`. With no anchor (a new vault, a
    /// damaged anchor) or a fresh one (seq 0, after a restore), every entry from the first is checked. With
    /// files missing, the walk begins after the gap (from the anchor, when it lies after it): everything
    /// found is named together, so that accepting one break cannot pass over another.
    func check(against store: any AuditAnchorKeeper, signer: AuditSigner) throws(CaseVaultError) -> Finding? {
        var problem: String?
        var anchor = AuditAnchor.empty
        do {
            switch try store.auditAnchor() {
            case .none(let vaultIsNew):
                if !vaultIsNew {
                    problem =
                        "the index holds records but no audit anchor (it was removed, or the vault predates anchors)"
                }
            case .anchored(let value):
                anchor = value
            }
        } catch {
            guard error.code == .integrityFailure else { throw error }
            problem = error.message
        }
        // The anchor first, then the log: a flush may move the anchor on meanwhile, never past the log.
        let entries = self.chain.withLock { $0.seq }
        let parts = try self.parts()
        let files = try Self.checkFiles(parts, signer: signer)
        let floorIndex = files?.floor.flatMap { floor in parts.firstIndex { $0.first >= floor } } ?? 0
        let walked = try self.walk(
            parts, from: floorIndex, gap: files != nil, anchor: anchor, entries: entries, signer: signer)
        let found = [problem, files?.description, walked?.description].compactMap { $0 }
        guard !found.isEmpty else { return nil }
        return Finding(
            description: found.joined(separator: "; "), cut: walked?.cut, floor: files?.floor ?? walked?.floor)
    }

    /// The walk under the root key: from the anchor's entry (or, when there is none or it lies before a gap
    /// in the files, from the first entry of `parts[start]`) to the end.
    private func walk(
        _ parts: [Part], from start: Int, gap: Bool, anchor: AuditAnchor, entries: UInt64, signer: AuditSigner
    ) throws(CaseVaultError) -> Finding? {
        var walker = AuditWalker(previous: AuditChain.genesis, seq: 0, signer: signer, expectedKey: nil)
        var startPart = start
        var windowStart: Int64 = 0
        var position = 0
        var lastStart: Int64 = 0
        var lastFile = parts[start].first
        var began = false
        var bytes: [UInt8] = []
        let anchorPart = parts.firstIndex(where: { $0.first == anchor.file })
        if anchor.seq > 0, !gap || (anchorPart.map { $0 >= start } ?? false) {
            guard let index = anchorPart, anchor.seq <= entries, anchor.offset < parts[index].end else {
                let oldest = parts[0].first
                return Finding(
                    description: "the log ends at entry \(entries) but the index's anchor names entry \(anchor.seq)"
                        + (anchor.file < oldest ? " in a file that is gone" : "")
                        + ": entries \(anchor.seq <= entries ? anchor.seq : entries + 1) to \(anchor.seq) at least were cut away, "
                        + "or the log was replaced",
                    cut: nil, floor: anchor.file < oldest && anchor.seq <= entries ? oldest : nil
                )
            }
            // From the line before the anchor's (its hash is needed), to the end of that file.
            let part = parts[index]
            startPart = index
            windowStart = max(0, anchor.offset - 16 << 10)
            bytes = try part.file.read(count: Int(part.end - windowStart), at: windowStart)
            let anchorAt = Int(anchor.offset - windowStart)
            let before = bytes[..<max(0, anchorAt - 1)].lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
            let lineEnd = bytes[anchorAt...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.endIndex
            guard anchorAt == 0 || bytes[anchorAt - 1] == UInt8(ascii: "\n"),
                let parsed = AuditLine.parse(bytes[anchorAt..<lineEnd]), parsed.entry.seq == anchor.seq,
                parsed.hash == anchor.hash
            else {
                return Finding(
                    description: "entry \(anchor.seq) is not the one the index's anchor names: the log was replaced",
                    cut: Cut(file: parts[start].first, offset: 0, last: .empty)
                )
            }
            // The anchor's own entry: its JSON must give its hash (when the entry before it is at hand), and
            // its MAC must verify.
            var previous: [UInt8]?
            if anchor.seq == 1 {
                previous = AuditChain.genesis
            } else if anchorAt > 0, let line = AuditLine.parse(bytes[before..<(anchorAt - 1)]),
                line.entry.seq == anchor.seq - 1
            {
                previous = line.hash
            } else if anchorAt == 0, let text = parsed.entry.previous {
                previous = Hex.decode(text)
            }
            if let previous {
                walker = AuditWalker(previous: previous, seq: anchor.seq - 1, signer: signer, expectedKey: nil)
                if let reason = walker.step(parsed) {
                    return Finding(
                        description: "entry \(anchor.seq), the one the index's anchor names: \(reason)",
                        cut: Cut(file: parts[start].first, offset: 0, last: .empty)
                    )
                }
            } else {
                walker = AuditWalker(previous: anchor.hash, seq: anchor.seq, signer: signer, expectedKey: nil)
            }
            if parsed.entry.kind == .checkpoint, parsed.entry.reason == "seal" { walker.sealSuccessAllowed = true }
            position = lineEnd + 1
            lastStart = anchor.offset
            lastFile = part.first
            began = true
        } else {
            bytes = try parts[start].file.read(count: Int(parts[start].end), at: 0)
        }
        for index in startPart..<parts.count {
            let part = parts[index]
            if index > startPart {
                windowStart = 0
                position = 0
                bytes = try part.file.read(count: Int(part.end), at: 0)
            }
            let end = bytes.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0
            while position < end {
                guard let newline = bytes[position..<end].firstIndex(of: UInt8(ascii: "\n")) else { break }
                var reason: String?
                if let parsed = AuditLine.parse(bytes[position..<newline]) {
                    if !began {
                        began = true
                        reason = walker.begin(parsed)
                    }
                    reason = reason ?? walker.step(parsed)
                } else {
                    reason = "it is not an entry (its shape was altered)"
                }
                if let reason {
                    let last = AuditAnchor(seq: walker.seq, hash: walker.previous, offset: lastStart, file: lastFile)
                    return Finding(
                        description: "entry \(walker.seq &+ 1) (\(part.name)): \(reason)",
                        cut: Cut(file: part.first, offset: windowStart + Int64(position), last: last)
                    )
                }
                lastStart = windowStart + Int64(position)
                lastFile = part.first
                position = newline + 1
            }
        }
        return nil
    }

    /// Moves the log from `cut` on aside (`<file>.broken-<time>`, made durable) together with the head: the
    /// rest of the cut's file is copied aside and cut from it, later files are renamed aside, and the chain
    /// carries on from `cut.last` (in a new, empty `log` when the cut was in a rotated file).
    func setAside(from cut: Cut) throws(CaseVaultError) {
        let stamp = self.clock()
        let parts = try self.parts()
        guard let index = parts.firstIndex(where: { $0.first == cut.file }) else { return }
        try self.chain.withLock { chain throws(CaseVaultError) in
            let part = parts[index]
            let length = Int(part.end - cut.offset)
            let whole = index < parts.count - 1 && cut.offset == 0
            if length > 0, !whole {
                let bytes = try part.file.read(count: length, at: cut.offset)
                let aside = try PosixFile(
                    path: self.directory + "/" + part.name + ".broken-\(stamp)", flags: O_WRONLY | O_CREAT | O_EXCL,
                    mode: 0o600
                )
                try aside.write(bytes, at: 0)
                try aside.flushData()
            }
            if index == parts.count - 1 {
                if length > 0 {
                    let failuresBefore = self.shared.withLock { $0.failures }
                    try self.file.write([UInt8](repeating: 0, count: length), at: cut.offset)
                    try self.flushOwn(self.file, file: chain.fileFirst, failuresBefore: failuresBefore)
                }
                chain.end = cut.offset
            } else {
                // The new, empty `log` is made and opened (twice, writer and rider) under the rotation's
                // prepared name before anything is moved: a failure to open it leaves the log as it was, and a
                // prepared file left behind is dropped by the next open, or becomes `log` when there is none.
                let (fresh, preparedPath) = try self.makePrepared()
                if !whole {
                    let archived = try PosixFile(path: self.directory + "/" + part.name, flags: O_RDWR)
                    try archived.truncate(to: cut.offset)
                    try archived.flushData()
                }
                for later in parts[(whole ? index : index + 1)...] {
                    let path = self.directory + "/" + later.name
                    guard rename(path, path + ".broken-\(stamp)") == 0 else {
                        throw POSIXFailure.error("rename", path: path)
                    }
                }
                guard rename(preparedPath, self.logPath) == 0 else {
                    throw POSIXFailure.error("rename", path: preparedPath)
                }
                self.current.withLock { $0 = fresh }
                chain.end = 0
                chain.allocated = 0
                chain.fileFirst = cut.last.seq + 1
            }
            if DataDirectory.exists(self.headPath) {
                guard rename(self.headPath, self.headPath + ".broken-\(stamp)") == 0 else {
                    throw POSIXFailure.error("rename", path: self.headPath)
                }
            }
            try DataDirectory.flushDirectory(self.directory)
            chain.seq = cut.last.seq
            chain.hash = cut.last.seq == 0 ? AuditChain.genesis : cut.last.hash
            chain.lastStart = cut.last.offset
            chain.lastFile = cut.last.file
            chain.lastCheckpoint = cut.last.seq
            chain.dirtyBytes = 0
            // What the cut zeroed or moved away is durable as it now stands; nothing past it is known durable.
            // Under the chain lock: an entry written after the cut is not counted durable with it.
            let (first, end) = (chain.fileFirst, chain.end)
            self.shared.withLock { state in
                state.writtenTail = cut.last
                state.durable = (first, min(end, state.durable.flatMap { $0.file == first ? $0.end : nil } ?? 0))
                state.rideEnd = nil
                state.layout += 1
            }
        }
    }

    /// Moves the rotated files that begin before `floor` aside (`<file>.broken-<time>`): files missing
    /// after them leave the log to begin at `floor`.
    func setAside(before floor: UInt64) throws(CaseVaultError) {
        let stamp = self.clock()
        var moved = false
        for archived in try AuditFiles.list(self.directory) {
            guard let first = archived.first, first < floor else { continue }
            let path = self.directory + "/" + archived.name
            guard rename(path, path + ".broken-\(stamp)") == 0 else { throw POSIXFailure.error("rename", path: path) }
            moved = true
        }
        if moved { try DataDirectory.flushDirectory(self.directory) }
    }
}

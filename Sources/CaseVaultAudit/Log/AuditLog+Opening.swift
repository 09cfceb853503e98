public import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
public import Dispatch
internal import Foundation
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

// Opening the log: finishing or undoing an interrupted rotation, cutting a torn end and setting it aside.
extension AuditLog {
    /// Opens (creating on first use) the log in `directory`: finishes or undoes a rotation a crash
    /// interrupted, cuts a torn last line and checks that the last entry follows from the one before it. A
    /// log whose end does not check out is refused: the daemon does not append to a log that has been
    /// tampered with. The MACs, the anchor and that the files follow one another are checked once the root
    /// key is known (`attach(to:)`); with `acceptBreak`, a mismatch there is recorded, not refused.
    /// `copyLimit` bounds the copy of what is not yet known durable, written again after a failed flush.
    public static func open(
        directory: String,
        checkpointInterval: Int = AuditLog.defaultCheckpointInterval,
        anchorInterval: DispatchTimeInterval = AuditLog.defaultAnchorInterval,
        retention: Retention = .standard,
        acceptBreak: Bool = false,
        copyLimit: Int = AuditLog.defaultCopyLimit,
        clock: @escaping @Sendable () -> Int64
    ) throws(CaseVaultError) -> (AuditLog, Recovery) {
        try DataDirectory.makeDirectory(directory, createParents: false)
        let path = directory + "/" + AuditFiles.current
        let prepared = directory + "/" + AuditFiles.prepared
        if DataDirectory.exists(prepared) {
            // A rotation stopped after its new file was whole: past the first rename, it is finished; before
            // it, the new file is dropped (its checkpoint was never acknowledged). So is a break set aside at
            // attach (`setAside(from:)`), whose new file is empty: it becomes `log` once `log` was moved aside.
            if DataDirectory.exists(path) {
                guard unlink(prepared) == 0 else { throw POSIXFailure.error("unlink", path: prepared) }
            } else {
                guard rename(prepared, path) == 0 else { throw POSIXFailure.error("rename", path: prepared) }
            }
        }
        if !DataDirectory.exists(path) {
            _ = try PosixFile(path: path, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        }
        // At every open, not only when the names changed here: a flush of them that failed is not left for
        // ever, with the entries written into `log` under a name a power cut would take.
        try DataDirectory.flushDirectory(directory)
        try DataDirectory.checkPrivateFile(path)
        let file = try PosixFile(path: path, flags: O_RDWR)
        let size = try file.size()
        // The rotated file before `log`: where the chain stands while `log` is empty.
        let before = try AuditFiles.list(directory).last(where: { $0.first != nil })
        let base = { () throws(CaseVaultError) -> (AuditLine.Tail, lastStart: Int64, file: UInt64) in
            guard let before, let first = before.first else {
                return (AuditLine.Tail(seq: 0, hash: AuditChain.genesis), 0, 1)
            }
            let archived = try PosixFile(path: directory + "/" + before.name, flags: O_RDONLY)
            let (tail, lastStart, end, contentEnd) = try Self.readTail(archived, size: try archived.size()) {
                () throws(CaseVaultError) in
                throw Self.damaged()
            }
            guard tail.seq >= first, end == contentEnd else { throw Self.damaged() }
            return (tail, lastStart, first)
        }
        // Before anything else reads or writes the log's end: an end a power cut tore is set aside.
        let torn = try Self.tornEnd(file, size: size, head: try Self.readHead(directory + "/head"))
        let aside = try torn.map { torn throws(CaseVaultError) in
            try Self.setAside(
                file, from: torn.from, to: torn.contentEnd, in: directory,
                name: "\(AuditFiles.tornPrefix)\(clock())-after-\(torn.after)")
        }
        var (tail, lastStart, end, contentEnd) = try Self.readTail(file, size: size) { () throws(CaseVaultError) in
            try base().0
        }
        let discarded = Int(contentEnd - end)
        if discarded > 0 {
            // A torn entry is zeroed, as the unused space after it is.
            try file.write([UInt8](repeating: 0, count: discarded), at: end)
            try file.flushData()
        }
        var lastFile: UInt64
        let fileFirst: UInt64
        if end == 0 {
            let found = try base()
            guard found.0.seq < UInt64.max else { throw Self.damaged() }
            (tail, lastStart, lastFile) = (found.0, found.lastStart, found.file)
            fileFirst = tail.seq + 1
        } else {
            guard let first = try AuditFiles.firstLine(file) else { throw Self.damaged() }
            fileFirst = first.entry.seq
            lastFile = fileFirst
        }
        var chain = Chain(
            // The reserved space past the entries is not trusted: a growth that failed in the last run (the
            // disk failing, then a restart without a remount) may have left a size ext4 never wrote. The
            // first write grows again from the entries' end, cutting it back and flushing.
            seq: tail.seq, hash: tail.hash, end: end, lastStart: lastStart, allocated: end, lastCheckpoint: tail.seq,
            dirtyBytes: 0,
            fileFirst: fileFirst, lastFile: lastFile
        )
        chain.unflushed.limit = max(0, copyLimit)
        let log = AuditLog(
            directory: directory, file: try LogFile(file, path: path), chain: chain,
            checkpointInterval: checkpointInterval,
            anchorInterval: anchorInterval, retention: retention,
            acceptBreak: acceptBreak, clock: clock
        )
        // This open's torn end, and any an earlier open set aside whose break no attach recorded.
        let pending = try AuditFiles.unrecordedTornEnds(directory)
        log.shared.withLock { state in
            state.durable = (fileFirst, end)
            state.tornFiles = pending.map(\.name)
            if !pending.isEmpty {
                state.tornAtOpen = pending.map { Self.tornDescription(after: $0.after, aside: $0.name) }.joined(
                    separator: "; ")
            }
        }
        return (log, Recovery(discardedBytes: discarded, entries: tail.seq, tornEndSetAside: aside))
    }

    static func tornDescription(after seq: UInt64, aside: String) -> String {
        "a power cut tore the log after entry \(seq) before it was flushed, so no answer had waited for what followed; "
            + "it was set aside in audit/\(aside)"
    }

    /// How far back from the end of `log` a torn end is looked for: more than the log writes between two
    /// flushes, however busy.
    static let tornScanBytes: Int64 = 16 << 20

    /// Where the end of `file` that a power cut tore begins, and where its written bytes end; `nil` when
    /// nothing is torn so. A block the log wrote but had not flushed comes back from a power cut as the zeros
    /// the file was grown with, while a later block may have reached the disk; the log's entries hold no
    /// zero byte. The log is written in order under one lock and a flush makes everything written before it
    /// durable (after a failed flush the log rewrites what that flush should have made durable), so no
    /// flush finished after such a block was written, and no answer waited for any entry from its line on.
    /// So the earliest whole line, in the last `tornScanBytes` before the last written byte, that holds a
    /// zero byte begins a torn end; unless the line before it is older than the head, the checkpoint the
    /// log last knew flushed, which a power cut cannot take.
    private static func tornEnd(
        _ file: PosixFile, size: Int64, head: [UInt8]?
    ) throws(CaseVaultError) -> (from: Int64, contentEnd: Int64, after: UInt64)? {
        guard size > 0 else { return nil }
        // The last written byte, looked for backwards: the file is zero-filled past its entries.
        var contentEnd: Int64 = 0
        var probe = size
        while probe > 0 && contentEnd == 0 {
            let start = max(0, probe - (1 << 20))
            if let last = try file.read(count: Int(probe - start), at: start).lastIndex(where: { $0 != 0 }) {
                contentEnd = start + Int64(last + 1)
            }
            probe = start
        }
        guard contentEnd > 0 else { return nil }
        let start = max(0, contentEnd - Self.tornScanBytes)
        let bytes = try file.read(count: Int(contentEnd - start), at: start)
        // Whole lines only: the first may have begun before the region.
        var lineStart = start == 0 ? 0 : (bytes.firstIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? bytes.count)
        var previous: [Range<Int>] = []
        while lineStart < bytes.count {
            let lineEnd = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            if bytes[lineStart..<lineEnd].contains(0) {
                // What stays must be the log's: the last entry before the torn line follows from the one
                // before it (or is the file's first), before anything is changed.
                let last = previous.last.flatMap { AuditLine.parse(bytes[$0]) }
                if let last, previous.count >= 2 {
                    guard let before = AuditLine.parse(bytes[previous[previous.count - 2]]),
                        last.entry.seq == before.entry.seq &+ 1,
                        AuditChain.hash(previous: before.hash, json: last.json) == last.hash
                    else { return nil }
                } else if start > 0 || (previous.count == 1 && last == nil) {
                    return nil
                }
                // The head's entry was flushed before the head was written: a zero line before it is damage.
                // A head that cannot be read gives no such bound, so nothing is taken for torn.
                let after = last?.entry.seq ?? 0
                if let head {
                    guard let parsedHead = try? JSONDecoder().decode(AuditHead.self, from: Data(head)),
                        after >= parsedHead.seq
                    else {
                        return nil
                    }
                }
                return (start + Int64(lineStart), contentEnd, after)
            }
            previous.append(lineStart..<lineEnd)
            if previous.count > 2 { previous.removeFirst() }
            lineStart = lineEnd + 1
        }
        return nil
    }

    /// Copies `file` from `offset` to `end` into `name` beside it, zeroes it there, and makes both durable;
    /// returns the copy's name.
    static func setAside(
        _ file: PosixFile, from offset: Int64, to end: Int64, in directory: String, name: String
    ) throws(CaseVaultError) -> String {
        let bytes = try file.read(count: Int(end - offset), at: offset)
        let aside = try PosixFile(path: directory + "/" + name, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        try aside.write(bytes, at: 0)
        try aside.flushData()
        try DataDirectory.flushDirectory(directory)
        try file.write([UInt8](repeating: 0, count: bytes.count), at: offset)
        try file.flushData()
        return name
    }

    /// The log's end: the last whole entry's number and hash and where its line starts, where the next
    /// entry goes, and where the written bytes end (past a torn entry). The file is zero-filled past its
    /// entries (`growthStep`).
    private static func readTail(
        _ file: PosixFile, size: Int64, before: () throws(CaseVaultError) -> AuditLine.Tail
    ) throws(CaseVaultError) -> (AuditLine.Tail, lastStart: Int64, end: Int64, contentEnd: Int64) {
        let empty = (AuditLine.Tail(seq: 0, hash: AuditChain.genesis), Int64(0), Int64(0), Int64(0))
        guard size > 0 else { return empty }
        var window: Int64 = 64 << 10
        while true {
            let start = max(0, size - window)
            let bytes = try file.read(count: Int(size - start), at: start)
            guard let lastWritten = bytes.lastIndex(where: { $0 != 0 }) else {
                if start == 0 { return empty }
                window *= 4
                continue
            }
            let written = bytes[...lastWritten]
            let lastNewline = written.lastIndex(of: UInt8(ascii: "\n"))
            let whole = bytes[..<(lastNewline.map { $0 + 1 } ?? 0)]
            let lines = whole.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast()
            // Two whole lines (or the file's first) are needed to check the last one's hash.
            if lines.count >= 3 || start == 0 {
                let end = start + Int64(lastNewline.map { $0 + 1 } ?? 0)
                let contentEnd = start + Int64(lastWritten + 1)
                if lines.isEmpty { return (AuditLine.Tail(seq: 0, hash: AuditChain.genesis), 0, end, contentEnd) }
                let last = lines[lines.index(before: lines.endIndex)]
                guard let parsed = AuditLine.parse(last) else { throw Self.damaged() }
                let previous: AuditLine.Tail
                if lines.count >= 2 {
                    let before = lines[lines.index(lines.endIndex, offsetBy: -2)]
                    guard let parsed = AuditLine.parse(before) else { throw Self.damaged() }
                    previous = AuditLine.Tail(seq: parsed.entry.seq, hash: parsed.hash)
                } else if parsed.entry.seq == 1 {
                    previous = AuditLine.Tail(seq: 0, hash: AuditChain.genesis)
                } else if parsed.entry.seq > 1, let text = parsed.entry.previous, let hash = Hex.decode(text) {
                    // A file's first entry after a rotation names the entry before it.
                    previous = AuditLine.Tail(seq: parsed.entry.seq - 1, hash: hash)
                } else {
                    previous = try before()
                }
                guard previous.seq < UInt64.max, parsed.entry.seq == previous.seq + 1,
                    AuditChain.hash(previous: previous.hash, json: parsed.json) == parsed.hash
                else { throw Self.damaged() }
                return (
                    AuditLine.Tail(seq: parsed.entry.seq, hash: parsed.hash), end - Int64(last.count + 1), end,
                    contentEnd
                )
            }
            window *= 4
        }
    }

    /// The log grows in zero-filled steps ahead of its entries, as the store's segments do: a flush then
    /// overwrites blocks the file already has and costs a device flush, not a journal commit.
    static let growthStep: Int64 = 4 << 20
    /// Within this much of the end of the reserved space, batches are written on the writer's queue, never
    /// inline on a request's thread (`writeInline`): one of them may grow the file, which flushes.
    static let growthMargin: Int64 = 64 << 10

    private static func damaged() -> CaseVaultError {
        CaseVaultError(
            .integrityFailure,
            "the audit log's last entries do not check out, so the daemon will not append to it; "
                + "run casevaultctl audit verify --offline to find the first bad entry"
        )
    }
}

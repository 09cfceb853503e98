internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Dispatch
internal import Foundation
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

// Moving the log to a new file, and the retention of rotated files.
extension AuditLog {
    /// Moves the log to a new file (docs/API.md), on the writer: the file being closed is cut to its
    /// entries and flushed; the new one is prepared aside (`log.new`) with a signed `rotate` checkpoint as its
    /// first entry (naming the entry before it, the signing key and the first entry the log keeps) and
    /// flushed; then `log` is renamed to `log.<its first entry>` and the new file to `log`. Only once that
    /// is durable does the retention remove the oldest rotated files. A crash anywhere leaves either the
    /// old layout or the new one (`open` finishes or undoes a rotation). Returns the checkpoint, whose head
    /// and anchor the next flush writes.
    func rotate(_ chain: inout Chain, signer: AuditSigner) throws(CaseVaultError) -> AuditAnchor {
        let archive = AuditFiles.archiveName(first: chain.fileFirst)
        let archivePath = self.directory + "/" + archive
        guard !DataDirectory.exists(archivePath) else {
            throw CaseVaultError(.storageFailure, "the audit log cannot rotate: \(archive) already exists")
        }
        // Which rotated files the retention removes: the oldest beyond `keepFiles`, as long as the oldest
        // kept begins with a rotate checkpoint or entry 1 (a walk can begin there).
        var rotated = try AuditFiles.list(self.directory).compactMap(\.first) + [chain.fileFirst]
        rotated.sort()
        var removed =
            self.retention.keepFiles > 0 ? Array(rotated.prefix(max(0, rotated.count - self.retention.keepFiles))) : []
        while let oldestKept = rotated.dropFirst(removed.count).first, !removed.isEmpty {
            let file =
                oldestKept == chain.fileFirst
                ? self.file
                : try PosixFile(path: self.directory + "/" + AuditFiles.archiveName(first: oldestKept), flags: O_RDONLY)
            if let first = try AuditFiles.firstLine(file),
                first.entry.reason == AuditChain.rotateReason || first.entry.seq == 1
            {
                break
            }
            removed.removeLast()
        }
        let firstKept = rotated.dropFirst(removed.count).first ?? chain.fileFirst

        let seq = chain.seq + 1
        var entry = AuditEntry(seq: seq, kind: .checkpoint, time: self.clock())
        entry.reason = AuditChain.rotateReason
        entry.previous = Hex.encode(chain.hash)
        entry.publicKey = Hex.encode(signer.publicKey)
        entry.firstKept = firstKept
        entry.signature = Hex.encode(
            signer.signature(for: AuditChain.checkpointMessage(seq: seq, previous: chain.hash)))
        var line: [UInt8] = []
        let hash = AuditChain.appendLine(entry, previous: chain.hash, signer: signer, to: &line)
        let (next, preparedPath) = try self.makePrepared()
        let allocated = max(Self.growthStep, Int64(line.count))
        try next.writer.write(line, at: 0)
        try next.writer.writeZeros(count: allocated - Int64(line.count), at: Int64(line.count))
        try next.writer.flushData()

        // The file being closed: cut to its entries, and everything in it durable before a file after it
        // takes its name.
        let old = self.file
        try old.truncate(to: chain.end)
        // Cut short, the file has no room reserved past its entries: if the rotation fails from here, the
        // next entries grow it again, and that growth is flushed before any of them is written there.
        chain.allocated = chain.end
        let (lost, failuresBefore) = self.shared.withLock { ($0.rewrite, $0.failures) }
        if let lost, lost.file == chain.fileFirst, lost.from < chain.end {
            try Self.writeAgain(old, from: lost.from, to: chain.end, chain: &chain)
        }
        // A failure, this flush's or one counted meanwhile, stops the rotation, and the file's next own flush
        // writes again what it lost.
        try self.flushOwn(old, file: chain.fileFirst, failuresBefore: failuresBefore)
        guard rename(self.logPath, archivePath) == 0 else { throw POSIXFailure.error("rename", path: self.logPath) }
        guard rename(preparedPath, self.logPath) == 0 else {
            let failure = POSIXFailure.error("rename", path: preparedPath)
            // Back as it was: the old file goes on. If even that fails, the log stops (a restart finishes the
            // rotation from log.new).
            if rename(archivePath, self.logPath) != 0 {
                chain.unusable =
                    "the audit log stopped half-way through a rotation (\(failure.message)); restart casevaultd to finish it"
            }
            throw failure
        }
        // From here on the rotation has happened: the new file is written to, once its names are durable.
        self.current.withLock { $0 = next }
        chain.seq = seq
        chain.hash = hash
        chain.fileFirst = seq
        chain.lastFile = seq
        chain.lastStart = 0
        chain.end = Int64(line.count)
        chain.allocated = allocated
        chain.lastCheckpoint = seq
        chain.rotateNow = false
        self.shared.withLock { state in
            state.durable = (seq, Int64(line.count))
            state.rewrite = nil
            state.layout += 1
        }
        chain.directoryUnflushed = true
        try DataDirectory.flushDirectory(self.directory)
        chain.directoryUnflushed = false
        if !removed.isEmpty {
            for first in removed {
                _ = unlink(self.directory + "/" + AuditFiles.archiveName(first: first))
            }
            try? DataDirectory.flushDirectory(self.directory)
        }
        return AuditAnchor(seq: seq, hash: hash, offset: 0, file: seq)
    }
}

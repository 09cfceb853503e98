public import CaseVaultCore
internal import CaseVaultCrypto
public import CaseVaultFiles
internal import Dispatch
internal import Foundation
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

// Taking and giving up the root key's audit subkeys: what the log records when it does.
extension AuditLog {
    /// Starts keying entries and signing checkpoints with `signer` and writes its public key into the log
    /// (with `breakFound`, the break the operator accepted, and a checkpoint after it so that the head
    /// names the log as it now stands). Waits until the entries are durable.
    public func attach(_ signer: AuditSigner, breakFound: String? = nil, firstKept: UInt64? = nil)
        throws(CaseVaultError)
    {
        self.shared.withLock { $0.signer = signer }
        var entry = AuditEntry(kind: .key, time: self.clock())
        entry.publicKey = Hex.encode(signer.publicKey)
        entry.reason = breakFound.map { AuditChain.breakPrefix + $0 }
        entry.firstKept = firstKept
        self.record(entry)
        do {
            try self.flush(checkpoint: breakFound == nil ? nil : "break")
        } catch {
            self.shared.withLock { $0.signer = nil }
            throw error
        }
    }

    /// Where the log is anchored: the store it was attached to, until it is detached.
    public var anchorKeeper: (any AuditAnchorKeeper)? {
        self.shared.withLock { $0.anchorStore }
    }

    /// Checks the log against `store`'s anchor and the root key, then `attach(store.auditSigner)`, anchors
    /// the log at what is durable, and from then on keeps the anchor up to date and lets entries ride on
    /// `store`'s flushes where they can. A log that does not check out is refused with `audit-mismatch`
    /// (nothing is written), unless the log was opened with `acceptBreak` (once): then whatever of the log
    /// does not check out is moved aside (`audit/log.broken-<time>`, with the head), and the break is
    /// recorded (with files missing from the middle of the log, the files before the gap are moved aside,
    /// and the break's entry names where the log now begins). Attaching to the store already attached does
    /// nothing.
    public func attach(to store: any AuditAnchorKeeper) throws(CaseVaultError) {
        if self.shared.withLock({ $0.anchorStore === store }) { return }
        let signer = store.auditSigner
        // An end a power cut tore, set aside at open, is recorded as a break with the first attach that
        // succeeds, together with anything else accepted.
        let torn = self.shared.withLock { $0.tornAtOpen }
        if var finding = try self.check(against: store, signer: signer) {
            if let torn { finding.description += "; before that, \(torn)" }
            let accepted = self.acceptBreak.withLock { accept in
                defer { accept = false }
                return accept
            }
            guard accepted else {
                throw CaseVaultError(
                    .auditMismatch,
                    "the audit log does not match what the index remembers of it: \(finding.description). Nothing was written. "
                        + "Keep a copy of the data directory's audit/ for investigation; casevaultctl doctor says how to go on"
                )
            }
            if let cut = finding.cut { try self.setAside(from: cut) }
            if let floor = finding.floor {
                try self.setAside(before: floor)
                // The next file's first entry says where the log now begins, for the checks of later starts.
                self.chain.withLock { $0.rotateNow = true }
            }
            try self.attach(signer, breakFound: finding.description, firstKept: finding.floor)
        } else {
            try self.attach(signer, breakFound: torn)
        }
        // Recorded: the copies set aside are marked so, and no later open records them again.
        let recorded = self.shared.withLock { state in
            defer { (state.tornAtOpen, state.tornFiles) = (nil, []) }
            return state.tornFiles
        }
        for name in recorded {
            let path = self.directory + "/" + name
            guard rename(path, path + AuditFiles.recordedSuffix) == 0 else {
                throw POSIXFailure.error("rename", path: path)
            }
        }
        if !recorded.isEmpty { try DataDirectory.flushDirectory(self.directory) }
        do {
            // The anchor names only what is on disk: the tail as it stands, then flushed.
            let (tail, failuresBefore) = self.shared.withLock { ($0.writtenTail, $0.failures) }
            try self.flushOwn(self.file, file: self.chain.withLock { $0.fileFirst }, failuresBefore: failuresBefore)
            try store.setAuditAnchor(tail)
            let riding = store.letRide(self)
            self.shared.withLock { state in
                state.anchorStore = store
                state.anchoredSeq = tail.seq
                state.anchoredAt = .now()
                state.riding = riding
            }
        } catch {
            self.shared.withLock { $0.signer = nil }
            throw error
        }
    }

    /// Stops signing: after a last checkpoint (which is anchored), the log forgets the signer and the store
    /// (the daemon is being sealed), and stops riding on the store's flushes.
    public func detach(reason: String) throws(CaseVaultError) {
        defer {
            self.shared.withLock { state in
                state.signer = nil
                state.riding = false
                state.anchorStore = nil
            }
        }
        try self.flush(checkpoint: reason)
    }
}

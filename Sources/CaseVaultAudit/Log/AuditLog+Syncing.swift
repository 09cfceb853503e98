internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Dispatch
internal import Foundation
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

// The syncer: making written entries durable, the head and the anchor.
extension AuditLog {
    /// Asks the syncer to flush now. Extra requests are harmless: a flush with nothing new to flush is none.
    func startSync() {
        self.syncer.async { self.sync() }
    }

    /// How long after a failed flush the entries of reads answered without waiting are flushed again.
    static let windowRetryDelay: DispatchTimeInterval = .milliseconds(100)

    /// For tests: runs `body` on the syncer before each flush of its own, once the entries it flushes are
    /// written, so that a test can hold a flush open while more entries arrive; `nil` runs nothing.
    package func beforeSyncerFlush(_ body: (@Sendable () -> Void)?) {
        self.syncerFlushHook.withLock { $0 = body }
    }

    /// Whether the anchor lags behind what was written by more than `anchorInterval`.
    func anchorDue() -> Bool {
        self.shared.withLock { state in self.anchorDue(state) }
    }

    func anchorDue(_ state: Shared) -> Bool {
        state.anchorStore != nil && state.writtenTail.seq > state.anchoredSeq
            && DispatchTime.now() >= state.anchoredAt + self.anchorInterval
    }

    /// When the anchor lags but is not due yet, a flush for when it falls due, so that a quiet daemon's
    /// last entries are anchored too.
    func scheduleAnchor() {
        let due = self.shared.withLock { state -> DispatchTime? in
            guard state.anchorStore != nil, state.writtenTail.seq > state.anchoredSeq, !state.anchorScheduled else {
                return nil
            }
            state.anchorScheduled = true
            return state.anchoredAt + self.anchorInterval
        }
        guard let due else { return }
        self.syncer.asyncAfter(deadline: due) {
            self.shared.withLock { $0.anchorScheduled = false }
            self.sync()
        }
    }

    /// The syncer: flushes everything written so far, replaces the head after a checkpoint and the anchor
    /// when due, tells the waiters, and repeats while what was written meanwhile is needed: by a waiter, a
    /// checkpoint or the anchor, a read window that has ended, or a write's entry (`soonTarget`).
    private func sync() {
        while true {
            let next = self.shared.withLock {
                state -> (UInt64, (anchor: AuditAnchor, signer: AuditSigner)?, (any AuditAnchorKeeper, AuditAnchor)?)?
                in
                // Nothing new, unless a ride made the checkpoint's batch durable before its head was written.
                let anchorDue = self.anchorDue(state)
                let ownNeeded = state.unsyncedCheckpoint != nil || anchorDue
                // A window whose reads a flush made durable already is over: the next read's window waits
                // for its own end.
                if state.windowTarget <= state.synced { state.windowDue = false }
                if state.written <= state.synced && !ownNeeded { return nil }
                // What nobody waits for, no write's request entry needs soon and no read's window has come
                // due for waits: for a waiter, for the end of the next window, or (riding) for the next put's
                // flush. So the reads of one window share one flush, however many come during a flush.
                let windowDue = state.windowDue && state.windowTarget > state.synced
                if state.durableWaiters.isEmpty && !ownNeeded && !windowDue && state.soonTarget <= state.synced {
                    return nil
                }
                defer {
                    state.unsyncedCheckpoint = nil
                    state.windowDue = false
                }
                let anchor =
                    (state.unsyncedCheckpoint != nil || anchorDue)
                    ? state.anchorStore.map { ($0, state.writtenTail) } : nil
                return (state.written, state.unsyncedCheckpoint, anchor)
            }
            guard let (target, checkpoint, anchor) = next else { return }
            var failure: CaseVaultError?
            var flushed: (file: UInt64, end: Int64)?
            var failuresBefore: UInt64 = 0
            var layout: UInt64 = 0
            do throws(CaseVaultError) {
                // Everything written so far, and again what a failed flush should have made durable.
                let (file, first, end) = try self.chain.withLock {
                    chain throws(CaseVaultError) -> (PosixFile, UInt64, Int64) in
                    let rewrite = self.shared.withLock { state in
                        failuresBefore = state.failures
                        layout = state.layout
                        return state.rewrite
                    }
                    if let rewrite, rewrite.file == chain.fileFirst, rewrite.from < chain.end {
                        try Self.writeAgain(self.file, from: rewrite.from, to: chain.end, chain: &chain)
                    }
                    return (self.file, chain.fileFirst, chain.end)
                }
                self.syncerFlushHook.withLock { $0 }?()
                try self.flushOwn(file, file: first, failuresBefore: failuresBefore)
                flushed = (first, end)
                if let checkpoint {
                    try self.writeHead(
                        seq: checkpoint.anchor.seq, hash: checkpoint.anchor.hash, signer: checkpoint.signer)
                }
            } catch {
                failure = error
            }
            // The anchor names only what is durable: the last entry written before this flush. A checkpoint's
            // is written before anyone waiting is told (seal and shutdown close the store next); the others
            // after, so that no answer waits on the index. Its failure leaves the log as good as it was.
            var anchored = false
            if failure == nil, checkpoint != nil, let (store, tail) = anchor {
                // A remote keeper's, in turn with the anchors written apart, so that none goes back.
                anchored =
                    store.isRemote
                    ? self.anchorer.sync { self.anchorRemote(tail, in: store) } : self.anchor(tail, in: store)
            }
            var retryWindow = false
            let ready = self.shared.withLock { state -> [Waiter] in
                // A flush that failed elsewhere meanwhile may have taken this one's error: not durable either.
                if failure == nil, state.failures != failuresBefore {
                    failure = CaseVaultError(.storageFailure, "a flush of the audit log failed meanwhile")
                }
                if let failure {
                    Self.needRewrite(&state, file: flushed?.file ?? state.durable?.file ?? 0)
                    state.syncFailure = failure.message
                    // The head stays behind; the next flush tries it again.
                    if state.unsyncedCheckpoint == nil { state.unsyncedCheckpoint = checkpoint }
                    // Reads answered without waiting still need their entries on disk: tried again soon,
                    // whatever else happens (or does not) meanwhile.
                    if state.windowTarget > state.synced, !state.windowFlushScheduled {
                        state.windowFlushScheduled = true
                        retryWindow = true
                    }
                } else {
                    state.syncFailure = nil
                    if let flushed {
                        state.advanceDurable(flushed.file, to: flushed.end, layout: layout)
                        if state.rewrite?.file == flushed.file { state.rewrite = nil }
                    }
                    state.synced = max(state.synced, target)
                    state.ownFlushes += 1
                    if anchored, let (_, tail) = anchor {
                        state.anchoredSeq = max(state.anchoredSeq, tail.seq)
                    }
                    if anchor != nil { state.anchoredAt = .now() }
                }
                let ready = state.durableWaiters.filter { $0.batch <= target }.map(\.waiter)
                state.durableWaiters.removeAll { $0.batch <= target }
                return ready
            }
            let outcome: Result<UInt64, CaseVaultError> =
                failure.map { .failure(Self.unavailable($0.message)) } ?? .success(target)
            for waiter in ready {
                waiter.complete(outcome)
            }
            if failure != nil {
                if retryWindow {
                    self.syncer.asyncAfter(deadline: .now() + Self.windowRetryDelay) {
                        self.shared.withLock { state in
                            state.windowFlushScheduled = false
                            state.windowDue = true
                        }
                        self.sync()
                    }
                }
                return
            }
            if checkpoint == nil, let (store, tail) = anchor {
                if store.isRemote {
                    self.anchorApart(tail, in: store)
                } else if self.anchor(tail, in: store) {
                    self.shared.withLock { $0.anchoredSeq = max($0.anchoredSeq, tail.seq) }
                }
            }
        }
    }

    /// Replaces the anchor in a remote `store` on `anchorer`, so that the next flush need not wait for the
    /// network: only the newest waiting anchor is written (an older one still waiting is dropped for it).
    private func anchorApart(_ tail: AuditAnchor, in store: any AuditAnchorKeeper) {
        let queued = self.shared.withLock { state -> Bool in
            defer { state.pendingAnchor = (store, tail) }
            return state.pendingAnchor != nil
        }
        guard !queued else { return }
        self.anchorer.async {
            guard
                let (store, tail) = self.shared.withLock({ state in
                    defer { state.pendingAnchor = nil }
                    return state.pendingAnchor
                })
            else { return }
            if self.anchorRemote(tail, in: store) {
                self.shared.withLock { $0.anchoredSeq = max($0.anchoredSeq, tail.seq) }
            }
        }
    }

    /// `anchor(_:in:)` on `anchorer`, unless an anchor as new or newer was written there already (a
    /// checkpoint's, while this one waited).
    private func anchorRemote(_ tail: AuditAnchor, in store: any AuditAnchorKeeper) -> Bool {
        guard self.shared.withLock({ tail.seq > $0.remoteAnchoredSeq || tail.seq == 0 }) else { return true }
        guard self.anchor(tail, in: store) else { return false }
        self.shared.withLock { $0.remoteAnchoredSeq = max($0.remoteAnchoredSeq, tail.seq) }
        return true
    }

    /// Replaces the anchor in `store`; `false` (and `anchorFailure` says why) when it could not.
    private func anchor(_ tail: AuditAnchor, in store: any AuditAnchorKeeper) -> Bool {
        do throws(CaseVaultError) {
            try store.setAuditAnchor(tail)
            self.shared.withLock { $0.anchorFailure = nil }
            return true
        } catch {
            self.shared.withLock { $0.anchorFailure = error.message }
            return false
        }
    }

    /// Flushes `handle`, the writer's open file of the log file that begins at entry `file`. Linux tells an
    /// open file of a failed write once: of two flushes of it at once, the one that did not need the error
    /// could take it, and the other return as if all were well. So the log's own flushes take turns, each
    /// counting its failure (`failures`, and `file` to be written again) before the next begins, and one
    /// throws as well when a failure was counted since `failuresBefore` (read before the bytes it must make
    /// durable were last written again).
    func flushOwn(_ handle: PosixFile, file: UInt64, failuresBefore: UInt64) throws(CaseVaultError) {
        try self.ownFlushing.withLock { _ throws(CaseVaultError) in
            do throws(CaseVaultError) {
                try handle.flushData()
            } catch {
                self.shared.withLock { Self.needRewrite(&$0, file: file) }
                throw error
            }
            guard self.shared.withLock({ $0.failures }) == failuresBefore else {
                throw CaseVaultError(.storageFailure, "a flush of the audit log failed meanwhile")
            }
        }
    }

    /// Why the log could not move to a new file the last time it was due, or `nil` (it goes on in the same
    /// file and tries again).
    public var rotationFailure: String? {
        self.shared.withLock { $0.rotationFailure }
    }

    /// Why the anchor could not be replaced the last time it was due, or `nil`.
    public var anchorFailure: String? {
        self.shared.withLock { $0.anchorFailure }
    }

    /// Replaces `audit/head` atomically (write aside, flush, rename, flush the directory).
    private func writeHead(seq: UInt64, hash: [UInt8], signer: AuditSigner) throws(CaseVaultError) {
        let head = AuditHead(
            seq: seq,
            hash: Hex.encode(hash),
            signature: Hex.encode(signer.signature(for: AuditChain.headMessage(seq: seq, hash: hash)))
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = Array((try? encoder.encode(head)) ?? Data()) + [UInt8(ascii: "\n")]
        let aside = self.headPath + ".new"
        let file = try PosixFile(path: aside, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        try file.write(bytes, at: 0)
        try file.flushData()
        guard rename(aside, self.headPath) == 0 else { throw POSIXFailure.error("rename", path: self.headPath) }
        try DataDirectory.flushDirectory(self.directory)
    }
}

public import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Dispatch
internal import Foundation
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

// Appending entries: the writer's queue, its batches, and the flushes requests wait for.
extension AuditLog {
    /// Whether entries ride on the store's flushes.
    public var isRiding: Bool {
        self.shared.withLock { $0.riding }
    }

    /// How entries reached the disk so far: flushes of the log's own, and store flushes that carried them.
    public var flushCounts: (own: Int, rides: Int) {
        self.shared.withLock { ($0.ownFlushes, $0.rides) }
    }

    /// A new number for a request, to tie its `result` entry to its `request` entry.
    public func nextRequestNumber() -> UInt64 {
        self.shared.withLock { state in
            defer { state.nextRequest += 1 }
            return state.nextRequest
        }
    }

    /// Appends `entry` and returns once it is written (not yet flushed: see `awaitDurable`). Throws
    /// `audit-unavailable` when it could not be written within `writeDeadline`: the caller must then not act.
    /// With `flushingSoon` (a write's request entry), a flush of the log's own begins at once when the log
    /// does not ride on the store's flushes; without (a read's, made durable by `flushWithin`), it waits for
    /// its window.
    public func append(_ entry: AuditEntry, flushingSoon: Bool = true) async throws(CaseVaultError) -> Receipt {
        if let written = self.writeInline(entry, flushSoon: flushingSoon) {
            return Receipt(batch: try written.get())
        }
        let result: Result<UInt64, CaseVaultError> = await withCheckedContinuation { continuation in
            let waiter = Waiter(flushSoon: flushingSoon) { result in continuation.resume(returning: result) }
            self.deadlines.watch(
                waiter, failure: Self.unavailable("its entry was not written within \(Self.deadlineText)"))
            self.enqueue(.entry(entry, waiter))
        }
        return Receipt(batch: try result.get())
    }

    /// The fast path: when the writer is idle and no rotation or directory flush is due (`heavyNext`), the
    /// caller writes its entry itself (one `pwrite`), saving two thread hops. `nil` when the writer is busy:
    /// the caller then queues, with the deadline. A caller stuck here in a `pwrite` (a hung disk) holds the
    /// lead, so the others queue and are refused in time.
    private func writeInline(_ entry: AuditEntry, waiting: Bool = true, flushSoon: Bool = true)
        -> Result<UInt64, CaseVaultError>?
    {
        let lead = self.shared.withLock { state -> AuditSigner?? in
            guard !state.closed, !state.draining, state.pending.isEmpty, !state.heavyNext else { return .none }
            state.draining = true
            return .some(state.signer)
        }
        guard case .some(let signer) = lead else { return nil }
        let outcome = Mutex<Result<UInt64, CaseVaultError>?>(nil)
        let waiter = waiting ? Waiter(flushSoon: flushSoon) { result in outcome.withLock { $0 = result } } : nil
        self.write([.entry(entry, waiter)], signer: signer)
        let more = self.shared.withLock { state -> Bool in
            if state.pending.isEmpty {
                state.draining = false
                return false
            }
            return true
        }
        if more {
            self.writer.async { self.drain() }
        }
        guard waiting else { return .success(0) }
        return outcome.withLock { $0 } ?? .failure(Self.unavailable("the entry was not written"))
    }

    /// Waits until the entry behind `receipt` is on disk (at most `writeDeadline`).
    public func awaitDurable(_ receipt: Receipt) async throws(CaseVaultError) {
        let result: Result<UInt64, CaseVaultError> = await withCheckedContinuation { continuation in
            let waiter = Waiter { result in continuation.resume(returning: result) }
            let done = self.shared.withLock { state -> Bool in
                if state.synced >= receipt.batch { return true }
                state.durableWaiters.append((receipt.batch, waiter))
                return false
            }
            if done {
                waiter.complete(.success(receipt.batch))
                return
            }
            self.deadlines.watch(
                waiter, failure: Self.unavailable("its entry was not on disk within \(Self.deadlineText)"))
            self.startSync()
        }
        _ = try result.get()
    }

    /// Has the entry behind `receipt` flushed within `window`, without waiting for it: unless a flush makes
    /// it durable sooner, one is scheduled for the end of the window (even while the log rides on the
    /// store's flushes), and it flushes every entry written by then, so that the reads answered in one
    /// window share one flush. A flush that fails is tried again (`windowRetryDelay`).
    public func flushWithin(_ receipt: Receipt, _ window: Duration) {
        let schedule = self.shared.withLock { state -> Bool in
            guard state.synced < receipt.batch else { return false }
            state.windowTarget = max(state.windowTarget, receipt.batch)
            guard !state.windowFlushScheduled else { return false }
            state.windowFlushScheduled = true
            return true
        }
        guard schedule else { return }
        let nanoseconds = window.components.seconds * 1_000_000_000 + window.components.attoseconds / 1_000_000_000
        self.syncer.asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: nanoseconds))) {
            self.shared.withLock { state in
                state.windowFlushScheduled = false
                state.windowDue = true
            }
            self.startSync()
        }
    }

    /// Whether the entry behind `receipt` is on disk.
    public func isDurable(_ receipt: Receipt) -> Bool {
        self.shared.withLock { $0.synced >= receipt.batch }
    }

    /// Queues `entry` without waiting: for results, which follow their action. It reaches the disk with the
    /// next flush, at the latest at shutdown.
    public func record(_ entry: AuditEntry) {
        if self.writeInline(entry, waiting: false) == nil {
            self.enqueue(.entry(entry, nil))
        }
    }

    /// Writes a last checkpoint and flushes, waiting at most `closeWait` (a shutdown must end even when the
    /// disk or the log's writer does not answer; what was acknowledged was durable before); later entries are
    /// refused.
    public func close() {
        let flushed = (try? self.flush(checkpoint: "shutdown", waitingAtMost: Self.closeWait)) != nil
        self.shared.withLock { $0.closed = true }
        // Durable now: the copy kept for writing again is not needed any more.
        if flushed { self.chain.withLock { $0.unflushed = UnflushedCopy(limit: $0.unflushed.limit) } }
    }

    /// How long `close` waits for its last flush.
    static let closeWait: DispatchTimeInterval = .seconds(10)

    /// Why entries cannot be written or flushed right now, or `nil` when the last write and flush succeeded.
    public var failure: String? {
        self.shared.withLock { $0.writeFailure ?? $0.syncFailure }
    }

    /// Batches of entries written but not yet known durable: how far the log's flushes trail its writes.
    public var unflushedBatches: UInt64 {
        self.shared.withLock { $0.written - min($0.synced, $0.written) }
    }

    /// The number of the last entry written.
    public var entries: UInt64 {
        self.chain.withLock { $0.seq }
    }

    static var deadlineText: String { "0.8 s" }

    static func unavailable(_ why: String) -> CaseVaultError {
        CaseVaultError(
            .auditUnavailable,
            "the audit log cannot be written (\(why)), so the daemon refuses to act; casevaultctl status says why"
        )
    }

    /// Flushes everything queued so far (after a checkpoint, when `checkpoint` names one), blocking until
    /// it is durable, or until `limit` has passed (then `audit-unavailable`).
    func flush(checkpoint: String?, waitingAtMost limit: DispatchTimeInterval? = nil) throws(CaseVaultError) {
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<UInt64, CaseVaultError>>(.success(0))
        let waiter = Waiter { result in
            outcome.withLock { $0 = result }
            done.signal()
        }
        self.enqueue(.flush(checkpoint: checkpoint, waiter))
        if let limit {
            guard done.wait(timeout: .now() + limit) == .success else {
                throw Self.unavailable("its flush did not finish within \(limit)")
            }
        } else {
            done.wait()
        }
        _ = try outcome.withLock { $0 }.get()
    }

    private func enqueue(_ pending: Pending) {
        let (start, refused) = self.shared.withLock { state -> (Bool, Bool) in
            if state.closed { return (false, true) }
            state.pending.append(pending)
            if state.draining { return (false, false) }
            state.draining = true
            return (true, false)
        }
        if refused {
            let stopping = Self.unavailable("the daemon is stopping")
            switch pending {
            case .entry(_, let waiter): waiter?.complete(.failure(stopping))
            case .flush(_, let waiter): waiter.complete(.failure(stopping))
            }
        }
        if start {
            self.writer.async { self.drain() }
        }
    }

    /// The writer: takes everything queued, writes it as one batch, and repeats until the queue is empty.
    private func drain() {
        while true {
            let next = self.shared.withLock { state -> ([Pending], AuditSigner?)? in
                if state.pending.isEmpty {
                    state.draining = false
                    return nil
                }
                defer { state.pending.removeAll(keepingCapacity: true) }
                return (state.pending, state.signer)
            }
            guard let (batch, signer) = next else { return }
            self.write(batch, signer: signer)
        }
    }

    private func write(_ batch: [Pending], signer: AuditSigner?) {
        // Everyone waiting on this batch, gathered first: however the batch ends, early refusals included,
        // each is answered (a flush with no deadline, a seal's or a detach's, would otherwise wait forever).
        var entryWaiters: [Waiter] = []
        var flushWaiters: [Waiter] = []
        for pending in batch {
            switch pending {
            case .entry(_, let waiter): if let waiter { entryWaiters.append(waiter) }
            case .flush(_, let waiter): flushWaiters.append(waiter)
            }
        }
        var rotationFailure: String??
        var heavyNext = true
        defer { self.shared.withLock { $0.heavyNext = heavyNext } }
        let result = self.chain.withLock {
            chain -> Result<(checkpoint: AuditAnchor?, tail: AuditAnchor), CaseVaultError> in
            var checkpoint: AuditAnchor?
            defer {
                let due = (self.retention.rotateBytes > 0 && chain.end >= self.retention.rotateBytes) || chain.rotateNow
                // Near the end of the reserved space the next batch may grow the file, and a growth flushes:
                // the writer's queue does that, not a request's thread.
                heavyNext =
                    (due && chain.seq >= chain.rotateAfter) || chain.directoryUnflushed || chain.unusable != nil
                    || chain.allocated - chain.end < Self.growthMargin
            }
            // A rotation whose new names may not be durable yet: nothing goes into the new file until they are.
            if let unusable = chain.unusable {
                return .failure(CaseVaultError(.storageFailure, unusable))
            }
            if chain.directoryUnflushed {
                do throws(CaseVaultError) {
                    try DataDirectory.flushDirectory(self.directory)
                    chain.directoryUnflushed = false
                } catch {
                    return .failure(error)
                }
            }
            let due = (self.retention.rotateBytes > 0 && chain.end >= self.retention.rotateBytes) || chain.rotateNow
            if let signer, due, chain.dirtyBytes == 0, chain.seq >= chain.rotateAfter {
                do throws(CaseVaultError) {
                    checkpoint = try self.rotate(&chain, signer: signer)
                    rotationFailure = .some(nil)
                } catch {
                    // The log goes on in its file, and tries again after the next interval's worth of entries.
                    chain.rotateAfter = chain.seq + self.checkpointInterval
                    rotationFailure = .some(error.message)
                }
                if chain.unusable != nil || chain.directoryUnflushed {
                    return .failure(
                        CaseVaultError(.storageFailure, (rotationFailure ?? nil) ?? "the audit log could not rotate"))
                }
            }
            var seq = chain.seq
            var hash = chain.hash
            var bytes: [UInt8] = []
            bytes.reserveCapacity(batch.count * 384)
            var lineStart = chain.lastStart
            var lineFile = chain.lastFile
            func add(_ entry: AuditEntry) {
                var entry = entry
                seq += 1
                entry.seq = seq
                lineStart = chain.end + Int64(bytes.count)
                lineFile = chain.fileFirst
                hash = AuditChain.appendLine(entry, previous: hash, signer: signer, to: &bytes)
            }
            func addCheckpoint(_ reason: String, signer: AuditSigner) {
                var entry = AuditEntry(kind: .checkpoint, time: self.clock())
                entry.reason = reason
                entry.signature = Hex.encode(
                    signer.signature(for: AuditChain.checkpointMessage(seq: seq + 1, previous: hash)))
                add(entry)
                checkpoint = AuditAnchor(seq: seq, hash: hash, offset: lineStart, file: lineFile)
            }
            for pending in batch {
                switch pending {
                case .entry(let entry, _):
                    add(entry)
                    // No more than `checkpointInterval` entries go unsigned, however large the batch.
                    if let signer, seq >= (checkpoint?.seq ?? chain.lastCheckpoint) + self.checkpointInterval {
                        addCheckpoint("interval", signer: signer)
                    }
                case .flush(let reason, _):
                    if let signer, let reason { addCheckpoint(reason, signer: signer) }
                }
            }
            // What a failed batch may have left past the end is zeroed by this one.
            var output = bytes
            if chain.dirtyBytes > output.count {
                output += [UInt8](repeating: 0, count: chain.dirtyBytes - output.count)
            }
            do throws(CaseVaultError) {
                let needed = chain.end + Int64(output.count)
                if needed > chain.allocated {
                    let grown = (needed / Self.growthStep + 1) * Self.growthStep
                    let failuresBefore = self.shared.withLock { $0.failures }
                    // A growth that failed left the file longer than its reserved space, with a size and blocks
                    // that ext4 (without a journal) never writes to the disk again once their write failed:
                    // cut back first, so that this growth changes them anew and its flush writes them.
                    if try self.file.size() > chain.allocated {
                        try self.file.truncate(to: chain.allocated)
                    }
                    try self.file.writeZeros(count: grown - chain.allocated, at: chain.allocated)
                    // Flushed before any entry lies there, in turn with the log's other own flushes (as the
                    // store's segments are): left to a later flush, a disk error in it could lose the new
                    // blocks' allocation, and entries flushed there after the disk recovered would read back
                    // as zeros. A failure refuses this batch, and the next grows again.
                    try self.flushOwn(self.file, file: chain.fileFirst, failuresBefore: failuresBefore)
                    chain.allocated = grown
                }
                if !output.isEmpty {
                    try self.file.write(output, at: chain.end)
                }
            } catch {
                chain.dirtyBytes = max(chain.dirtyBytes, bytes.count)
                return .failure(error)
            }
            chain.dirtyBytes = 0
            chain.unflushed.wrote(bytes, at: chain.end, file: chain.fileFirst)
            if let durable = self.shared.withLock({ $0.durable }) {
                chain.unflushed.durable(durable.file, to: durable.end)
            }
            chain.seq = seq
            chain.hash = hash
            chain.lastStart = lineStart
            chain.lastFile = lineFile
            chain.end += Int64(bytes.count)
            if let checkpoint { chain.lastCheckpoint = checkpoint.seq }
            return .success((checkpoint, chain.tail))
        }
        if let rotationFailure {
            self.shared.withLock { $0.rotationFailure = rotationFailure }
        }
        switch result {
        case .failure(let error):
            self.shared.withLock { $0.writeFailure = error.message }
            let refusal = Self.unavailable(error.message)
            for waiter in entryWaiters + flushWaiters {
                waiter.complete(.failure(refusal))
            }
        case .success(let (checkpoint, tail)):
            let soon = entryWaiters.contains { $0.flushSoon }
            let (number, eager) = self.shared.withLock { state -> (UInt64, Bool) in
                state.writeFailure = nil
                state.written += 1
                state.writtenTail = tail
                if let checkpoint, let signer {
                    state.unsyncedCheckpoint = (checkpoint, signer)
                }
                for waiter in flushWaiters {
                    state.durableWaiters.append((state.written, waiter))
                }
                if soon && !state.riding { state.soonTarget = state.written }
                return (state.written, !state.riding)
            }
            for waiter in entryWaiters {
                waiter.complete(.success(number))
            }
            // Results alone wait for the next flush, and a read's request entry for its window's. A write's
            // request entry's flush starts now, while its route works, unless it rides on the store's flush
            // (then `awaitDurable` starts it if still needed). A checkpoint and an explicit flush need a
            // flush of the log's own.
            if (eager && soon) || !flushWaiters.isEmpty || checkpoint != nil || self.anchorDue() {
                self.startSync()
            }
            self.scheduleAnchor()
        }
    }
}

internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Dispatch
internal import Foundation
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

// Riding on the store's flushes (`FlushRider`).
extension AuditLog {
    /// Ready to ride when something was written since the last flush, no checkpoint's head is waiting, and
    /// no failed flush waits for the log's own to write again what it lost. (The file never needs a flush of
    /// its own for its size: entries are written only into space a growth has flushed.)
    public func prepareRide() -> UInt64? {
        let target = self.shared.withLock { state -> UInt64? in
            guard state.riding, state.written > state.synced, state.unsyncedCheckpoint == nil,
                state.rewrite == nil
            else {
                return nil
            }
            state.rideFailures = state.failures
            return state.written
        }
        guard let target else { return nil }
        // What is written up to here is sent to the device below: durable once the ride counts.
        self.chain.withLock { chain in
            self.shared.withLock { $0.rideEnd = (chain.fileFirst, chain.end, $0.layout) }
        }
        // Every byte written so far is sent to the device here, so that `board` only waits for it: pages
        // that entries written after this dirty again are left to a later flush, not written again first.
        // The wait for writes already under way may report one that failed: then no ride, and the log's
        // own flush writes again what it lost.
        guard self.writeBack(.startAll) else { return nil }
        return target
    }

    public func board(_ token: UInt64) -> Bool {
        self.writeBack(.finish)
    }

    /// One step of writing the file back; `false` when it reported a failed write, which the log's own
    /// flush then writes again.
    private func writeBack(_ step: PosixFile.WriteBack) -> Bool {
        let (file, first) = self.chain.withLock { (self.current.withLock { $0.rider }, $0.fileFirst) }
        guard (try? file.writeBack(step)) != nil else {
            self.shared.withLock { Self.needRewrite(&$0, file: first) }
            self.startSync()
            return false
        }
        return true
    }

    /// After a failed flush of the file that begins at entry `file`: its next own flush writes again
    /// everything since its last durable end (all of it, when none is known).
    static func needRewrite(_ state: inout Shared, file: UInt64) {
        state.failures += 1
        guard state.rewrite?.file != file else { return }
        state.rewrite = (file, state.durable.flatMap { $0.file == file ? $0.end : nil } ?? 0)
    }

    /// Writes `file` (the one being written) from `from` to `end` again, so that the next flush writes it
    /// (after a failed flush its pages are clean, or gone): from the log's own copy (`UnflushedCopy`). Only
    /// what the copy no longer covers (past its limit) is read back from the file, and a zero byte there
    /// means the kernel dropped pages it could not write and read back what the disk holds: what was lost
    /// cannot be written again, and the log stops until a restart (which sets that end aside as torn: no
    /// answer waited for it).
    static func writeAgain(_ file: PosixFile, from: Int64, to end: Int64, chain: inout Chain) throws(CaseVaultError) {
        // The copy's part, and before it what only the file still holds.
        var copied = chain.unflushed.start(of: chain.fileFirst, from: from, to: end)
        let copy = chain.unflushed.bytes(of: chain.fileFirst, from: copied, to: end)
        if copy == nil { copied = end }
        if copied > from {
            let bytes = try file.read(count: Int(copied - from), at: from)
            guard !bytes.contains(0) else {
                let reason = "the audit log lost entries a failed flush should have written; restart casevaultd"
                chain.unusable = reason
                throw CaseVaultError(.storageFailure, reason)
            }
            try file.write(bytes, at: from)
        }
        if copied < end, let copy {
            try file.write(copy, at: copied)
        }
    }

    public func rode(_ token: UInt64) {
        let ready = self.shared.withLock { state -> [Waiter]? in
            // A flush that failed while this one rode may have taken its error: the log's own flush decides.
            guard token > state.synced, state.failures == state.rideFailures else { return nil }
            state.synced = token
            // Durable to where the file ended when the ride was prepared; a rotation since made a later
            // file durable, and the ride tells nothing of it.
            if let end = state.rideEnd { state.advanceDurable(end.file, to: end.end, layout: end.layout) }
            state.rideEnd = nil
            state.rides += 1
            let ready = state.durableWaiters.filter { $0.batch <= token }.map(\.waiter)
            state.durableWaiters.removeAll { $0.batch <= token }
            return ready
        }
        for waiter in ready ?? [] {
            waiter.complete(.success(token))
        }
        // A ride that counted leaves nothing for the log's own flush but a due anchor: whoever waits for
        // later entries started a flush when they began to wait (`awaitDurable`). One that did not count (a
        // failed flush meanwhile, or an own flush already past it) leaves the decision to the log's own.
        if ready == nil || self.anchorDue() { self.startSync() }
    }

    public var ridingPath: String { self.logPath }
}

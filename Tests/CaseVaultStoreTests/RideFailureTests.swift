import CaseVaultAudit
import CaseVaultCore
import CaseVaultStore
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The audit log's entries ride on the store's flushes only on ext4 and xfs, so a disk that fails under
/// them needs a real ext4: here one on a loop device whose image lives on powercutfs, which fails every
/// write to the image while a switch file exists (`--fail-while`). The kernel then reports real writeback
/// errors to `sync_file_range` and `fdatasync`, as a failing disk would.
@Suite("A failing disk under ext4", .serialized, .enabled(if: geteuid() == 0, "loop devices and FUSE need root"))
struct RideFailureTests {
    /// ext4 without a journal (as this machine's root) on `/dev/loopN`, over an image on powercutfs.
    final class FailingExt4 {
        let fs: PowerCutFS
        var mountpoint: String { self.fs.root + "/ext4" }
        var switchPath: String { self.fs.root + "/failing" }
        private(set) var device = ""
        private var mounted = false

        init() throws {
            self.fs = try PowerCutFS()
            try self.fs.mount(options: ["--fail=write:/disk.img@1=EIO+", "--fail-while=\(self.fs.root)/failing"])
            let image = self.fs.mountpoint + "/disk.img"
            try Self.run("/usr/bin/truncate", ["-s", "256M", image])
            try Self.run("/usr/sbin/mkfs.ext4", ["-q", "-O", "^has_journal", image])
            self.device = try Self.run("/usr/sbin/losetup", ["-f", "--show", image])
                .trimmingCharacters(in: .whitespacesAndNewlines)
            do {
                try FileManager.default.createDirectory(atPath: self.mountpoint, withIntermediateDirectories: false)
                try self.mount()
            } catch {
                self.detach()
                throw error
            }
        }

        /// Every write to the image fails from now until `fail(false)`.
        func fail(_ failing: Bool) {
            if failing {
                _ = FileManager.default.createFile(atPath: self.switchPath, contents: nil)
            } else {
                unlink(self.switchPath)
            }
        }

        /// Writes everything the filesystem holds dirty, its own metadata included (`syncfs`). The first after
        /// a failure may report the failure itself (the device's error is kept for the next sync of it): then
        /// once more, which must succeed.
        func syncFilesystem() throws {
            if (try? Self.run("/usr/bin/sync", ["-f", self.mountpoint])) == nil {
                try Self.run("/usr/bin/sync", ["-f", self.mountpoint])
            }
        }

        /// Unmounts and mounts again: what is read next comes from the disk, not the page cache.
        func remount() throws {
            guard self.unmount() else {
                throw CocoaError(
                    .fileWriteUnknown, userInfo: [NSDebugDescriptionErrorKey: "busy: \(self.openHere())"])
            }
            try self.mount()
        }

        /// Unmounts, waiting up to 10 s for files still open on it to close (the audit log's timers hold it
        /// for a moment after it is closed).
        private func unmount() -> Bool {
            for _ in 0..<200 {
                if (try? Self.run("/usr/bin/umount", [self.mountpoint])) != nil {
                    self.mounted = false
                    return true
                }
                usleep(50_000)
            }
            return false
        }

        /// What this process holds open on the filesystem.
        private func openHere() -> [String] {
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
            return fds.compactMap { fd in
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd))
                    .flatMap { $0.hasPrefix(self.mountpoint) ? $0 : nil }
            }
        }

        private func mount() throws {
            // A write error is reported to whoever waits for it, and the filesystem goes on.
            try Self.run("/usr/bin/mount", ["-o", "errors=continue", self.device, self.mountpoint])
            self.mounted = true
        }

        @discardableResult
        static func run(_ executable: String, _ arguments: [String]) throws -> String {
            let (status, output) = try Command.run(executable, arguments)
            guard status == 0 else {
                throw CocoaError(
                    .fileWriteUnknown, userInfo: [NSDebugDescriptionErrorKey: "\(executable) \(arguments): \(status)"])
            }
            return output
        }

        /// Unmounts the filesystem and frees the loop device, so that powercutfs can unmount: called once
        /// nothing on it is open (a loop device still attached would keep powercutfs, and the test, waiting).
        func detach() {
            self.fail(false)
            if self.mounted, !self.unmount() {
                Issue.record("the ext4 filesystem was still busy at the end of the test: \(self.openHere())")
                _ = try? Self.run("/usr/bin/umount", ["-l", self.mountpoint])
                self.mounted = false
            }
            if !self.device.isEmpty {
                _ = try? Self.run("/usr/sbin/losetup", ["-d", self.device])
                // A device still in use is only marked to go when it is let go: then powercutfs could never
                // unmount, and the test would wait for it forever.
                let name = self.device.split(separator: "/").last.map(String.init) ?? ""
                if FileManager.default.fileExists(atPath: "/sys/block/\(name)/loop/backing_file") {
                    Issue.record("\(self.device) stayed attached; the filesystem under it is abandoned")
                    self.fs.abandon()
                }
                self.device = ""
            }
        }
    }

    /// What the requests of the test came to.
    struct Outcome {
        /// The last request number used.
        var last: UInt64 = 0
        /// Acknowledged puts: record → request number.
        var acknowledged: [RecordID: UInt64] = [:]
        /// Every request number whose request entry was written.
        var requests: Set<UInt64> = []
        /// Request numbers of audited puts, each of which also recorded a result entry.
        var results: Set<UInt64> = []
        /// The request whose entry was refused before it was written (it needed new space the failing disk
        /// could not flush).
        var refusedAtWrite: Set<UInt64> = []
    }

    /// One audited put as the server makes it, numbered after `outcome.last`: the request entry written, the
    /// put, the result queued, the answer held until the request entry is durable. Its entries and, if the
    /// put was acknowledged, its record go into `outcome`. Returns whether the put was acknowledged and
    /// whether the log said its entry was durable.
    static func auditedPut(
        _ outcome: inout Outcome, store: RecordStore, log: AuditLog, caseID: CaseID
    ) async throws -> (acknowledged: Bool, durable: Bool) {
        outcome.last += 1
        let number = outcome.last
        let receipt = try await log.append(AuditLogTests.request(number))
        let record = try? store.sealed.put(
            NewRecord(
                caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "fail \(number)")))
        log.record(AuditLogTests.result(number, status: record == nil ? 500 : 201))
        outcome.requests.insert(number)
        outcome.results.insert(number)
        if let record { outcome.acknowledged[record.id] = number }
        let durable = (try? await log.awaitDurable(receipt)) != nil
        return (record != nil, durable)
    }

    @Test(
        "while the disk under a riding audit log fails, no put and no entry is acknowledged; once it recovers, the log writes again what the failures lost, rides again, and after a remount every acknowledged put and entry is on the disk"
    )
    func ridesThroughAFailingDisk() async throws {
        try await Self.onFailingDisk { disk, vault, caseID in
            try await Self.putThroughFailures(vault, disk: disk, caseID: caseID)
        }
    }

    /// Makes a failing ext4 and a vault on it, runs `work` (which opens and closes the store and the log: nothing
    /// may be open on the filesystem when it is remounted or detached), then, after a remount, checks on the
    /// disk itself what `work` says was acknowledged; detaches the filesystem however it ends.
    static func onFailingDisk(
        _ work: (FailingExt4, TestVault, CaseID) async throws -> Outcome
    ) async throws {
        let disk = try FailingExt4()
        let vault = TestVault(under: disk.mountpoint)
        let caseID = Samples.caseID()
        do {
            let outcome = try await work(disk, vault, caseID)
            try disk.remount()
            try Self.expectOnDisk(vault, outcome, caseID: caseID)
        } catch {
            disk.detach()
            throw error
        }
        disk.detach()
    }

    @Test(
        "when the kernel drops the pages a failed flush could not write, the log writes them again from its own copy: once the disk recovers, puts and their entries are acknowledged again, and after a remount every acknowledged put and every entry is on the disk"
    )
    func writesAgainWhatTheKernelDropped() async throws {
        try await Self.onFailingDisk { disk, vault, caseID in
            var outcome = Outcome()
            do {
                let store = try vault.open()
                defer { store.close() }
                let (log, _) = try AuditLog.open(directory: store.auditDirectory, clock: { 1_700_000_000_000 })
                defer { log.close() }
                try log.attach(to: store)
                _ = try await Self.failThenDropPages(&outcome, store: store, log: log, disk: disk, caseID: caseID)
                let zeros = [UInt8](FileManager.default.contents(atPath: vault.data + "/audit/log") ?? Data())
                let requests = Self.requestNumbers(in: zeros)
                #expect(!requests.contains(outcome.last), "the page cache still held the failed entries")
                disk.fail(false)
                for _ in 0..<3 {
                    let (acknowledged, durable) = try await Self.auditedPut(
                        &outcome, store: store, log: log, caseID: caseID)
                    #expect(acknowledged && durable, "put \(outcome.last) after the disk recovered")
                }
                #expect(log.failure == nil, "\(String(describing: log.failure))")
            }
            return outcome
        }
    }

    @Test(
        "without a copy (past its limit: here 0), when the kernel drops the pages a failed flush could not write, the log stops and says why: the next entry is not made durable, later ones and a detach are refused at once, and a restart sets the torn end aside with every durable entry kept"
    )
    func stopsWhenNoCopyHoldsWhatTheKernelDropped() async throws {
        let disk = try FailingExt4()
        let vault = TestVault(under: disk.mountpoint)
        let caseID = Samples.caseID()
        do {
            var outcome = Outcome()
            var durable: Set<UInt64> = []
            do {
                let store = try vault.open()
                defer { store.close() }
                let (log, _) = try AuditLog.open(
                    directory: store.auditDirectory, copyLimit: 0, clock: { 1_700_000_000_000 })
                defer { log.close() }
                try log.attach(to: store)
                // What the failed flushes could not write is read back from the file, where the kernel dropped
                // it: the zeros the file was grown with.
                durable = try await Self.failThenDropPages(
                    &outcome, store: store, log: log, disk: disk, caseID: caseID)
                disk.fail(false)
                outcome.last += 1
                let receipt = try await log.append(AuditLogTests.request(outcome.last))
                let written = await #expect(throws: CaseVaultError.self) { try await log.awaitDurable(receipt) }
                #expect(written?.code == .auditUnavailable)
                #expect(log.failure?.contains("restart casevaultd") == true, "\(String(describing: log.failure))")
                outcome.last += 1
                let later = await #expect(throws: CaseVaultError.self) {
                    try await log.append(AuditLogTests.request(outcome.last))
                }
                #expect(later?.message.contains("restart casevaultd") == true, "\(String(describing: later))")
                // A detach waits for its flush with no deadline: it is answered, not left waiting.
                let detached = DispatchSemaphore(value: 0)
                let detachError = Mutex<CaseVaultError?>(nil)
                DispatchQueue.global().async {
                    do throws(CaseVaultError) {
                        try log.detach(reason: "seal")
                    } catch {
                        detachError.withLock { $0 = error }
                    }
                    detached.signal()
                }
                #expect(detached.wait(timeout: .now() + 30) == .success, "the detach was never answered")
                #expect(detachError.withLock { $0 }?.code == .auditUnavailable)
            }
            try disk.remount()
            // The restart: the torn end (zeros, then what followed them) is set aside; the entries whose
            // answers waited for them are all in what is kept.
            let (log, recovery) = try AuditLog.open(directory: vault.data + "/audit", clock: { 1_700_000_000_000 })
            log.close()
            #expect(recovery.tornEndSetAside != nil, "\(recovery)")
            let kept = Self.requestNumbers(in: AuditLogTests.read(vault).log)
            #expect(
                durable.count == 5 && durable.isSubset(of: kept), "durable \(durable.sorted()), kept \(kept.sorted())")
        } catch {
            disk.detach()
            throw error
        }
        disk.detach()
    }

    /// Five audited puts on a healthy disk (each acknowledged, its entry durable), then, the filesystem synced,
    /// three while every write fails (neither); then the clean pages the failures left are dropped, as the
    /// kernel does when it needs the memory (then what is read back is what the disk holds: here the zeros
    /// the file was grown with), once the log's own flush of the failures is over (a page it is writing
    /// again is dirty, and kept). The disk is left failing. Returns the healthy puts' request numbers.
    static func failThenDropPages(
        _ outcome: inout Outcome, store: RecordStore, log: AuditLog, disk: FailingExt4, caseID: CaseID
    ) async throws -> Set<UInt64> {
        var durable: Set<UInt64> = []
        for _ in 0..<5 {
            let (acknowledged, isDurable) = try await Self.auditedPut(&outcome, store: store, log: log, caseID: caseID)
            #expect(acknowledged && isDurable, "put \(outcome.last) on a healthy disk")
            if isDurable { durable.insert(outcome.last) }
        }
        try disk.syncFilesystem()
        disk.fail(true)
        for _ in 0..<3 {
            let (acknowledged, isDurable) = try await Self.auditedPut(&outcome, store: store, log: log, caseID: caseID)
            #expect(!acknowledged && !isDurable, "put \(outcome.last) while every write failed")
        }
        try await Task.sleep(for: .milliseconds(300))
        try Self.dropPageCache()
        try Self.dropPageCache()
        return durable
    }

    /// The request numbers of the log's entries of `kind`.
    static func requestNumbers(in log: [UInt8], kind: String = "request") -> Set<UInt64> {
        var found: Set<UInt64> = []
        for line in String(decoding: log, as: UTF8.self).split(separator: "\n") {
            guard line.contains("\"kind\":\"\(kind)\""), let range = line.range(of: "\"request\":"),
                let number = UInt64(line[range.upperBound...].prefix { $0.isNumber })
            else { continue }
            found.insert(number)
        }
        return found
    }

    /// Drops the clean pages of every file from the page cache, as memory pressure would.
    static func dropPageCache() throws {
        try "1\n".write(toFile: "/proc/sys/vm/drop_caches", atomically: false, encoding: .utf8)
    }

    /// Audited puts on a healthy disk, then while every write fails, then once it has recovered, then once
    /// more around a growth of the log while the disk fails; returns the puts acknowledged (record → request
    /// number), how many requests were made, and those whose entry was refused before it was written.
    static func putThroughFailures(
        _ vault: TestVault, disk: FailingExt4, caseID: CaseID
    ) async throws -> Outcome {
        let store = try vault.open()
        defer { store.close() }
        let (log, _) = try AuditLog.open(directory: store.auditDirectory, clock: { 1_700_000_000_000 })
        defer { log.close() }
        try log.attach(to: store)
        try #require(log.isRiding, "the audit log does not ride on ext4")
        // What ext4 itself keeps for the files and directories just made (bitmaps, inode tables) is on the
        // disk before it fails: without a journal, ext4 does not write again its own metadata whose write
        // failed (fsck's to mend), which is not what this test is about.
        try disk.syncFilesystem()
        var outcome = Outcome()

        // Healthy: every put is acknowledged, and its entry rides on its flush.
        let start = log.flushCounts
        for _ in 0..<10 {
            let (acknowledged, durable) = try await Self.auditedPut(&outcome, store: store, log: log, caseID: caseID)
            #expect(acknowledged && durable, "put \(outcome.last) on a healthy disk")
        }
        #expect(log.flushCounts.rides - start.rides >= 5, "\(log.flushCounts)")

        // Failing: the segment's flush fails, and so does every ride and flush of the log: nothing is
        // acknowledged, neither a put nor an entry. What the healthy puts left dirty for a later flush (the
        // index's commits without one) is written first: were the kernel to write it back on its own while
        // the disk fails, the flush that reports that failure could come after the recovery, and a put
        // there be refused for it (that late report is not what this test is about).
        try disk.syncFilesystem()
        disk.fail(true)
        for _ in 0..<3 {
            let (acknowledged, durable) = try await Self.auditedPut(&outcome, store: store, log: log, caseID: caseID)
            #expect(!acknowledged, "put \(outcome.last) was acknowledged while every write failed")
            #expect(!durable, "the entry of request \(outcome.last) was called durable while every write failed")
        }

        // Recovered: the log's own flush writes again what the failed ones lost, then entries ride again.
        disk.fail(false)
        let recovered = log.flushCounts
        for _ in 0..<10 {
            let (acknowledged, durable) = try await Self.auditedPut(&outcome, store: store, log: log, caseID: caseID)
            #expect(acknowledged && durable, "put \(outcome.last) after the disk recovered")
        }
        let end = log.flushCounts
        #expect(end.own > recovered.own, "the log never flushed on its own to write again what it lost: \(end)")
        #expect(end.rides - recovered.rides >= 5, "the log did not ride again after the disk recovered: \(end)")

        // The log grows while the disk fails: filled to just short of its reserved space, then a request
        // whose entry needs more. The new space cannot be made durable, so the entry is refused, not left
        // for a later flush to make durable (one that failed could lose the space itself).
        try await Self.fill(log, path: vault.data + "/audit/log", into: &outcome)
        try disk.syncFilesystem()
        disk.fail(true)
        outcome.last += 1
        let written = try? await log.append(AuditLogTests.request(outcome.last))
        #expect(written == nil, "an entry was written into new space while every write failed")
        if written == nil { outcome.refusedAtWrite.insert(outcome.last) } else { outcome.requests.insert(outcome.last) }
        disk.fail(false)
        for _ in 0..<3 {
            let (acknowledged, durable) = try await Self.auditedPut(&outcome, store: store, log: log, caseID: caseID)
            #expect(acknowledged && durable, "put \(outcome.last) after the disk recovered from the growth")
        }
        return outcome
    }

    /// Writes request entries, numbered after `outcome.last`, into `log` until the space the file at `path`
    /// has reserved (its end is zeros) has less room left than its last entry took.
    /// The entries are made durable before it returns: the growth that follows must fail on its own new
    /// space alone, not on the filling's pages too.
    static func fill(_ log: AuditLog, path: String, into outcome: inout Outcome) async throws {
        var receipt: AuditLog.Receipt?
        for _ in 0..<100 {
            let bytes = [UInt8](FileManager.default.contents(atPath: path) ?? Data())
            let end = AuditLogTests.contentEnd(bytes)
            let lastLine = end - 1 - (bytes[..<(end - 1)].lastIndex(of: UInt8(ascii: "\n")) ?? -1)
            let room = bytes.count - end
            if room < lastLine {
                if let receipt { try await log.awaitDurable(receipt) }
                return
            }
            // Most of the room at once, the last of it one entry at a time (an entry that does not fit grows
            // the file, and the filling goes on in the new space).
            for _ in 0..<max(0, (room - 4_000) / (lastLine + 100)) {
                outcome.last += 1
                outcome.requests.insert(outcome.last)
                log.record(AuditLogTests.request(outcome.last))
            }
            outcome.last += 1
            outcome.requests.insert(outcome.last)
            receipt = try await log.append(AuditLogTests.request(outcome.last))
        }
        Issue.record("the audit log never came within an entry of its reserved end")
    }

    /// From the disk itself: every acknowledged put reads back, nothing else was filed, and the log is whole
    /// with every request's entries (and every audited put's result), the refused puts' too, and none of a
    /// request refused before its entry was written.
    static func expectOnDisk(_ vault: TestVault, _ outcome: Outcome, caseID: CaseID) throws {
        let (bytes, head) = AuditLogTests.read(vault)
        let store = try vault.open()
        defer { store.close() }
        let report = AuditVerifier.verify(log: bytes, head: head, expectedKey: store.auditSigner.publicKey)
        #expect(report.ok && report.entries >= UInt64(outcome.requests.count + outcome.results.count), "\(report)")
        let found = (requests: Self.requestNumbers(in: bytes), results: Self.requestNumbers(in: bytes, kind: "result"))
        let missing = outcome.requests.subtracting(found.requests)
        #expect(missing.isEmpty, "request entries not in the log: \(missing.sorted().prefix(10))")
        let missingResults = outcome.results.subtracting(found.results)
        #expect(missingResults.isEmpty, "result entries not in the log: \(missingResults.sorted().prefix(10))")
        #expect(found.requests.isDisjoint(with: outcome.refusedAtWrite), "a refused entry is in the log")
        for (id, put) in outcome.acknowledged {
            do {
                let content = try store.sealed.get(id).content
                #expect(
                    content == Samples.content(.sessionNote, marker: "fail \(put)"), "put \(put) reads back changed")
            } catch {
                Issue.record("acknowledged put \(put) does not read back: \(error)")
            }
        }
        #expect(try store.records(caseID: caseID).count == outcome.acknowledged.count)
    }
}

import CaseVaultAudit
import CaseVaultCore
import CaseVaultStore
import Foundation
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
                self.device = ""
            }
        }
    }

    /// One audited put as the server makes it: the request entry written, the put, the result queued, the
    /// answer held until the request entry is durable. Returns the record when the put was acknowledged,
    /// and whether the log said its entry was durable.
    static func auditedPut(
        _ number: UInt64, store: RecordStore, log: AuditLog, caseID: CaseID
    ) async throws -> (record: RecordMetadata?, durable: Bool) {
        let receipt = try await log.append(AuditLogTests.request(number))
        let record = try? store.sealed.put(
            NewRecord(
                caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "fail \(number)")))
        log.record(AuditLogTests.result(number, status: record == nil ? 500 : 201))
        let durable = (try? await log.awaitDurable(receipt)) != nil
        return (record, durable)
    }

    @Test(
        "while the disk under a riding audit log fails, no put and no entry is acknowledged; once it recovers, the log writes again what the failures lost, rides again, and after a remount every acknowledged put and entry is on the disk"
    )
    func ridesThroughAFailingDisk() async throws {
        let disk = try FailingExt4()
        let vault = TestVault(under: disk.mountpoint)
        let caseID = Samples.caseID()
        // The store and the log live only inside these calls: nothing is open on the filesystem when it is
        // remounted or detached.
        do {
            let (acknowledged, requests) = try await Self.putThroughFailures(vault, disk: disk, caseID: caseID)
            try disk.remount()
            try Self.expectOnDisk(vault, acknowledged: acknowledged, requests: requests, caseID: caseID)
        } catch {
            disk.detach()
            throw error
        }
        disk.detach()
    }

    /// Audited puts on a healthy disk, then while every write fails, then once it has recovered; returns the
    /// puts acknowledged (record → request number) and how many requests were made.
    static func putThroughFailures(
        _ vault: TestVault, disk: FailingExt4, caseID: CaseID
    ) async throws -> (acknowledged: [RecordID: UInt64], requests: UInt64) {
        let store = try vault.open()
        defer { store.close() }
        let (log, _) = try AuditLog.open(directory: store.auditDirectory, clock: { 1_700_000_000_000 })
        defer { log.close() }
        try log.attach(to: store)
        try #require(log.isRiding, "the audit log does not ride on ext4")
        var acknowledged: [RecordID: UInt64] = [:]
        var number: UInt64 = 0

        // Healthy: every put is acknowledged, and its entry rides on its flush.
        let start = log.flushCounts
        for _ in 0..<10 {
            number += 1
            let (record, durable) = try await Self.auditedPut(number, store: store, log: log, caseID: caseID)
            #expect(record != nil && durable, "put \(number) on a healthy disk")
            if let record { acknowledged[record.id] = number }
        }
        #expect(log.flushCounts.rides - start.rides >= 5, "\(log.flushCounts)")

        // Failing: the segment's flush fails, and so does every ride and flush of the log: nothing is
        // acknowledged, neither a put nor an entry.
        disk.fail(true)
        for _ in 0..<3 {
            number += 1
            let (record, durable) = try await Self.auditedPut(number, store: store, log: log, caseID: caseID)
            #expect(record == nil, "put \(number) was acknowledged while every write failed")
            #expect(!durable, "the entry of request \(number) was called durable while every write failed")
        }

        // Recovered: the log's own flush writes again what the failed ones lost, then entries ride again.
        disk.fail(false)
        let recovered = log.flushCounts
        for _ in 0..<10 {
            number += 1
            let (record, durable) = try await Self.auditedPut(number, store: store, log: log, caseID: caseID)
            #expect(record != nil && durable, "put \(number) after the disk recovered")
            if let record { acknowledged[record.id] = number }
        }
        let end = log.flushCounts
        #expect(end.own > recovered.own, "the log never flushed on its own to write again what it lost: \(end)")
        #expect(end.rides - recovered.rides >= 5, "the log did not ride again after the disk recovered: \(end)")
        return (acknowledged, number)
    }

    /// From the disk itself: every acknowledged put reads back, nothing else was filed, and the log is whole
    /// with every request's entries, the refused ones' too.
    static func expectOnDisk(
        _ vault: TestVault, acknowledged: [RecordID: UInt64], requests: UInt64, caseID: CaseID
    ) throws {
        let (bytes, head) = AuditLogTests.read(vault)
        let store = try vault.open()
        defer { store.close() }
        let report = AuditVerifier.verify(log: bytes, head: head, expectedKey: store.auditSigner.publicKey)
        #expect(report.ok && report.entries >= 2 * requests, "\(report)")
        let text = String(decoding: bytes, as: UTF8.self)
        for request in 1...requests {
            #expect(
                text.contains("\"request\":\(request),") || text.contains("\"request\":\(request)}"),
                "request \(request)'s entries are not in the log")
        }
        for (id, put) in acknowledged {
            do {
                let content = try store.sealed.get(id).content
                #expect(
                    content == Samples.content(.sessionNote, marker: "fail \(put)"), "put \(put) reads back changed")
            } catch {
                Issue.record("acknowledged put \(put) does not read back: \(error)")
            }
        }
        #expect(try store.records(caseID: caseID).count == acknowledged.count)
    }
}

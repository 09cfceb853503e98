import CaseVaultAudit
import CaseVaultCore
import CaseVaultStore
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The audit log through its real parts: a real file, the store's real audit key, libsodium's BLAKE2b and
/// Ed25519, and the verifier that `casevaultctl audit verify` runs.
@Suite("Audit log", .serialized)
struct AuditLogTests {
    /// A store (for its audit key) and a log with a checkpoint every `interval` entries.
    static func openLog(_ vault: TestVault, interval: Int) throws -> (RecordStore, AuditLog) {
        let store = try vault.open()
        let (log, _) = try AuditLog.open(directory: store.auditDirectory, checkpointInterval: interval, clock: { 1_700_000_000_000 })
        try log.attach(store.auditSigner)
        return (store, log)
    }

    static func request(_ number: UInt64, action: String = "POST /v1/cases/{case_id}/records") -> AuditEntry {
        var entry = AuditEntry(kind: .request, time: 1_700_000_000_000 + Int64(number))
        entry.request = number
        entry.uid = 4000 + UInt32(number % 7)
        entry.roles = ["mediator"]
        entry.action = action
        entry.ids = ["case_id": String(repeating: "ab", count: 16)]
        return entry
    }

    static func result(_ number: UInt64, status: Int) -> AuditEntry {
        var entry = AuditEntry(kind: .result, time: 1_700_000_000_001 + Int64(number))
        entry.request = number
        entry.status = status
        entry.problem = status >= 400 ? "forbidden" : nil
        return entry
    }

    static func read(_ vault: TestVault) -> (log: [UInt8], head: [UInt8]?) {
        let log = FileManager.default.contents(atPath: vault.data + "/audit/log").map { [UInt8]($0) } ?? []
        let head = FileManager.default.contents(atPath: vault.data + "/audit/head").map { [UInt8]($0) }
        return (log, head)
    }

    /// Where the entries end: the file is zero-filled after them.
    static func contentEnd(_ log: [UInt8]) -> Int {
        log.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0
    }

    /// The 1-based line that holds byte `offset`.
    static func line(of offset: Int, in log: [UInt8]) -> Int {
        log[..<offset].reduce(1) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
    }

    @Test("a written log verifies; every single-byte change and every cut is reported, naming the entry it hit")
    func everyFlipAndCutIsReported() async throws {
        let vault = TestVault()
        let (store, log) = try Self.openLog(vault, interval: 4)
        for number in UInt64(1)...9 {
            _ = try await log.append(Self.request(number))
            log.record(Self.result(number, status: number % 3 == 0 ? 403 : 201))
        }
        log.close()
        let signer = store.auditSigner
        let key = signer.publicKey
        store.close()
        let (file, head) = Self.read(vault)
        #expect(file.count % (4 << 20) == 0, "the log grows in zero-filled 4 MiB steps")
        let intact = AuditVerifier.verify(log: file, head: head, expectedKey: key)
        // The entries and a little of the zero fill after them (the verifier takes any amount of it).
        let bytes = Array(file[..<(Self.contentEnd(file) + 64)])
        #expect(AuditVerifier.verify(log: bytes, head: head, expectedKey: key) == intact)
        #expect(intact.ok, "\(intact)")
        #expect(intact.entries == 1 + 18 + 4 + 1, "key, 9 requests and 9 results, 4 interval checkpoints and the shutdown one")
        #expect(intact.checkpoints == 5)
        #expect(intact.lastCheckpoint == intact.entries && intact.unsignedEntries == 0)

        // Every position, two different changes each: the entry holding the byte is the first bad one.
        var generator = SystemRandomNumberGenerator()
        for offset in bytes.indices {
            for mask in [UInt8(0x01), UInt8.random(in: 1...255, using: &generator)] {
                var flipped = bytes
                flipped[offset] ^= mask
                let report = AuditVerifier.verify(log: flipped, head: head, signer: signer)
                #expect(!report.ok, "a change at byte \(offset) went unnoticed")
                #expect(
                    report.firstBad?.seq == UInt64(Self.line(of: offset, in: bytes)),
                    "a change at byte \(offset) (line \(Self.line(of: offset, in: bytes))) was blamed on \(String(describing: report.firstBad))"
                )
            }
        }
        // Deep in the zero fill of the whole file, too.
        for offset in [file.count - 1, file.count / 2, Self.contentEnd(file) + 4096] {
            var flipped = file
            flipped[offset] ^= 0x01
            #expect(!AuditVerifier.verify(log: flipped, head: head, expectedKey: nil).ok, "a change at byte \(offset) went unnoticed")
        }
        // Every cut: the last entry is the shutdown checkpoint, so each one cuts before it.
        for length in 0..<Self.contentEnd(file) {
            let report = AuditVerifier.verify(log: Array(bytes[..<length]), head: head, expectedKey: nil)
            #expect(!report.ok, "a cut to \(length) bytes went unnoticed")
        }
        // Whole entries dropped from the end, or the head file removed.
        let lines = file[..<Self.contentEnd(file)].split(separator: UInt8(ascii: "\n")).map { Array($0) + [UInt8(ascii: "\n")] }
        let withoutLast = Array(lines.dropLast().joined())
        let cut = AuditVerifier.verify(log: withoutLast, head: head, expectedKey: nil)
        #expect(cut.firstBad?.seq == intact.entries, "\(cut)")
        #expect(cut.firstBad?.reason.contains("cut short") == true)
        #expect(!AuditVerifier.verify(log: bytes, head: nil, expectedKey: nil).ok)
        // Every change to the head file.
        let headBytes = try #require(head)
        for offset in headBytes.indices {
            var flipped = headBytes
            flipped[offset] ^= 0x01
            #expect(!AuditVerifier.verify(log: bytes, head: flipped, expectedKey: nil).ok, "a change at head byte \(offset) went unnoticed")
        }
        // Another key: the log verifies on its own but not against a vault it does not belong to.
        let other = TestVault()
        let otherStore = try other.open()
        let foreign = AuditVerifier.verify(log: bytes, head: head, expectedKey: otherStore.auditSigner.publicKey)
        otherStore.close()
        #expect(!foreign.ok && foreign.firstBad?.seq == 1)
    }

    @Test("reopening cuts a torn last entry and carries the chain on; a damaged last entry is refused")
    func reopenAfterTornWrite() async throws {
        let vault = TestVault()
        do {
            let (store, log) = try Self.openLog(vault, interval: 1000)
            _ = try await log.append(Self.request(1))
            store.close()
            // No close: as after SIGKILL, no shutdown checkpoint.
        }
        // Half an entry, as a crash mid-write leaves it.
        let path = vault.data + "/audit/log"
        let end = Self.contentEnd(Self.read(vault).log)
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.seek(toOffset: UInt64(end))
        let torn = Data("0123456789abcdef {\"kind\":\"req".utf8)
        handle.write(torn)
        try handle.close()

        let store = try vault.open()
        let (log, recovery) = try AuditLog.open(directory: store.auditDirectory, clock: { 1_700_000_000_000 })
        #expect(recovery.discardedBytes == torn.count)
        #expect(recovery.entries == 2)
        #expect(Self.contentEnd(Self.read(vault).log) == end, "the torn entry is zeroed")
        try log.attach(store.auditSigner)
        _ = try await log.append(Self.request(2))
        log.close()
        let (bytes, head) = Self.read(vault)
        let report = AuditVerifier.verify(log: bytes, head: head, expectedKey: store.auditSigner.publicKey)
        #expect(report.ok, "\(report)")
        #expect(report.entries == 5)

        // Alter the last entry: the daemon must not append to a log it cannot trust.
        var altered = bytes
        altered[Self.contentEnd(bytes) - 10] ^= 0x04
        _ = FileManager.default.createFile(atPath: path, contents: Data(altered), attributes: [.posixPermissions: 0o600])
        #expect(throws: CaseVaultError.self) {
            _ = try AuditLog.open(directory: store.auditDirectory, clock: { 0 })
        }
        store.close()
    }

    /// The filesystem type (statfs's f_type) of `path`, as coreutils' `stat -f` reads it.
    static func filesystemType(_ path: String) -> Int {
        let output = (try? Command.run("/usr/bin/stat", ["-f", "-c", "%t", path]).output) ?? ""
        return Int(output.trimmingCharacters(in: .whitespacesAndNewlines), radix: 16) ?? -1
    }

    /// Audited puts as the server makes them, one after another: the request entry written, the put, the
    /// result queued, the answer held until the request entry is durable. Returns how the log flushed.
    static func auditedPuts(_ vault: TestVault, count: Int) async throws -> (riding: Bool, own: Int, rides: Int) {
        let store = try vault.open()
        defer { store.close() }
        let (log, _) = try AuditLog.open(directory: store.auditDirectory, clock: { 1_700_000_000_000 })
        try log.attach(to: store)
        let before = log.flushCounts
        let caseID = Samples.caseID()
        for number in UInt64(1)...UInt64(count) {
            let receipt = try await log.append(Self.request(number))
            _ = try store.put(NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "ride \(number)")))
            log.record(Self.result(number, status: 201))
            try await log.awaitDurable(receipt)
        }
        let after = log.flushCounts
        let riding = log.isRiding
        log.close()
        let (bytes, head) = Self.read(vault)
        let report = AuditVerifier.verify(log: bytes, head: head, expectedKey: store.auditSigner.publicKey)
        #expect(report.ok && report.entries >= UInt64(2 * count), "\(report)")
        return (riding, after.own - before.own, after.rides - before.rides)
    }

    @Test("on ext4 or xfs a put's flush carries its audit entry; elsewhere (tmpfs) the log flushes on its own")
    func entriesRideOnPutFlushes() async throws {
        let vault = TestVault()
        let inPlace = [0xEF53, 0x5846_5342].contains(Self.filesystemType(vault.root))
        let onDisk = try await Self.auditedPuts(vault, count: 40)
        #expect(onDisk.riding == inPlace)
        if inPlace {
            #expect(onDisk.rides == 40 && onDisk.own == 0, "every put carried its entry: \(onDisk)")
        } else {
            #expect(onDisk.rides == 0 && onDisk.own >= 40, "\(onDisk)")
        }

        // tmpfs overwrites in place but has no disk: never ridden, the log flushes for every request.
        guard Self.filesystemType("/dev/shm") == 0x0102_1994 else { return }
        let shm = TestVault(under: "/dev/shm")
        let inMemory = try await Self.auditedPuts(shm, count: 10)
        #expect(!inMemory.riding && inMemory.rides == 0 && inMemory.own >= 10, "\(inMemory)")
    }

    @Test("the tail reads the newest entries, oldest first, however far back they reach")
    func tailAcrossWindows() async throws {
        let vault = TestVault()
        let (store, log) = try Self.openLog(vault, interval: 100)
        defer { store.close() }
        #expect(try AuditTail.read(logAt: log.logPath, count: 5).map(\.kind) == [.key], "only the key entry so far")
        for number in UInt64(1)...1500 {
            _ = try await log.append(Self.request(number, action: "POST /v1/cases/{case_id}/records #\(number)"))
        }
        let total = log.entries
        // 1,000 entries span more than the first 64 KiB window.
        let tail = try AuditTail.read(logAt: log.logPath, count: 1000)
        #expect(tail.count == 1000 && tail.last?.seq == total && tail.first?.seq == total - 999)
        #expect(zip(tail, tail.dropFirst()).allSatisfy { $0.seq + 1 == $1.seq }, "no gap and no entry twice")
        #expect(tail.last?.action == "POST /v1/cases/{case_id}/records #1500")
        #expect(try AuditTail.read(logAt: log.logPath, count: 3).map(\.seq) == [total - 2, total - 1, total])
        log.close()
        let all = try AuditTail.read(logAt: log.logPath, count: 100_000)
        #expect(all.count == Int(total) + 1 && all.first?.seq == 1 && all.last?.kind == .checkpoint)
    }

    @Test("concurrent requests share flushes and every one lands, in one unbroken chain")
    func concurrentAppends() async throws {
        let vault = TestVault()
        let (store, log) = try Self.openLog(vault, interval: 50)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for number in UInt64(1)...400 {
                group.addTask {
                    _ = try await log.append(Self.request(number))
                    log.record(Self.result(number, status: 200))
                }
            }
            try await group.waitForAll()
        }
        log.close()
        let (bytes, head) = Self.read(vault)
        let report = AuditVerifier.verify(log: bytes, head: head, expectedKey: store.auditSigner.publicKey)
        store.close()
        #expect(report.ok, "\(report)")
        // The key, 800 entries, a checkpoint after every 50 (checkpoints count too) and the shutdown one.
        #expect(report.entries == 1 + 800 + 16 + 1)
        #expect(report.checkpoints == 17)
        let text = String(decoding: bytes, as: UTF8.self)
        for number in [1, 200, 400] {
            #expect(text.contains("\"kind\":\"request\",\"request\":\(number),"))
        }
    }

    @Test(
        "an unwritable log refuses at once, says why, and recovers when it is writable again",
        .enabled(if: geteuid() == 0, "chattr +i needs root")
    )
    func unwritableLog() async throws {
        let vault = TestVault()
        let (store, log) = try Self.openLog(vault, interval: 1000)
        _ = try await log.append(Self.request(1))
        let path = vault.data + "/audit/log"
        guard try Self.chattr("+i", path) else {
            store.close()
            Issue.record("this filesystem does not take the immutable flag; the test cannot make the log unwritable")
            return
        }
        let start = ContinuousClock.now
        await #expect(throws: CaseVaultError.self) { _ = try await log.append(Self.request(2)) }
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(log.failure?.contains("not permitted") == true, "\(String(describing: log.failure))")
        #expect(try Self.chattr("-i", path))
        _ = try await log.append(Self.request(3))
        #expect(log.failure == nil)
        log.close()
        let (bytes, head) = Self.read(vault)
        let report = AuditVerifier.verify(log: bytes, head: head, expectedKey: store.auditSigner.publicKey)
        store.close()
        #expect(report.ok, "\(report)")
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(!text.contains("\"request\":2,"), "the refused entry must not be in the log")
        #expect(text.contains("\"request\":3,"))
    }

    /// Runs chattr; false when the filesystem does not support the flag.
    static func chattr(_ flag: String, _ path: String) throws -> Bool {
        try Command.run("/usr/bin/chattr", [flag, path]).status == 0
    }
}

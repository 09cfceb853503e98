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
        let (log, _) = try AuditLog.open(
            directory: store.auditDirectory, checkpointInterval: interval, clock: { 1_700_000_000_000 })
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

    /// A read as the server audits it under a read window: its request entry written (no flush begun for
    /// it), its result recorded, and its flush asked for within `window`.
    static func answerRead(_ number: UInt64, on log: AuditLog, within window: Duration) async throws
        -> AuditLog.Receipt
    {
        let receipt = try await log.append(
            Self.request(number, action: "GET /v1/records/{record_id}"), flushingSoon: false)
        log.record(Self.result(number, status: 200))
        log.flushWithin(receipt, window)
        return receipt
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
        #expect(
            intact.entries == 1 + 18 + 4 + 1,
            "key, 9 requests and 9 results, 4 interval checkpoints and the shutdown one")
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
            #expect(
                !AuditVerifier.verify(log: flipped, head: head, expectedKey: nil).ok,
                "a change at byte \(offset) went unnoticed")
        }
        // Every cut: the last entry is the shutdown checkpoint, so each one cuts before it.
        for length in 0..<Self.contentEnd(file) {
            let report = AuditVerifier.verify(log: Array(bytes[..<length]), head: head, expectedKey: nil)
            #expect(!report.ok, "a cut to \(length) bytes went unnoticed")
        }
        // Whole entries dropped from the end, or the head file removed.
        let lines = file[..<Self.contentEnd(file)].split(separator: UInt8(ascii: "\n")).map {
            Array($0) + [UInt8(ascii: "\n")]
        }
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
            #expect(
                !AuditVerifier.verify(log: bytes, head: flipped, expectedKey: nil).ok,
                "a change at head byte \(offset) went unnoticed")
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
        _ = FileManager.default.createFile(
            atPath: path, contents: Data(altered), attributes: [.posixPermissions: 0o600])
        #expect(throws: CaseVaultError.self) {
            _ = try AuditLog.open(directory: store.auditDirectory, clock: { 0 })
        }
        store.close()
    }

    /// Where a power cut's lost block lies in the log's end: among the last two lines, which open checks,
    /// or behind them; or before the head, the checkpoint the log last knew flushed, which no cut can take.
    enum LostBlock: CaseIterable {
        case inTheLastLines, behindTheLastLines, beforeTheHead
    }

    @Test(
        "an end a power cut tore (a lost block reads back as zeros, a later one kept) is set aside at open with no operator and recorded as a break; zeros before the head are left for verify to name, altered bytes refused",
        arguments: LostBlock.allCases)
    func powerCutTornEndIsSetAside(_ lost: LostBlock) async throws {
        let vault = TestVault()
        let interval = lost == .beforeTheHead ? 5 : 1000
        do {
            let store = try vault.open()
            // The anchor stays where attach put it however slowly this runs (it follows the log a second
            // later by default): these entries come after it, as the entries of a power cut's last moments do.
            let (log, _) = try AuditLog.open(
                directory: store.auditDirectory, checkpointInterval: interval, anchorInterval: .seconds(3600),
                clock: { 1_700_000_000_000 })
            try log.attach(to: store)
            for number in UInt64(1)...60 {
                try await log.awaitDurable(try await log.append(Self.request(number)))
            }
            store.close()
        }
        let path = vault.data + "/audit/log"
        let (bytes, _) = Self.read(vault)
        let end = Self.contentEnd(bytes)
        let starts = [0] + bytes[..<end].indices.filter { bytes[$0] == UInt8(ascii: "\n") }.map { $0 + 1 }.dropLast()
        func seq(_ start: Int) -> UInt64 {
            let line = String(decoding: bytes[start...].prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
            let digits = line.components(separatedBy: "\"seq\":").last?.prefix { $0.isNumber } ?? ""
            return UInt64(digits) ?? 0
        }
        // What the cut lost: a whole 4 KiB block of what was written, with more written after it; or, among
        // the last two lines, from inside one to inside the next.
        let lostBytes: Range<Int>
        switch lost {
        case .inTheLastLines: lostBytes = (starts[starts.count - 2] + 20)..<(starts[starts.count - 1] + 20)
        case .behindTheLastLines, .beforeTheHead:
            let block = (starts[starts.count - 12] / 4096) * 4096
            lostBytes = block..<(block + 4096)
        }
        #expect(lostBytes.upperBound < end, "the log is too short for bytes to be kept after the lost ones")
        let tornLine = try #require(starts.last { $0 <= lostBytes.lowerBound })
        let lastKept = try #require(starts.last { $0 < tornLine })

        if lost != .beforeTheHead {
            // Altered bytes there are not what a power cut leaves: refused, as before (after the anchor).
            var altered = bytes
            altered[tornLine + 30] ^= 0x04
            _ = FileManager.default.createFile(
                atPath: path, contents: Data(altered), attributes: [.posixPermissions: 0o600])
            let store = try vault.open()
            defer { store.close() }
            #expect(throws: CaseVaultError.self) {
                let (log, _) = try AuditLog.open(directory: store.auditDirectory, clock: { 1_700_000_000_000 })
                try log.attach(to: store)
            }
            let now = FileManager.default.contents(atPath: path).map { [UInt8]($0) } ?? []
            #expect(now == altered, "a refused log was changed")
        }

        var cut = bytes
        for offset in lostBytes { cut[offset] = 0 }
        _ = FileManager.default.createFile(atPath: path, contents: Data(cut), attributes: [.posixPermissions: 0o600])
        let store = try vault.open()
        defer { store.close() }
        if lost == .beforeTheHead {
            // The head names a checkpoint after the lost block: it was flushed, so this is no power cut.
            // Nothing is set aside; a start checks no entry before the anchor's, and verify names the damage.
            let head = try #require(Self.read(vault).head)
            let headSeq = try JSONDecoder().decode(AuditHead.self, from: Data(head)).seq
            #expect(headSeq > seq(lastKept), "the head \(headSeq) does not lie after the lost block")
            let (_, recovery) = try AuditLog.open(directory: store.auditDirectory, clock: { 1_700_000_000_000 })
            #expect(recovery.tornEndSetAside == nil)
            let (now, _) = Self.read(vault)
            #expect(Array(now[lostBytes]) == Array(cut[lostBytes]), "the damage was changed")
            let report = AuditVerifier.verify(log: now, head: head, expectedKey: store.auditSigner.publicKey)
            #expect(!report.ok)
            return
        }
        var (log, recovery) = try AuditLog.open(directory: store.auditDirectory, clock: { 1_700_000_000_000 })
        let aside = try #require(recovery.tornEndSetAside, "nothing was set aside")
        #expect(
            recovery.entries == seq(lastKept), "the log goes on from entry \(recovery.entries), not \(seq(lastKept))")
        // What was set aside is exactly the torn end, kept beside the log.
        let kept = FileManager.default.contents(atPath: vault.data + "/audit/" + aside).map { [UInt8]($0) } ?? []
        #expect(kept == Array(cut[tornLine..<end]), "the copy set aside is not the torn end")
        if lost == .behindTheLastLines {
            // A start that stops before its attach (sealed, or refused): the next start records the break.
            (log, recovery) = try AuditLog.open(directory: store.auditDirectory, clock: { 1_700_000_000_000 })
            #expect(recovery.tornEndSetAside == nil)
        }
        try log.attach(to: store)
        let names = try FileManager.default.contentsOfDirectory(atPath: vault.data + "/audit")
        #expect(names.contains(aside + ".recorded") && !names.contains(aside), "\(names)")
        _ = try await log.append(Self.request(61))
        log.close()
        let (after, head) = Self.read(vault)
        let report = AuditVerifier.verify(log: after, head: head, expectedKey: store.auditSigner.publicKey)
        #expect(report.ok && report.breaks.count == 1, "\(report)")
        let text = String(decoding: after, as: UTF8.self)
        #expect(text.contains("a power cut tore the log after entry \(seq(lastKept)) before it was flushed"))
        #expect(
            !after.contains(subsequence: Array(bytes[starts[starts.count - 1]..<end])),
            "the torn end is still in the log")
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
            _ = try store.sealed.put(
                NewRecord(
                    caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "ride \(number)")
                ))
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

    @Test(
        "a read's entry, its answer gone without waiting, is on disk within its window, riding on the store's flushes or not"
    )
    func readsAreDurableWithinTheirWindow() async throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let (log, _) = try AuditLog.open(directory: store.auditDirectory, clock: { 1_700_000_000_000 })
        try log.attach(to: store)
        // Nothing else would flush these entries before the anchor falls due, a second after the attach: the
        // window's own flush must, well before that.
        let inPlace = [0xEF53, 0x5846_5342].contains(Self.filesystemType(vault.root))
        #expect(log.isRiding == inPlace)
        let before = log.flushCounts
        let first = ContinuousClock.now
        var receipts: [AuditLog.Receipt] = []
        for number in UInt64(1)...20 {
            receipts.append(try await Self.answerRead(number, on: log, within: .milliseconds(20)))
        }
        // Timed from the last read: the appends resume on the cooperative pool, which other suites' tests may
        // hold meanwhile, spreading the reads over more windows (one more flush each at most).
        let last = ContinuousClock.now
        let windows = Int((last - first) / .milliseconds(20)) + 1
        while !receipts.allSatisfy(log.isDurable), ContinuousClock.now - last < .milliseconds(500) {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(receipts.allSatisfy(log.isDurable), "reads' entries not durable 0.5 s after a 20 ms window")
        let own = log.flushCounts.own - before.own
        #expect(
            own >= 1 && own <= windows + 2,
            "the twenty reads took \(own) flushes of the log's own in \(windows) window(s)")
        log.close()
        let (bytes, head) = Self.read(vault)
        let report = AuditVerifier.verify(log: bytes, head: head, expectedKey: store.auditSigner.publicKey)
        #expect(report.ok && report.entries >= 40, "\(report)")
    }

    @Test(
        "a log that rides on no store's flushes flushes the reads of one window once, and starts a write's flush at once"
    )
    func readsShareTheirWindowsFlushWithoutRiding() async throws {
        let vault = TestVault()
        // Attached to no store: every flush is the log's own, as wherever it cannot ride (on the database's
        // storage too, where it is attached only for its anchor).
        let (log, _) = try AuditLog.open(directory: vault.root + "/audit", clock: { 1_700_000_000_000 })
        defer { log.close() }
        #expect(!log.isRiding)
        // Reads arriving one every 2 ms within a 1 s window, as a server's GETs do while flushes run: one
        // flush of the log's own for all of them at the window's end, where each read's entry used to start
        // a flush of its own. (On a machine so loaded that the reads straddle windows, one more a window.)
        let first = try await log.append(Self.request(1, action: "GET /v1/records/{record_id}"), flushingSoon: false)
        try await log.awaitDurable(first)
        let before = log.flushCounts.own
        let start = ContinuousClock.now
        var receipts: [AuditLog.Receipt] = []
        for number in UInt64(2)...11 {
            receipts.append(try await Self.answerRead(number, on: log, within: .seconds(1)))
            usleep(2_000)  // On this thread: a task's sleep may overrun by far on a busy pool.
        }
        let windows = Int((ContinuousClock.now - start) / .seconds(1)) + 1
        while !receipts.allSatisfy(log.isDurable), ContinuousClock.now - start < .seconds(5 + windows) {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(receipts.allSatisfy(log.isDurable), "reads' entries not durable 5 s after their window")
        let own = log.flushCounts.own - before
        #expect(
            own >= 1 && own <= windows + 1, "the ten reads took \(own) flushes of the log's own in \(windows) window(s)"
        )

        // A write's request entry: its flush starts as it is written, before anyone awaits it, while the
        // route works.
        let write = try await log.append(Self.request(12))
        let written = ContinuousClock.now
        while !log.isDurable(write), ContinuousClock.now - written < .seconds(2) {
            try await Task.sleep(for: .milliseconds(1))
        }
        #expect(log.isDurable(write), "a write's entry was not flushed within 2 s of being written")
    }

    @Test("reads written while the log's own flush runs wait for their window's end, not for another flush at once")
    func readsDuringAFlushWaitForTheirWindow() async throws {
        let vault = TestVault()
        let (log, _) = try AuditLog.open(directory: vault.root + "/audit", clock: { 1_700_000_000_000 })
        defer { log.close() }
        #expect(!log.isRiding)
        // The syncer's first flush is held open until the reads below are written. Every flush it begins is
        // counted as it begins, before the device is asked, so that a slow disk cannot hide one.
        let held = HeldFlush()
        defer { held.release.signal() }
        log.beforeSyncerFlush { held.begin() }
        defer { log.beforeSyncerFlush(nil) }
        // A write's request entry starts its flush at once.
        let write = try await log.append(Self.request(1))
        let start = ContinuousClock.now
        while held.begun == 0, ContinuousClock.now - start < .seconds(10) {
            try await Task.sleep(for: .milliseconds(1))
        }
        try #require(held.begun == 1, "the write's entry started no flush")
        // Five reads answered while that flush is held, in a window of an hour: nothing flushes them before
        // its end unless someone waits for them (however long the cooperative pool keeps this test waiting).
        var reads: [AuditLog.Receipt] = []
        for number in UInt64(2)...6 {
            reads.append(try await Self.answerRead(number, on: log, within: .seconds(3600)))
        }
        held.release.signal()
        let released = ContinuousClock.now
        while !log.isDurable(write), ContinuousClock.now - released < .seconds(10) {
            try await Task.sleep(for: .milliseconds(1))
        }
        #expect(log.isDurable(write), "the held flush did not finish")
        // The syncer finds the reads written meanwhile: they wait for their window, not for a flush at once.
        try await Task.sleep(for: .milliseconds(300))
        #expect(held.begun == 1, "\(held.begun) flushes begun before the reads' window ended, where one was held")
        #expect(!reads.contains(where: log.isDurable), "a read's entry was flushed before its window ended")
        // Waited for, they are flushed at once. (The window's own end is `readsShareTheirWindowsFlushWithoutRiding`'s.)
        if let last = reads.last {
            try await log.awaitDurable(last)
        }
        #expect(reads.allSatisfy(log.isDurable), "the reads' entries were not durable once waited for")
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
        #expect(
            try AuditTail.read(directory: log.directory, count: 5).map(\.kind) == [.key], "only the key entry so far")
        for number in UInt64(1)...1500 {
            _ = try await log.append(Self.request(number, action: "POST /v1/cases/{case_id}/records #\(number)"))
        }
        let total = log.entries
        // 1,000 entries span more than the first 64 KiB window.
        let tail = try AuditTail.read(directory: log.directory, count: 1000)
        #expect(tail.count == 1000 && tail.last?.seq == total && tail.first?.seq == total - 999)
        #expect(zip(tail, tail.dropFirst()).allSatisfy { $0.seq + 1 == $1.seq }, "no gap and no entry twice")
        #expect(tail.last?.action == "POST /v1/cases/{case_id}/records #1500")
        #expect(try AuditTail.read(directory: log.directory, count: 3).map(\.seq) == [total - 2, total - 1, total])
        log.close()
        let all = try AuditTail.read(directory: log.directory, count: 100_000)
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

    @Test(
        "the hand-written encoder writes what JSONEncoder with sorted keys writes, and it decodes back to the same entry"
    )
    func encoderMatchesFoundation() throws {
        var entries: [AuditEntry] = [Self.request(7), Self.result(7, status: 403), Self.result(8, status: 201)]
        var everything = AuditEntry(seq: 18_446_744_073_709_551_615, kind: .checkpoint, time: -1)
        everything.request = 0
        everything.uid = UInt32.max
        everything.roles = ["director", "operator"]
        everything.action = "GET /v1/records/{record_id}/attachments/{attachment_id}"
        everything.ids = ["record_id": String(repeating: "cd", count: 16), "case_id": "ab", "user": "uid:4002"]
        everything.status = 599
        everything.problem = "audit-suppressed"
        everything.publicKey = String(repeating: "0f", count: 32)
        everything.signature = String(repeating: "e1", count: 64)
        everything.suppressed = 12
        everything.reason = "break: entry 5 \"is\" not\\here\n\t\r\u{08}\u{0c}\u{01}\u{1f} é / ✓"
        everything.previous = String(repeating: "9a", count: 32)
        everything.firstKept = 4242
        entries.append(everything)
        entries.append(AuditEntry(kind: .key, time: 0))
        entries.append(AuditEntry(seq: 10, kind: .key, time: Int64.min))
        entries.append(AuditEntry(seq: 9_999_999_999, kind: .key, time: Int64.max))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for entry in entries {
            let ours = AuditChain.encode(entry)
            #expect(String(decoding: ours, as: UTF8.self) == String(decoding: try encoder.encode(entry), as: UTF8.self))
            #expect(try JSONDecoder().decode(AuditEntry.self, from: Data(ours)) == entry)
        }
    }

    // MARK: Rotation

    /// The names in the vault's audit directory that are files of the log (not set aside), oldest first.
    static func logFiles(_ vault: TestVault) throws -> [String] {
        let names = try FileManager.default.contentsOfDirectory(atPath: vault.data + "/audit")
        let rotated = names.filter { $0.hasPrefix("log.") && $0.count == 24 && $0.dropFirst(4).allSatisfy(\.isNumber) }
            .sorted()
        return rotated + (names.contains("log") ? ["log"] : [])
    }

    /// A log that rotates every 16 KiB and keeps `keep` rotated files, attached to its store (anchored), with
    /// `count` requests and results written and the log closed.
    static func rotatedLog(_ vault: TestVault, keep: Int, count: UInt64) async throws -> RecordStore {
        let (store, log) = try Self.rotatingLog(vault, keep: keep)
        for number in UInt64(1)...count {
            _ = try await log.append(Self.request(number))
            log.record(Self.result(number, status: 201))
        }
        log.close()
        return store
    }

    /// A store and its log, attached, rotating every 16 KiB and keeping `keep` rotated files.
    static func rotatingLog(_ vault: TestVault, keep: Int) throws -> (RecordStore, AuditLog) {
        let store = try vault.open()
        let retention = AuditLog.Retention(rotateBytes: 16 << 10, keepFiles: keep)
        let (log, _) = try AuditLog.open(
            directory: store.auditDirectory, checkpointInterval: 50, retention: retention, clock: { 1_700_000_000_000 })
        try log.attach(to: store)
        return (store, log)
    }

    /// Verifies the vault's log, all its files, with the store's keys and anchor.
    static func verifyAll(_ vault: TestVault, _ store: RecordStore) throws -> AuditReport {
        var anchor: AuditAnchor?
        if case .anchored(let value) = try store.auditAnchor() { anchor = value }
        return AuditVerifier.verify(
            segments: try AuditSegment.files(in: store.auditDirectory), head: Self.read(vault).head,
            signer: store.auditSigner, anchor: anchor
        )
    }

    /// Whether a log opened on the vault's audit directory attaches to `store`: `nil` when it does, else why not.
    static func attachRefusal(_ store: RecordStore, accept: Bool = false) -> String? {
        do {
            let (log, _) = try AuditLog.open(
                directory: store.auditDirectory, acceptBreak: accept, clock: { 1_700_000_000_000 })
            defer { log.close() }
            try log.attach(to: store)
            return nil
        } catch {
            return error.message
        }
    }

    @Test(
        "the log rotates into files that carry one chain; verify proves the whole sequence; the retention removes the oldest files and says so"
    )
    func rotationKeepsOneChain() async throws {
        let vault = TestVault()
        let store = try await Self.rotatedLog(vault, keep: 3, count: 300)
        defer { store.close() }
        let files = try Self.logFiles(vault)
        #expect(files.count == 4 && files.last == "log", "three rotated files and log: \(files)")
        let report = try Self.verifyAll(vault, store)
        #expect(report.ok && report.macsChecked && report.files == 4, "\(report)")
        #expect(
            report.firstEntry > 1 && report.firstEntry == UInt64(files[0].dropFirst(4)),
            "the oldest kept file begins the log: \(report)")
        #expect(report.entries > 600 && report.unsignedEntries == 0, "\(report)")
        // Each rotated file is cut to its entries and ends where the next begins.
        for name in files.dropLast() {
            let bytes = try #require(FileManager.default.contents(atPath: vault.data + "/audit/" + name))
            #expect(
                bytes.last == UInt8(ascii: "\n") && bytes.count >= 16 << 10 && bytes.count < 20 << 10,
                "\(name): \(bytes.count) bytes")
        }
        // The file being written begins with the rotate checkpoint, which names the entry before it.
        let first = try #require(
            AuditTail.read(directory: store.auditDirectory, count: 100_000).first { $0.reason == "rotate" })
        #expect(
            first.previous?.count == 64 && first.firstKept != nil
                && first.publicKey == Hex.encode(store.auditSigner.publicKey))
        // The tail reads on across files; a restart carries the chain on.
        let tail = try AuditTail.read(directory: store.auditDirectory, count: 1000)
        #expect(
            tail.count == Int(report.entries - report.firstEntry + 1) && tail.first?.seq == report.firstEntry,
            "\(tail.count)")
        #expect(zip(tail, tail.dropFirst()).allSatisfy { $0.seq + 1 == $1.seq })
        #expect(Self.attachRefusal(store) == nil)
        #expect(try Self.verifyAll(vault, store).ok)

        // With the public key alone (no MACs), the chain from the oldest kept file still checks out.
        let pinned = AuditVerifier.verify(
            segments: try AuditSegment.files(in: store.auditDirectory), head: Self.read(vault).head,
            expectedKey: store.auditSigner.publicKey
        )
        #expect(pinned.ok && !pinned.macsChecked, "\(pinned)")
    }

    @Test(
        "a rotated file removed, changed or renamed is found by verify and refused at attach; an accepted break moves the files before a gap aside"
    )
    func rotatedFilesTampered() async throws {
        let vault = TestVault()
        let store = try await Self.rotatedLog(vault, keep: 0, count: 250)
        defer { store.close() }
        let audit = store.auditDirectory
        let files = try Self.logFiles(vault)
        #expect(files.count >= 5 && files[0] == "log.00000000000000000001", "all kept: \(files)")
        #expect(try Self.verifyAll(vault, store).ok)
        let saved = audit + ".saved"
        try FileManager.default.copyItem(atPath: audit, toPath: saved)
        func restore() throws {
            try FileManager.default.removeItem(atPath: audit)
            try FileManager.default.copyItem(atPath: saved, toPath: audit)
        }

        // The oldest file removed: the log no longer begins at entry 1, which it says it keeps.
        try FileManager.default.removeItem(atPath: audit + "/" + files[0])
        var report = try Self.verifyAll(vault, store)
        #expect(!report.ok && report.firstBad?.reason.contains("entries 1 to") == true, "\(report)")
        #expect(Self.attachRefusal(store)?.contains("oldest files were removed") == true)
        try restore()

        // A file from the middle removed.
        try FileManager.default.removeItem(atPath: audit + "/" + files[2])
        report = try Self.verifyAll(vault, store)
        #expect(!report.ok && report.firstBad?.file == files[3], "\(report)")
        #expect(Self.attachRefusal(store)?.contains("does not follow from \(files[1])") == true)
        try restore()

        // One byte changed in a rotated file: named by file and line.
        var bytes = try #require(FileManager.default.contents(atPath: audit + "/" + files[1]))
        bytes[200] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: audit + "/" + files[1]))
        report = try Self.verifyAll(vault, store)
        #expect(!report.ok && report.firstBad?.file == files[1] && report.firstBad?.line == 1, "\(report)")
        try restore()

        // A rotated file renamed: its name no longer gives its first entry.
        try FileManager.default.moveItem(atPath: audit + "/" + files[1], toPath: audit + "/log.00000000000000000002")
        report = try Self.verifyAll(vault, store)
        #expect(!report.ok, "\(report)")
        #expect(Self.attachRefusal(store) != nil)
        try restore()
        #expect(try Self.verifyAll(vault, store).ok)

        // The oldest files removed and the first entry of the oldest left rewritten to say it keeps only
        // what is left (its hash left alone): the MAC of that line no longer verifies.
        try FileManager.default.removeItem(atPath: audit + "/" + files[0])
        try FileManager.default.removeItem(atPath: audit + "/" + files[1])
        var third = try #require(FileManager.default.contents(atPath: audit + "/" + files[2]))
        let kept = try #require(third.range(of: Data("\"first_kept\":1,".utf8)))
        let claim = "\"first_kept\":\(files[2].dropFirst(4).drop { $0 == "0" }),"
        third.replaceSubrange(kept, with: Data(claim.utf8))
        try third.write(to: URL(fileURLWithPath: audit + "/" + files[2]))
        #expect(
            Self.attachRefusal(store)?.contains("does not verify under the root key") == true,
            "\(String(describing: Self.attachRefusal(store)))")
        #expect(try !Self.verifyAll(vault, store).ok)
        try restore()

        // Entries cut from the end of log and a stray empty file made to draw the eye: both are named, and
        // accepting the break records both.
        let log = try #require(FileManager.default.contents(atPath: audit + "/log"))
        let logEnd = log.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0
        let lines = log[..<logEnd].split(separator: UInt8(ascii: "\n"))
        let shortened = Data(lines.dropLast(3).map { Data($0) + Data([0x0a]) }.joined())
        try (shortened + Data(count: log.count - shortened.count)).write(to: URL(fileURLWithPath: audit + "/log"))
        _ = FileManager.default.createFile(
            atPath: audit + "/log.00000000000000000000", contents: Data(), attributes: [.posixPermissions: 0o600])
        let both = Self.attachRefusal(store) ?? ""
        #expect(both.contains("is empty") && both.contains("cut away"), "\(both)")
        #expect(Self.attachRefusal(store, accept: true) == nil)
        let recorded = try AuditTail.read(directory: audit, count: 100_000).last {
            $0.reason?.hasPrefix("break: ") == true
        }
        #expect(recorded?.reason?.contains("cut away") == true, "\(String(describing: recorded?.reason))")
        try restore()

        // The operator accepts the gap: the files before it are set aside, and the log begins after it; the
        // next start needs nothing.
        try FileManager.default.removeItem(atPath: audit + "/" + files[2])
        #expect(Self.attachRefusal(store, accept: true) == nil)
        report = try Self.verifyAll(vault, store)
        #expect(
            report.ok && report.breaks.count == 1 && report.firstEntry == UInt64(files[3].dropFirst(4)), "\(report)")
        let aside = try FileManager.default.contentsOfDirectory(atPath: audit).filter { $0.contains(".broken-") }
        #expect(aside.count == 2, "the two files before the gap: \(aside)")
        #expect(Self.attachRefusal(store) == nil)
        #expect(try Self.verifyAll(vault, store).ok)
        try? FileManager.default.removeItem(atPath: saved)
    }

    @Test(
        "hostile numbers in the log's files are refused, never trapped on: by open, by attach, by verify and by doctor's check"
    )
    func hostileNumbers() async throws {
        let vault = TestVault()
        let store = try await Self.rotatedLog(vault, keep: 0, count: 60)
        defer { store.close() }
        let audit = store.auditDirectory
        let saved = audit + ".saved"
        try FileManager.default.copyItem(atPath: audit, toPath: saved)
        defer { try? FileManager.default.removeItem(atPath: saved) }
        func line(_ json: String) -> Data {
            Data((String(repeating: "ab", count: 32) + " - " + json + "\n").utf8)
        }
        let zeros = String(repeating: "00", count: 32)
        let hostile: [(String, Data)] = [
            ("log", line(#"{"kind":"checkpoint","previous":"\#(zeros)","reason":"rotate","seq":0,"time":1}"#)),
            ("log", line(#"{"kind":"request","seq":18446744073709551615,"time":1}"#)),
            ("log.00000000000000000001", line(#"{"kind":"request","seq":18446744073709551615,"time":1}"#)),
        ]
        for (name, bytes) in hostile {
            try FileManager.default.removeItem(atPath: audit)
            try FileManager.default.copyItem(atPath: saved, toPath: audit)
            try bytes.write(to: URL(fileURLWithPath: audit + "/" + name))
            #expect(Self.attachRefusal(store) != nil, "\(name)")
            #expect(AuditLog.filesProblem(directory: audit) != nil || name == "log", "\(name)")
            #expect(try !Self.verifyAll(vault, store).ok, "\(name)")
        }
        try FileManager.default.removeItem(atPath: audit)
        try FileManager.default.copyItem(atPath: saved, toPath: audit)
    }

    @Test(
        "a rotation that cannot be made leaves the log writing in its file (the head, which cannot be replaced either, fails closed), says why, and is made once it can",
        .enabled(if: geteuid() == 0, "chattr +i needs root")
    )
    func rotationRefusedByTheDirectory() async throws {
        let vault = TestVault()
        let (store, log) = try Self.rotatingLog(vault, keep: 0)
        defer { store.close() }
        guard try Self.chattr("+i", store.auditDirectory) else {
            Issue.record("this filesystem does not take the immutable flag")
            return
        }
        for number in UInt64(1)...100 {
            _ = try await log.append(Self.request(number))
        }
        #expect(try Self.logFiles(vault) == ["log"])
        #expect(log.rotationFailure?.contains("not permitted") == true, "\(String(describing: log.rotationFailure))")
        #expect(try Self.chattr("-i", store.auditDirectory))
        var last: AuditLog.Receipt?
        for number in UInt64(101)...200 {
            last = try await log.append(Self.request(number))
        }
        // A flush once the directory takes writes again, which writes the head that could not be replaced:
        // without it, whether one ran before the check below was left to the timing (a make test failed so).
        try await log.awaitDurable(try #require(last))
        #expect(log.rotationFailure == nil && log.failure == nil, "\(String(describing: log.failure))")
        #expect(try Self.logFiles(vault).count >= 2)
        log.close()
        #expect(try Self.verifyAll(vault, store).ok)
    }

    @Test("a rotation a crash interrupted is finished or undone at the next open, and the chain goes on")
    func interruptedRotation() async throws {
        let vault = TestVault()
        let store = try await Self.rotatedLog(vault, keep: 0, count: 60)
        defer { store.close() }
        let audit = store.auditDirectory
        var files = try Self.logFiles(vault)
        #expect(files.count >= 2, "\(files)")
        // After the new file was whole and the old one renamed: log.new alone stands for log.
        try FileManager.default.moveItem(atPath: audit + "/log", toPath: audit + "/log.new")
        #expect(Self.attachRefusal(store) == nil)
        #expect(try Self.logFiles(vault) == files && !FileManager.default.fileExists(atPath: audit + "/log.new"))
        #expect(try Self.verifyAll(vault, store).ok)
        // Before the first rename: a prepared file beside log is dropped.
        files = try Self.logFiles(vault)
        try Data("half a file".utf8).write(to: URL(fileURLWithPath: audit + "/log.new"))
        #expect(Self.attachRefusal(store) == nil)
        #expect(try Self.logFiles(vault) == files && !FileManager.default.fileExists(atPath: audit + "/log.new"))
        #expect(try Self.verifyAll(vault, store).ok)
    }

    /// Runs chattr; false when the filesystem does not support the flag.
    static func chattr(_ flag: String, _ path: String) throws -> Bool {
        try Command.run("/usr/bin/chattr", [flag, path]).status == 0
    }
}

/// Counts the flushes the syncer begins, and holds the first until `release` is signalled
/// (`AuditLog.beforeSyncerFlush`).
private final class HeldFlush: Sendable {
    private let count = Atomic(0)
    let release = DispatchSemaphore(value: 0)

    /// How many flushes have begun.
    var begun: Int { self.count.load(ordering: .sequentiallyConsistent) }

    /// On the syncer: the first call waits for `release`, later ones return at once.
    func begin() {
        guard self.count.wrappingAdd(1, ordering: .sequentiallyConsistent).newValue == 1 else { return }
        self.release.wait()
    }
}

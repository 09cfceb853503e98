import CaseVaultAudit
import CaseVaultCore
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A disk that fails: powercutfs (`--fail`) makes one call at one site fail with EIO or ENOSPC, and a
/// failed fsync loses what it should have made durable, as Linux does after a writeback error. Each site
/// that creating a vault, opening it, puts and shreds reach (found by undisturbed runs, `--census`) gets
/// its turn, then a power cut, then the store must open alone and show every acknowledged write.
@Suite("Failing disks", .serialized, .enabled(if: geteuid() == 0, "mounting FUSE needs root"))
struct FailingDiskTests {
    /// The calls a failure is injected into.
    static let operations: Set<String> = ["write", "truncate", "fsync", "fdatasync", "fsyncdir", "rename"]

    @Test(
        "an I/O error or a full disk at each site a vault's creation, opening, puts and shreds reach: nothing acknowledged is lost, no shred is reported done that was not, the store reopens alone"
    )
    func everySiteFails() throws {
        let fs = try PowerCutFS()
        let census = fs.root + "/census"
        let caseID = Samples.caseID()
        var ledger = Acknowledged()
        var retried: Set<RecordID> = []

        // Runs the writer on `vault` for 400 ms (or until it stops), then the power cut.
        func run(_ vault: TestVault, tag: String, cycle: Int, into ledger: inout Acknowledged) throws -> String {
            let (process, reader, refusal) = try Self.start(vault: vault, caseID: caseID, tag: tag)
            let opened = reader.next() == "ready"
            if opened { usleep(400_000) }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            try fs.cut()
            let before = ledger.refusals.count
            retried.formUnion(ledger.absorb(reader, cycle: cycle).retried)
            guard opened else {
                let reason = (try? String(contentsOfFile: refusal, encoding: .utf8)) ?? ""
                return "open refused: " + (reason.split(separator: "\n").first.map(String.init) ?? "(no reason given)")
            }
            return "\(ledger.refusals.count - before) refused, served on"
        }
        // The census: undisturbed runs name every site; the first creates the vault, the second opens it.
        func sites(_ vault: TestVault, tag: String) throws -> [String: Int] {
            try fs.mount(options: ["--census=\(census)"])
            _ = try run(vault, tag: tag, cycle: -1, into: &ledger)
            return try Self.readCensus(census, vault: vault)
        }
        // After the cut: the store opens alone and shows what `ledger` says was acknowledged.
        func check(
            _ target: TestVault, _ ledger: inout Acknowledged, stillThere: Set<RecordID>, site: String,
            injected: String, cycle: Int
        ) {
            do {
                let store = try target.open()
                try ledger.expect(in: store, vault: target, cycle: cycle)
                // Nothing the index lists fails to open: an undone put leaves no row behind.
                for record in try store.records(caseID: caseID) {
                    do {
                        _ = try store.sealed.get(record.id)
                    } catch {
                        Issue.record(
                            "after \(site) failed with \(injected): \(record.id) is listed but does not open: \(error)")
                    }
                }
                for id in stillThere where (try? store.sealed.get(id)) == nil {
                    Issue.record(
                        "after \(site) failed with \(injected): the failed shred of \(id) was not finished by the next shred"
                    )
                }
                ledger.settle(store)
                store.close()
            } catch {
                Issue.record("after \(site) failed with \(injected), the store does not open: \(error)")
            }
        }
        let vault = TestVault(under: fs.mountpoint)
        let created = try sites(vault, tag: "census-create")
        let opened = try sites(vault, tag: "census-open")
        #expect(
            opened.keys.contains { $0.hasPrefix("fdatasync:") || $0.hasPrefix("fsync:") },
            "the census found no flush: \(opened)")

        var report: [String] = []
        var cycle = 0
        // CASEVAULT_FAULT_SITES=text runs only the sites that contain it (to chase one).
        let only = ProcessInfo.processInfo.environment["CASEVAULT_FAULT_SITES"]
        for site in Set(created.keys).union(opened.keys).sorted() where only.map(site.contains) ?? true {
            // A site only a new vault reaches fails while one is made; the rest during puts and shreds.
            let fresh = opened[site] == nil
            let count = opened[site] ?? created[site] ?? 1
            for error in site.hasPrefix("rename:") || site.hasPrefix("fsyncdir:") ? ["EIO"] : ["EIO", "ENOSPC"] {
                let target = fresh ? TestVault(under: fs.mountpoint) : vault
                if fresh { fs.flushTop() }
                // Well inside the run: a site reached once (at open) fails at once. An eighth of the census's
                // calls, so that a run 8 times slower than the census's (this host's speed moved 5-fold within
                // an hour, and a quarter once left three sites unreached in 400 ms) still reaches it.
                let nth = max(1, count / 8)
                try fs.mount(options: ["--fail=\(Self.onDisk(site, vault: target))@\(nth)=\(error)"])
                // A new vault's writes are its own to check.
                var freshLedger = Acknowledged()
                let outcome =
                    fresh
                    ? try run(target, tag: "fail-\(cycle)", cycle: cycle, into: &freshLedger)
                    : try run(target, tag: "fail-\(cycle)", cycle: cycle, into: &ledger)
                let injected = fs.injected
                // The power cut above threw away what was not durable, and what the failed flush lost.
                try fs.mount()
                // A shred that failed and was followed by an acknowledged shred was finished then, while the
                // writer ran: its key slot was gone before the cut, not only after the reopen's recovery.
                let slots = target.files()["keyslots"] ?? []
                let stillThere = retried.filter { SlotFinder.slot(of: $0, in: slots) != nil }
                if fresh {
                    check(target, &freshLedger, stillThere: stillThere, site: site, injected: error, cycle: cycle)
                } else {
                    check(target, &ledger, stillThere: stillThere, site: site, injected: error, cycle: cycle)
                }
                retried = []
                try fs.cut()
                report.append(
                    "\(site) #\(nth) \(error)\(fresh ? " (new vault)" : ""): \(injected.isEmpty ? "not reached" : outcome)"
                )
                #expect(!injected.isEmpty, "\(site) #\(nth) \(error) was never reached")
                cycle += 1
            }
        }
        print(
            "failing disks: \(report.count) failures at \(Set(created.keys).union(opened.keys).count) sites; \(ledger.puts) puts and \(ledger.shreds) shreds acknowledged, \(ledger.refusals.count) refused; 0 lost unless reported above"
        )
        for line in report { print("  " + line) }
    }

    @Test(
        "a failed flush of the audit log, then flushes that succeed: every entry whose flush was acknowledged survives the power cut (fsyncgate)"
    )
    func auditLogAfterAFailedFlush() async throws {
        let fs = try PowerCutFS()
        try fs.mount()
        // The log alone on the failing disk, keyed with the signer of a vault kept elsewhere.
        let keys = TestVault()
        let store = try keys.open()
        defer { store.close() }
        let directory = fs.mountpoint + "/audit"
        fs.flushTop()
        do {
            let (log, _) = try AuditLog.open(directory: directory, clock: { 1_700_000_000_000 })
            try log.attach(store.auditSigner)
            log.close()
        }
        try fs.cut()
        // Then the flush after the attach's fails (the third: the open does not trust the reserved space, so
        // the attach's entry grows the file again, flushed at once, before the attach's flush), and loses what
        // it should have made durable, as Linux does after a writeback error: the pages stay readable but are
        // marked clean. It carries one entry larger than a 4 KiB block, whose first block no later entry
        // writes to again.
        try fs.mount(options: ["--fail=fdatasync:/audit/log@3=EIO"])
        var acknowledged: [UInt64] = []
        var refused = 0
        do {
            let (log, _) = try AuditLog.open(directory: directory, clock: { 1_700_000_000_000 })
            try log.attach(store.auditSigner)
            var large = AuditLogTests.request(1)
            large.ids = Dictionary(
                uniqueKeysWithValues: (0..<120).map { ("record_\($0)", String(repeating: "ab", count: 16)) })
            // Refused, as a rule; acknowledged when another flush (the syncer's own) took the failure first and
            // this one wrote everything again.
            do {
                try await log.awaitDurable(try await log.append(large))
                acknowledged.append(1)
            } catch {
                refused += 1
            }
            for number in UInt64(2)...12 {
                do {
                    try await log.awaitDurable(try await log.append(AuditLogTests.request(number)))
                    acknowledged.append(number)
                } catch {
                    refused += 1
                }
            }
        }
        try fs.cut()
        #expect(fs.injected.count == 1, "the failure was not injected: \(fs.injected)")
        #expect(
            refused <= 1 && acknowledged.count >= 11,
            "\(refused) refused, \(acknowledged.count) acknowledged; injected: \(fs.injected)")
        try fs.mount()
        do {
            let (log, recovery) = try AuditLog.open(directory: directory, clock: { 1_700_000_000_000 })
            #expect(recovery.tornEndSetAside == nil, "an end was set aside: \(recovery)")
            log.close()
        }
        let bytes = FileManager.default.contents(atPath: directory + "/log").map { [UInt8]($0) } ?? []
        let head = FileManager.default.contents(atPath: directory + "/head").map { [UInt8]($0) }
        let report = AuditVerifier.verify(log: bytes, head: head, expectedKey: store.auditSigner.publicKey)
        #expect(report.ok && report.breaks.isEmpty, "\(report)")
        // Each acknowledged request's entry is in the log.
        let text = String(decoding: bytes, as: UTF8.self)
        let missing = acknowledged.filter { !text.contains("\"request\":\($0),") }
        #expect(missing.isEmpty, "acknowledged entries lost after the failed flush: \(missing)")
        try fs.cut()
    }

    /// A new vault on powercutfs, remounted so that every flush of `file` in its data directory (`index.sqlite-wal`,
    /// `segments/#`: powercutfs writes a run of digits as `#`) fails while the switch file `failing` exists: as
    /// Linux does after a writeback error, what the flush should have made durable is lost at the cut, and a
    /// later flush succeeds.
    static func failingFlushes(of file: String) throws -> (fs: PowerCutFS, vault: TestVault, failing: String) {
        let fs = try PowerCutFS()
        try fs.mount()
        let vault = fs.newVault()
        try vault.open().close()
        try fs.cut()
        let failing = fs.root + "/failing"
        let site = Self.onDisk("fdatasync:/<vault>/data/\(file)", vault: vault)
        try fs.mount(options: ["--fail=\(site)@1=EIO+", "--fail-while=\(failing)"])
        return (fs, vault, failing)
    }

    @Test(
        "a flush of the index that failed: every later call is refused with one stable error until the store opens again, and after a power cut every put and case acknowledged is there"
    )
    func indexFlushFails() throws {
        let (fs, vault, failing) = try Self.failingFlushes(of: "index.sqlite-wal")
        var records: [RecordID: [UInt8]] = [:]
        var cases: [CaseID] = []
        do {
            let store = try vault.open()
            cases.append(try store.sealed.openCase(header: Lifecycle.header, mediators: [], author: nil).id)
            // Puts commit their rows without a flush of the index (their segment frames are flushed).
            records = try RotationTests.populate(store, count: 20)
            // Opening a case commits with a flush of the index, which fails.
            #expect(FileManager.default.createFile(atPath: failing, contents: nil))
            #expect(throws: CaseVaultError.self) {
                try store.sealed.openCase(header: Lifecycle.header, mediators: [], author: nil)
            }
            unlink(failing)
            #expect(store.indexLost)
            // The disk takes writes again, but the WAL's frames before the failure may be lost: a commit after
            // them would be lost with them at a power cut. Nothing is written or read any more.
            typealias Call = () throws(CaseVaultError) -> Void
            let note = NewRecord(caseID: cases[0], type: .sessionNote, content: Array(#"{"text":"later"}"#.utf8))
            let later: [(String, Call)] = [
                (
                    "open a case",
                    { () throws(CaseVaultError) in
                        cases.append(try store.sealed.openCase(header: Lifecycle.header, mediators: [], author: nil).id)
                    }
                ),
                ("put", { () throws(CaseVaultError) in _ = try store.sealed.put(note) }),
                ("get", { () throws(CaseVaultError) in _ = try store.sealed.get(records.keys.first!) }),
                ("list", { () throws(CaseVaultError) in _ = try store.records(caseID: cases[0]) }),
            ]
            for (what, call) in later {
                do throws(CaseVaultError) {
                    try call()
                    Issue.record("\(what) succeeded after the index lost commits")
                } catch {
                    #expect(
                        error.code == .storageFailure && error.message.contains("restart casevaultd"),
                        "\(what): \(error)")
                }
            }
            #expect(store.close()?.code == .storageFailure)
        }
        try fs.cut()
        #expect(fs.injected.count == 1, "the failure was not injected: \(fs.injected)")
        try fs.mount()
        do {
            // The open reads the WAL from the disk and adds the puts' rows again from their frames.
            let store = try vault.open()
            #expect(!store.indexLost)
            for (id, content) in records {
                #expect((try? store.sealed.get(id).content) == content, "put \(id) lost")
            }
            for id in cases {
                #expect((try? store.caseSummary(id)) != nil, "case \(id) lost")
            }
            let after = NewRecord(caseID: cases[0], type: .sessionNote, content: Array(#"{"text":"after"}"#.utf8))
            #expect(try store.sealed.put(after).caseID == cases[0])
            store.close()
        }
        try fs.cut()
    }

    @Test(
        "a checkpoint of the index whose flush failed marks the index lost (SQLite's own checkpoint drops the error): a put is refused from then on, and after a power cut every acknowledged put is there"
    )
    func checkpointFlushFails() throws {
        let (fs, vault, failing) = try Self.failingFlushes(of: "index.sqlite-wal")
        var records: [RecordID: [UInt8]] = [:]
        do {
            // A checkpoint once a commit leaves 64 frames in the WAL: within a few dozen puts.
            let store = try vault.open(clock: TestClock(1_700_000_000_000)) { $0.indexCheckpointFrames = 64 }
            let caseID = Samples.caseID()
            // The first put into a new segment settles (a flushed commit); those after it do not, so the next
            // flush of the WAL is the checkpoint's.
            let first = Samples.content(.sessionNote, marker: "checkpoint first")
            records[try store.sealed.put(NewRecord(caseID: caseID, type: .sessionNote, content: first)).id] = first
            #expect(FileManager.default.createFile(atPath: failing, contents: nil))
            // Puts commit without a flush of the index; the checkpoint (off the writer) flushes the WAL, and that
            // fails: the puts that committed beside it are whole (their segment frames are durable), and once the
            // loss is marked the next is refused.
            var refused: CaseVaultError?
            for n in 0..<200 where refused == nil {
                let content = Samples.content(.sessionNote, marker: "checkpoint \(n)")
                do {
                    records[try store.sealed.put(NewRecord(caseID: caseID, type: .sessionNote, content: content)).id] =
                        content
                } catch {
                    refused = error
                }
            }
            unlink(failing)
            #expect(refused?.message.contains("restart casevaultd") == true, "\(String(describing: refused))")
            #expect(store.indexLost)
            store.close()
        }
        try fs.cut()
        #expect(fs.injected.count == 1, "the failure was not injected once: \(fs.injected)")
        try fs.mount()
        do {
            let store = try vault.open()
            for (id, content) in records {
                #expect((try? store.sealed.get(id).content) == content, "put \(id) lost")
            }
            store.close()
        }
        try fs.cut()
    }

    @Test(
        "a put refused before its commit whose undo cannot be flushed answers that it may be kept, never that nothing was; after a power cut it is there whole, as every acknowledged put is"
    )
    func undoThatCannotBeFlushed() throws {
        // Every flush of a segment fails while the switch file exists, and the switch is made as the put's
        // commit is refused (a test's injected failure): its frame, with its wrapped key, is on the disk, and
        // the undo's overwrite of it is not.
        let (fs, vault, failing) = try Self.failingFlushes(of: "segments/#")
        let caseID = Samples.caseID()
        var records: [RecordID: [UInt8]] = [:]
        let refuse = Mutex(false)
        let refusedContent = Samples.content(.sessionNote, marker: "refused")
        do {
            let store = try vault.open(clock: TestClock(1_700_000_000_000)) { configuration in
                configuration.failingCommit = {
                    refuse.withLock { refusing in
                        guard refusing else { return false }
                        refusing = false
                        return FileManager.default.createFile(atPath: failing, contents: nil)
                    }
                }
            }
            for n in 0..<3 {
                let content = Samples.content(.sessionNote, marker: "kept \(n)")
                records[try store.sealed.put(NewRecord(caseID: caseID, type: .sessionNote, content: content)).id] =
                    content
            }
            refuse.withLock { $0 = true }
            do throws(CaseVaultError) {
                _ = try store.sealed.put(NewRecord(caseID: caseID, type: .sessionNote, content: refusedContent))
                Issue.record("the put was acknowledged although its commit was refused")
            } catch {
                #expect(error.code == .storageFailure)
                #expect(error.message.contains("may be kept"), "\(error)")
            }
            unlink(failing)
            #expect(!refuse.withLock { $0 }, "the commit was never refused")
            store.close()
        }
        try fs.cut()
        #expect(fs.injected.count == 1, "the undo's flush was not the one failure: \(fs.injected)")
        try fs.mount()
        do {
            let store = try vault.open()
            defer { store.close() }
            #expect(NamedPointPowerCutTests.unreadable(records, in: store) == 0)
            // The frame the undo could not overwrite for good is taken back by the open, whole: what the answer
            // warned of.
            let listed = try store.records(caseID: caseID).map(\.id)
            let kept = listed.filter { records[$0] == nil }
            #expect(Set(listed).isSuperset(of: records.keys))
            #expect(kept.count == 1, "the refused put was not taken back: \(kept.count)")
            for id in kept {
                #expect(try store.sealed.get(id).content == refusedContent)
            }
        }
        try fs.cut()
    }

    @Test(
        "a case opened while a checkpoint of the index meets a failed flush: its commit reached the WAL and it is refused, and after a power cut it opens whole (its key slot was not scrubbed), every acknowledged put reads back, and a rotation completes"
    )
    func commitBesideAFailedCheckpoint() throws {
        // Only a checkpoint flushes the index's database file, and every such flush fails while the switch
        // file exists; the WAL's own flushes succeed.
        let (fs, vault, failing) = try Self.failingFlushes(of: "index.sqlite")
        var records: [RecordID: [UInt8]] = [:]
        let everyCase = { (_: Bool) in CaseQuery(visibility: CaseVisibility(everyCase: true)) }
        do {
            let hold = HeldCheckpoint()
            let store = try vault.open(clock: TestClock(1_700_000_000_000)) { configuration in
                configuration.checkpointObserver = { hold.reached() }
            }
            let caseID = Samples.caseID()
            for n in 0..<6 {
                let content = Samples.content(.sessionNote, marker: "beside \(n)")
                records[try store.sealed.put(NewRecord(caseID: caseID, type: .sessionNote, content: content)).id] =
                    content
            }
            let shredded = records.keys.first!
            records[shredded] = nil
            #expect(FileManager.default.createFile(atPath: failing, contents: nil))
            // The shred's checkpoint before the WAL's truncation copies the WAL and fails to flush the copy. It
            // is held there, before it records the loss, the only checkpoint in flight.
            hold.arm()
            let shredDone = DispatchSemaphore(value: 0)
            Thread {
                _ = try? store.shred(shredded)
                shredDone.signal()
            }.start()
            for _ in 0..<(600 * VaultDaemon.slowdown) where !hold.isHolding { usleep(10_000) }
            #expect(hold.isHolding, "the shred's checkpoint never ran")
            // Opening a case is a commit with a flush of its own: once flushed, it waits for the checkpoint in
            // flight before it is answered.
            let opened = Mutex<Result<CaseID, CaseVaultError>?>(nil)
            let openDone = DispatchSemaphore(value: 0)
            Thread {
                let result = Result { () throws(CaseVaultError) in
                    try store.sealed.openCase(header: Lifecycle.header, mediators: [], author: nil).id
                }
                opened.withLock { $0 = result }
                openDone.signal()
            }.start()
            var committed = false
            for _ in 0..<(600 * VaultDaemon.slowdown) where !committed {
                committed = (try? store.listCases(rosterUID: nil, everyCase).rows.count) == 1
                if !committed { usleep(10_000) }
            }
            #expect(committed, "the case's commit never read back")
            hold.release()
            openDone.wait()
            shredDone.wait()
            unlink(failing)
            // The loss came before its answer: refused, although its row is in the WAL on the disk.
            switch opened.withLock({ $0 }) {
            case .failure(let error):
                #expect(error.message.contains("restart casevaultd"), "\(error)")
            case .success(let id):
                Issue.record("the case \(id) was acknowledged although the index lost a checkpoint's flush")
            case nil:
                Issue.record("the case was not answered")
            }
            #expect(store.indexLost)
            store.close()
        }
        try fs.cut()
        #expect(!fs.injected.isEmpty, "the failure was not injected")
        try fs.mount()
        do {
            let store = try vault.open()
            let unreadable = NamedPointPowerCutTests.unreadable(records, in: store)
            #expect(unreadable == 0, "\(unreadable) of \(records.count) acknowledged records do not read back")
            // The refused case is the only one: its commit was flushed, so it is there, and opens.
            let cases = try store.listCases(rosterUID: nil, everyCase)
            #expect(cases.rows.count == 1, "\(cases.rows.count) cases after the cut")
            for row in cases.rows {
                let header = try store.caseHeaderID(row.summary.id)
                #expect(throws: Never.self, "the refused case's header does not open") {
                    _ = try store.sealed.get(header)
                }
            }
            let rotation = try store.rotate()
            #expect(rotation.complete, "\(rotation)")
            store.close()
        }
        try fs.cut()
    }

    @Test(
        "a rotation whose key slots' flush failed, a reopen, then a rotation that completes: after a power cut every record opens (the slots are written again before the old epoch is retired)"
    )
    func rotationAfterAFailedFlush() throws {
        let fs = try PowerCutFS()
        let (vault, records) = try fs.populatedVault(records: 40)
        // The open's recovery flushes the slots once; the rotation's flush is the second, and fails. The pages
        // still read back rewrapped, so the second rotation, after a reopen (as after a restart of the daemon:
        // the page cache outlives the process), finds nothing left to rewrap and retires epoch 1.
        try fs.mount(options: ["--fail=\(Self.onDisk("fdatasync:/<vault>/data/keyslots", vault: vault))@2=EIO"])
        do {
            let failing = try vault.open()
            #expect(throws: CaseVaultError.self) { try failing.rotate() }
            failing.close()
        }
        do {
            let store = try vault.open()
            let second = try store.rotate()
            #expect(second.complete && second.retired == [1], "\(second)")
            store.close()
        }
        try fs.cut()
        #expect(fs.injected.count == 1, "the failure was not injected: \(fs.injected)")
        try fs.mount()
        do {
            // In its own scope: the store lets go of its files before the filesystem is unmounted.
            let store = try vault.open()
            let unreadable = NamedPointPowerCutTests.unreadable(records, in: store)
            #expect(unreadable == 0, "\(unreadable) of \(records.count) records no longer open after the power cut")
            store.close()
        }
        try fs.cut()
    }

    @Test(
        "a sweep whose second batch fails to flush its overwrites: the first batch's records are certified at once, one certificate per case, and the next sweep finishes and certifies the rest"
    )
    func sweepWithAFailedBatch() throws {
        let fs = try PowerCutFS()
        try fs.mount()
        let vault = fs.newVault()
        let clock = TestClock("2020-01-01T00:00:00Z")
        let notes = try { () throws -> [CaseID: Set<String>] in
            let store = try vault.open(clock: clock)
            defer { store.close() }
            return try RetentionTests.interleavedNotes(store)
        }()
        try fs.cut()
        // The sweep's first batch flushes the segment once (its overwrites); the second batch's flush fails.
        try fs.mount(options: ["--fail=\(Self.onDisk("fdatasync:/<vault>/data/segments/#", vault: vault))@2=EIO"])
        clock.now = TestClock.parse("2020-03-01T00:00:00Z")
        do {
            let store = try vault.open(clock: clock) { $0.sweepBatch = 4 }
            #expect(throws: CaseVaultError.self) { try store.sweep() }
            // Certified when the sweep failed, not when its failed batch is finished.
            let first = try RetentionTests.certified(store)
            #expect(first.count == 3 && first.reduce(0) { $0 + $1.records.count } == 4, "\(first)")
            // The rows the failed sweep removed go from the index's WAL all the same.
            #expect(vault.indexWALBytes == 0, "the failed sweep left \(vault.indexWALBytes) bytes of WAL")
            store.close()
        }
        try fs.cut()
        #expect(fs.injected.count == 1, "the failure was not injected: \(fs.injected)")
        try fs.mount()
        do {
            let store = try vault.open(clock: clock) { $0.sweepBatch = 4 }
            // The open finished the batch that failed; the sweep does the rest.
            let rest = try store.sweep()
            #expect(rest.disposed == 10, "\(rest)")
            let all = try RetentionTests.certified(store)
            #expect(all.reduce(0) { $0 + $1.records.count } == 18, "every note certified once: \(all)")
            for (caseID, records) in all {
                #expect(records.isSubset(of: notes[try CaseID(caseID)] ?? []))
            }
            store.close()
        }
        try fs.cut()
    }

    @Test(
        "a destruction of expired backup keys whose flush failed, then one that finds nothing left: after a power cut no expired key is on the disk"
    )
    func backupKeysAfterAFailedFlush() throws {
        let fs = try PowerCutFS()
        try fs.mount()
        let vault = fs.newVault()
        let keys = BackupKeyFile(path: vault.root + "/keys/backup.keys")
        let day: Int64 = 86_400_000
        let start = TestClock(1_700_000_000_000)
        do {
            let store = try vault.open(clock: start)
            for _ in 0..<3 {
                _ = try store.backup(id: RecordStore.newBackupID(), keys: keys, retentionDays: 35) {
                    _ throws(CaseVaultError) in
                }
            }
            store.close()
        }
        try fs.cut()
        // Forty days on, the destruction's flush fails: the overwritten slots read back as random bytes, but
        // the disk still holds the keys. The next pass finds no key left to destroy.
        try fs.mount(options: ["--fail=\(Self.onDisk("fdatasync:/<vault>/keys/backup.keys", vault: vault))@1=EIO"])
        do {
            let store = try vault.open(clock: TestClock(start.now + 40 * day))
            #expect(throws: CaseVaultError.self) { try store.destroyExpiredBackupKeys(keys, retentionDays: 35) }
            #expect(try store.destroyExpiredBackupKeys(keys, retentionDays: 35) == 0)
            store.close()
        }
        try fs.cut()
        #expect(fs.injected.count == 1, "the failure was not injected: \(fs.injected)")
        try fs.mount()
        let bytes = FileManager.default.contents(atPath: keys.path).map { [UInt8]($0) } ?? []
        let left = stride(from: 0, to: bytes.count, by: 128).filter {
            Array(bytes[$0..<min($0 + 4, bytes.count)]) == Array("CVBK".utf8)
        }
        #expect(
            bytes.count == 3 * 128 && left.isEmpty, "\(left.count) expired backup keys came back after the power cut")
        try fs.cut()
    }

    /// The census as site → calls, with the vault's own folder written `<vault>`, so that a site names the
    /// same place in any vault; only the operations a failure is injected into.
    static func readCensus(_ path: String, vault: TestVault) throws -> [String: Int] {
        var sites: [String: Int] = [:]
        let folder = Self.collapsed(URL(fileURLWithPath: vault.root).lastPathComponent)
        for line in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, let count = Int(parts[0]),
                Self.operations.contains(String(parts[1].prefix { $0 != ":" }))
            else {
                continue
            }
            sites[String(parts[1]).replacingOccurrences(of: "/" + folder, with: "/<vault>"), default: 0] += count
        }
        return sites
    }

    /// A census site as powercutfs names it for `vault`.
    static func onDisk(_ site: String, vault: TestVault) -> String {
        site.replacingOccurrences(
            of: "/<vault>", with: "/" + Self.collapsed(URL(fileURLWithPath: vault.root).lastPathComponent))
    }

    /// A name as powercutfs writes it in a site: every run of digits as one `#`.
    static func collapsed(_ name: String) -> String {
        var out = ""
        for character in name {
            if character.isASCII, character.isNumber {
                if out.last != "#" { out.append("#") }
            } else {
                out.append(character)
            }
        }
        return out
    }

    /// Starts `put-loop --keep-going` on the vault, its standard error into a file: if the store refuses to
    /// open, the writer says why there and stops without `ready`.
    static func start(vault: TestVault, caseID: CaseID, tag: String) throws -> (Process, LineReader, refusal: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Helper.path)
        process.arguments = [
            "put-loop", "--data", vault.data, "--key", vault.key, "--case-id", caseID.rawValue, "--writers", "4",
            "--shred-every", "3", "--tag", tag, "--keep-going",
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        let refusal = NSTemporaryDirectory() + "/casevault-refusal-\(getpid())"
        _ = FileManager.default.createFile(atPath: refusal, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: refusal))
        try process.run()
        return (process, LineReader(pipe.fileHandleForReading), refusal)
    }
}

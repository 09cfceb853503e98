import CaseVaultCore
import CaseVaultStore
import Foundation
import GRDB
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Sealed record store")
struct RecordStoreTests {
    @Test(
        "more readers at once than the index has lookup connections all read what was filed, while puts commit; a close makes later lookups fail"
    )
    func manyReadersAtOnce() throws {
        let vault = TestVault()
        let store = try vault.open()
        let caseID = Samples.caseID()
        let filed = try (0..<20).map { n in
            try store.sealed.put(
                NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "r\(n)")))
        }
        let failures = Failures()
        // Threads of their own, started together, so that more lookups run at once than there are cores.
        let done = DispatchSemaphore(value: 0)
        let start = DispatchSemaphore(value: 0)
        for reader in 0..<24 {
            Thread {
                defer { done.signal() }
                start.wait()
                Self.read(store, filed, reader: reader, caseID: caseID, failures: failures)
            }.start()
        }
        for _ in 0..<24 { start.signal() }
        for _ in 0..<24 { done.wait() }
        #expect(failures.all.isEmpty, "\(failures.all)")
        store.close()
        #expect(throws: CaseVaultError.self) { try store.metadata(filed[0].id) }
    }

    static func read(
        _ store: RecordStore, _ filed: [RecordMetadata], reader: Int, caseID: CaseID, failures: Failures
    ) {
        for n in 0..<40 {
            let record = filed[(reader + n) % filed.count]
            do {
                let content = try store.sealed.get(record.id).content
                if content != Samples.content(.sessionNote, marker: "r\((reader + n) % filed.count)") {
                    failures.add("reader \(reader): wrong content")
                }
                if reader % 6 == 0 {
                    // A put committed while others read: a lookup right after it finds it.
                    let new = try store.sealed.put(
                        NewRecord(
                            caseID: caseID, type: .evaluation, content: Samples.content(.evaluation, marker: "e")))
                    _ = try store.metadata(new.id)
                }
            } catch {
                failures.add("reader \(reader): \(error)")
            }
        }
    }

    /// A store in `vault` with one case and `count` intake forms filed in it.
    static func storeWithForms(_ vault: TestVault, count: Int) throws -> (RecordStore, CaseID, [RecordID]) {
        let store = try vault.open()
        let caseID = try store.sealed.openCase(
            header: Samples.content(.caseHeader, marker: "names"), mediators: [], author: nil
        ).id
        let filed = try (0..<count).map { _ in
            try store.sealed.put(
                NewRecord(caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "d"))
            ).id
        }
        return (store, caseID, filed)
    }

    /// Sets, in the index of `vault`'s closed store, each record's row as its `SET` clause says.
    static func damage(_ vault: TestVault, _ damages: [(set: String, id: RecordID)]) throws {
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        try index.write { db in
            try db.execute(sql: "PRAGMA ignore_check_constraints = ON")
            for (set, id) in damages {
                try db.execute(sql: "UPDATE records SET \(set) WHERE id = ?", arguments: [id.rawValue])
            }
        }
        try index.close()
    }

    @Test(
        "a record row damaged in the index (an unknown type or state, an id that is not one, a slot or a time that is not a number, a negative size, a blob for a name) answers storage-failure, and its neighbours still read"
    )
    func damagedRowsRefuseToRead() throws {
        let vault = TestVault()
        let damages = [
            "type = 'memo'", "state = 'gone'", "id = 'not-an-id'", "case_id = 'nine'", "slot = 'x'",
            "created_at = 'noon'", "supersedes = 'zz'", "sealed_size = -5", "author = x'41'",
        ]
        var (store, caseID, filed) = try Self.storeWithForms(vault, count: damages.count)
        let damaged = Array(zip(damages, filed))
        let intact = try store.sealed.put(
            NewRecord(caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "intact")))
        store.close()
        // The id itself changes under "id = …": looked up afterwards by the id it was filed under.
        try Self.damage(vault, damaged)
        store = try vault.open()
        defer { store.close() }
        for (damage, id) in damaged where !damage.hasPrefix("id =") {
            do {
                _ = try store.sealed.get(id)
                Issue.record("a row with \(damage) was read")
            } catch {
                #expect(error.code == .storageFailure, "\(damage): \(error.code)")
            }
        }
        // The row whose id was spoilt is no longer found by its id.
        let spoilt = try #require(damaged.first { $0.0.hasPrefix("id =") }).1
        #expect(throws: CaseVaultError.self) { _ = try store.sealed.get(spoilt) }
        #expect(String(decoding: try store.sealed.get(intact.id).content, as: UTF8.self).contains("intact"))
    }

    @Test(
        "an index whose rows do not decode where the store's open reads them stops the open with storage-failure, not a crash"
    )
    func damagedIndexStopsTheOpen() throws {
        let vault = TestVault()
        let (store, _, filed) = try Self.storeWithForms(vault, count: 1)
        store.close()
        try Self.damage(vault, [("segment = 'x'", filed[0])])
        #expect {
            _ = try vault.open()
        } throws: { error in
            (error as? CaseVaultError)?.code == .storageFailure
        }
    }

    @Test("every record type round-trips through a store closed and reopened from disk")
    func everyTypeRoundTripsAcrossReopen() throws {
        let vault = TestVault()
        let caseID = Samples.caseID()
        var filed: [(RecordMetadata, [UInt8])] = []
        do {
            let store = try vault.open()
            for type in RecordType.fileable {
                let content = Samples.content(type, marker: "round-trip-\(type.rawValue)")
                filed.append(
                    (
                        try store.sealed.put(
                            NewRecord(caseID: caseID, type: type, content: content, author: "mediator1")),
                        content
                    ))
            }
            store.close()
        }
        let reopened = try vault.open()
        defer { reopened.close() }
        for (metadata, content) in filed {
            let record = try reopened.sealed.get(metadata.id)
            #expect(record.content == content)
            #expect(record.metadata == metadata)
        }
        #expect(try reopened.records(caseID: caseID).map(\.id) == filed.map(\.0.id))
    }

    @Test(
        "a put batch writes and flushes while the batch before it commits; both are acknowledged and read back after reopening"
    )
    func batchesOverlap() throws {
        let vault = TestVault()
        let caseID = Samples.caseID()
        // The first batch's commit waits for the next batch's flush.
        let hold = CommitHold()
        let store = try vault.open(clock: TestClock("2026-01-01T00:00:00Z")) { configuration in
            configuration.crashPointObserver = hold.reached
        }
        let filed = Mutex<[Int: Result<RecordID, CaseVaultError>]>([:])
        func put(_ index: Int) -> Thread {
            Thread {
                let result = Samples.note(store, caseID, marker: "batch-\(index)")
                filed.withLock { $0[index] = result }
            }
        }
        put(1).start()
        let deadline = Date().addingTimeInterval(10)
        while !hold.hasHeld && Date() < deadline { usleep(1000) }
        put(2).start()
        while filed.withLock({ $0.count }) < 2 && Date() < deadline.addingTimeInterval(10) { usleep(1000) }
        #expect(hold.overlapped, "the second batch did not flush while the first waited to commit")
        let ids = try [1, 2].map { index in try #require(filed.withLock { $0[index] }).get() }
        store.close()
        let reopened = try vault.open()
        defer { reopened.close() }
        for (index, id) in zip([1, 2], ids) {
            #expect(try reopened.sealed.get(id).content == Samples.content(.sessionNote, marker: "batch-\(index)"))
        }
    }

    @Test(
        "a put batch whose commit fails takes down the batch that flushed behind it: both fail and leave no wrapped key, the next put takes their place in the segment, and the store reopens with what was acknowledged"
    )
    func failedCommitTakesDownTheBatchBehind() throws {
        let vault = TestVault()
        let caseID = Samples.caseID()
        // The failing batch's commit waits for the next batch's flush, then fails.
        let hold = CommitHold(armed: false)
        let store = try vault.open(clock: TestClock("2026-01-01T00:00:00Z")) { configuration in
            configuration.crashPointObserver = hold.reached
            configuration.failingCommit = hold.failsHeldCommit
        }
        @Sendable func content(_ marker: String) -> [UInt8] { Samples.content(.sessionNote, marker: marker) }
        @Sendable func put(_ marker: String) throws(CaseVaultError) -> RecordID {
            try Samples.note(store, caseID, marker: marker).get()
        }
        let first = try put("first")
        hold.arm()
        let outcomes = Mutex<[String: CaseVaultError.Code]>([:])
        for marker in ["failing", "behind"] {
            Thread {
                do throws(CaseVaultError) {
                    _ = try put(marker)
                } catch {
                    outcomes.withLock { $0[marker] = error.code }
                }
            }.start()
            let deadline = Date().addingTimeInterval(10)
            while marker == "failing" && !hold.hasHeld && Date() < deadline { usleep(1000) }
        }
        let deadline = Date().addingTimeInterval(20)
        while outcomes.withLock({ $0.count }) < 2 && Date() < deadline { usleep(1000) }
        #expect(outcomes.withLock { $0 } == ["failing": .storageFailure, "behind": .storageFailure])
        let next = try put("next")
        store.close()

        // The next put's frame begins where the first's ends: the two failed frames' place was taken again.
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        let (firstEnd, nextStart) = try index.read { db in
            (
                try Int.fetchOne(
                    db, sql: "SELECT offset + sealed_size FROM records WHERE id = ?", arguments: [first.rawValue]),
                try Int.fetchOne(db, sql: "SELECT frame_start FROM records WHERE id = ?", arguments: [next.rawValue])
            )
        }
        try index.close()
        #expect(firstEnd != nil && firstEnd == nextStart)
        let reopened = try vault.open()
        defer { reopened.close() }
        #expect(try reopened.sealed.get(first).content == content("first"))
        #expect(try reopened.sealed.get(next).content == content("next"))
        let slots = try #require(vault.files()["keyslots"])
        let live = (0..<(slots.count / 128)).filter { Array(slots[($0 * 128)..<($0 * 128 + 4)]) == Array("CVS1".utf8) }
        #expect(live.count == 2, "a failed batch left its wrapped key in its slot")
    }

    @Test("a store reopened after being dropped without close still reads everything")
    func reopenWithoutCleanShutdown() throws {
        let vault = TestVault()
        let caseID = Samples.caseID()
        let content = Samples.content(.sessionNote, marker: "unclean")
        let id = try vault.open().sealed.put(NewRecord(caseID: caseID, type: .sessionNote, content: content)).id
        let store = try vault.open()
        defer { store.close() }
        #expect(try store.sealed.get(id).content == content)
    }

    @Test("a sealed blob copied onto another record fails with an integrity error")
    func blobCopiedOntoAnotherRecordFails() throws {
        let vault = TestVault()
        let store = try vault.open()
        let caseID = Samples.caseID()
        let a = try store.sealed.put(
            NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "AAAA")))
        let b = try store.sealed.put(
            NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "BBBB")))
        let regionA = try BlobRegion(vault: vault, id: a.id)
        let regionB = try BlobRegion(vault: vault, id: b.id)
        try regionB.write(try regionA.read())
        let error = #expect(throws: CaseVaultError.self) { try store.sealed.get(b.id) }
        #expect(error?.code == .integrityFailure)
        #expect(try store.sealed.get(a.id).content == Samples.content(.sessionNote, marker: "AAAA"))
        store.close()
    }

    @Test("a key slot copied onto another record's slot fails with an integrity error")
    func slotCopiedOntoAnotherRecordFails() throws {
        let vault = TestVault()
        let store = try vault.open()
        let caseID = Samples.caseID()
        let a = try store.sealed.put(
            NewRecord(caseID: caseID, type: .evaluation, content: Samples.content(.evaluation, marker: "x")))
        let b = try store.sealed.put(
            NewRecord(caseID: caseID, type: .evaluation, content: Samples.content(.evaluation, marker: "y")))
        var slots = try #require(vault.files()["keyslots"])
        let slotA = try #require(SlotFinder.slot(of: a.id, in: slots))
        let slotB = try #require(SlotFinder.slot(of: b.id, in: slots))
        slots.replaceSubrange(slotB * 128..<(slotB + 1) * 128, with: slots[slotA * 128..<(slotA + 1) * 128])
        try Data(slots).write(to: URL(fileURLWithPath: vault.data + "/keyslots"))
        let error = #expect(throws: CaseVaultError.self) { try store.sealed.get(b.id) }
        #expect(error?.code == .integrityFailure)
        store.close()
    }

    @Test("a truncated blob or a flipped bit in a slot or blob is an integrity error, and changes nothing")
    func corruptedDataIsRefused() throws {
        let vault = TestVault()
        let store = try vault.open()
        let caseID = Samples.caseID()
        let content = Samples.content(.disclosure, marker: "corrupt")
        let a = try store.sealed.put(NewRecord(caseID: caseID, type: .disclosure, content: content))
        let region = try BlobRegion(vault: vault, id: a.id)
        let original = try region.read()
        let segment = try Data(contentsOf: URL(fileURLWithPath: region.path))

        // Cut the segment file short inside the record's region.
        try segment.prefix(region.offset + region.length - 5).write(to: URL(fileURLWithPath: region.path))
        let truncated = #expect(throws: CaseVaultError.self) { try store.sealed.get(a.id) }
        #expect(truncated?.code == .integrityFailure)
        try segment.write(to: URL(fileURLWithPath: region.path))
        for position in [0, 4, 10, original.count / 2, original.count - 1] {
            var flipped = original
            flipped[position] ^= 0x01
            try region.write(flipped)
            let error = #expect(throws: CaseVaultError.self) { try store.sealed.get(a.id) }
            #expect(error?.code == .integrityFailure)
        }
        try region.write(original)
        #expect(try store.sealed.get(a.id).content == content)

        let slotsPath = vault.data + "/keyslots"
        let slots = try #require(vault.files()["keyslots"])
        let slot = try #require(SlotFinder.slot(of: a.id, in: slots))
        for offset in [5, 30, 60, 100, 127] {
            var flipped = slots
            flipped[slot * 128 + offset] ^= 0x80
            try Data(flipped).write(to: URL(fileURLWithPath: slotsPath))
            let error = #expect(throws: CaseVaultError.self) { try store.sealed.get(a.id) }
            #expect(error?.code == .integrityFailure)
        }
        try Data(slots).write(to: URL(fileURLWithPath: slotsPath))
        #expect(try store.sealed.get(a.id).content == content)
        store.close()
    }

    @Test("bad content is refused with a typed error naming the field, and nothing is stored")
    func badInputChangesNothing() throws {
        let vault = TestVault()
        let store = try vault.open(maxContentBytes: 4096)
        let caseID = Samples.caseID()
        let before = vault.files()
        let cases: [(RecordType, String, CaseVaultError.Code, String?)] = [
            (.sessionNote, #"{"txt":"BADMARKER"}"#, .missingField, "text"),
            (.evaluation, #"{"satisfaction":"BADMARKER","would_recommend":true}"#, .invalidField, "satisfaction"),
            (.evaluation, #"{"satisfaction":9,"would_recommend":true}"#, .invalidField, "satisfaction"),
            (.disclosure, #"{"category":"BADMARKER","summary":"s"}"#, .invalidField, "category"),
            (.intakeForm, #"["BADMARKER"]"#, .malformedContent, nil),
            (.intakeForm, #"{"dispute_category": BADMARKER"#, .malformedContent, nil),
            (.sessionNote, #"{"text":""# + String(repeating: "B", count: 5000) + #""}"#, .contentTooLarge, nil),
        ]
        for (type, json, code, field) in cases {
            let error = #expect(throws: CaseVaultError.self) {
                try store.sealed.put(NewRecord(caseID: caseID, type: type, content: Array(json.utf8)))
            }
            #expect(error?.code == code)
            #expect(error?.field == field)
            #expect(!(error?.message.contains("BADMARKER") ?? true))
        }
        #expect(try store.records(caseID: caseID).isEmpty)
        #expect(Set(vault.files().keys) == Set(before.keys))
        #expect(vault.files()["keyslots"] == before["keyslots"])
        store.close()
    }

    @Test("unknown and missing ids get not-found; a shredded id gets shredded")
    func lookupErrors() throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let unknown = RecordID(bytes: [UInt8](repeating: 7, count: 16))
        #expect(throws: CaseVaultError.self) { try store.sealed.get(unknown) }
        #expect((try? store.sealed.get(unknown)) == nil)
        do {
            _ = try store.sealed.get(unknown)
        } catch {
            #expect(error.code == .notFound)
        }
        let id = try store.sealed.put(
            NewRecord(caseID: Samples.caseID(), type: .sessionNote, content: Samples.content(.sessionNote, marker: "m"))
        ).id
        try store.shred(id)
        do {
            _ = try store.sealed.get(id)
            Issue.record("a shredded record was read")
        } catch {
            #expect(error.code == .shredded)
        }
        do {
            try store.shred(id)
            Issue.record("a shredded record was shredded twice")
        } catch {
            #expect(error.code == .shredded)
        }
    }

    @Test("a data directory or key file that others can read is refused; a key inside the data directory is refused")
    func insecurePermissionsAreRefused() throws {
        let vault = TestVault()
        try vault.open().close()
        chmod(vault.data, 0o750)
        do {
            _ = try vault.open()
            Issue.record("opened a group-readable data directory")
        } catch {
            #expect(error.code == .insecurePermissions)
        }
        chmod(vault.data, 0o700)
        chmod(vault.key, 0o644)
        do {
            _ = try vault.open()
            Issue.record("opened with a world-readable key file")
        } catch {
            #expect(error.code == .insecurePermissions)
        }
        chmod(vault.key, 0o600)
        try vault.open().close()

        var inside = vault.configuration()
        inside.rootKeyFile = URL(fileURLWithPath: vault.data + "/root.key")
        do {
            _ = try RecordStore.open(inside, logger: .init(label: "test"))
            Issue.record("accepted a key file inside the data directory")
        } catch {
            #expect(error.code == .keyUnavailable)
        }
    }

    @Test("the files the store creates are 0600 and its directories 0700")
    func filesArePrivate() throws {
        let vault = TestVault()
        let store = try vault.open()
        _ = try store.sealed.put(
            NewRecord(caseID: Samples.caseID(), type: .sessionNote, content: Samples.content(.sessionNote, marker: "p"))
        )
        store.close()
        let enumerator = FileManager.default.enumerator(atPath: vault.data)
        var checked = 0
        while let relative = enumerator?.nextObject() as? String {
            var info = stat()
            #expect(lstat(vault.data + "/" + relative, &info) == 0)
            #expect(info.st_mode & 0o077 == 0, "\(relative) is mode \(String(info.st_mode & 0o777, radix: 8))")
            checked += 1
        }
        #expect(checked >= 4)
        var info = stat()
        #expect(lstat(vault.key, &info) == 0 && info.st_mode & 0o777 == 0o600)
    }

    @Test("sixteen threads putting at once all get durable, readable records")
    func concurrentPutsAreAllStored() throws {
        let vault = TestVault()
        let store = try vault.open()
        let caseID = Samples.caseID()
        let results = ResultBox()
        let threads = (0..<16).map { writer in
            Thread {
                for n in 0..<25 {
                    let content = Samples.content(.sessionNote, marker: "w\(writer)-\(n)")
                    if let stored = try? store.sealed.put(
                        NewRecord(caseID: caseID, type: .sessionNote, content: content))
                    {
                        results.append(stored.id, content)
                    }
                }
            }
        }
        for thread in threads { thread.start() }
        while results.count < 400 && threads.contains(where: { !$0.isFinished }) {
            usleep(10_000)
        }
        while threads.contains(where: { !$0.isFinished }) { usleep(1000) }
        store.close()
        let reopened = try vault.open()
        defer { reopened.close() }
        let all = results.all
        #expect(all.count == 400)
        #expect(Set(all.map(\.0)).count == 400)
        for (id, content) in all {
            #expect(try reopened.sealed.get(id).content == content)
        }
    }
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [(RecordID, [UInt8])] = []

    func append(_ id: RecordID, _ content: [UInt8]) {
        self.lock.lock()
        self.items.append((id, content))
        self.lock.unlock()
    }

    var count: Int {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.items.count
    }

    var all: [(RecordID, [UInt8])] {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.items
    }
}

/// Finds a record's slot in the raw key-slot file by the record id each slot carries at bytes 8..<24.
@Suite("Closing under load")
struct CloseRaceTests {
    @Test(
        "puts racing a close (as at seal) either commit before it or write nothing: no key slot of an uncommitted record"
    )
    func putsRacingClose() throws {
        let vault = TestVault()
        let store = try vault.open()
        let caseID = Samples.caseID()
        let committed = Mutex<Set<[UInt8]>>([])
        let refusals = Mutex<[CaseVaultError.Code]>([])
        // Eight writers on threads of their own, and the close once some of their puts are in: so that the
        // close lands among them however loaded the machine is.
        let writers = DispatchGroup()
        for worker in 1...8 {
            writers.enter()
            Thread {
                defer { writers.leave() }
                for n in 0..<400 {
                    do {
                        let record = try store.sealed.put(
                            NewRecord(
                                caseID: caseID, type: .sessionNote,
                                content: Samples.content(.sessionNote, marker: "race \(worker) \(n)")))
                        committed.withLock { _ = $0.insert(record.id.bytes) }
                    } catch let error as CaseVaultError {
                        refusals.withLock { $0.append(error.code) }
                        return
                    } catch {
                        refusals.withLock { $0.append(.storageFailure) }
                        return
                    }
                }
            }.start()
        }
        let deadline = Date().addingTimeInterval(60)
        while committed.withLock({ $0.count }) < 16, Date() < deadline { usleep(1_000) }
        store.close()
        store.wipeKeys()
        writers.wait()
        let kept = committed.withLock { $0 }
        #expect(
            !kept.isEmpty && kept.count < 8 * 400, "the close did not land among the puts (\(kept.count) committed)")
        #expect(refusals.withLock { $0 }.allSatisfy { $0 == .sealed }, "\(refusals.withLock { $0 })")
        // Before any reopen (which scrubs what a crash left): every slot that holds a record id holds a
        // committed one.
        let slots = try #require(vault.files()["keyslots"])
        var strays: [[UInt8]] = []
        for slot in 0..<(slots.count / 128) {
            let id = Array(slots[(slot * 128 + 8)..<(slot * 128 + 24)])
            if id.contains(where: { $0 != 0 }), !kept.contains(id) { strays.append(id) }
        }
        #expect(strays.isEmpty, "\(strays.count) key slots of records that were never committed")
        let reopened = try vault.open()
        defer { reopened.close() }
        #expect(try reopened.records(caseID: caseID).count == kept.count)
    }
}

/// What the threads of a test found wrong, collected from all of them.
final class Failures: Sendable {
    private let list = Mutex<[String]>([])

    func add(_ failure: String) {
        self.list.withLock { $0.append(failure) }
    }

    var all: [String] { self.list.withLock { $0 } }
}

enum SlotFinder {
    static func slot(of id: RecordID, in slots: [UInt8]) -> Int? {
        let needle = id.bytes
        for slot in 0..<(slots.count / 128) where Array(slots[(slot * 128 + 8)..<(slot * 128 + 24)]) == needle {
            return slot
        }
        return nil
    }

    /// Flips one bit of the sealed key in `id`'s slot, so that the record's key no longer unwraps.
    static func breakSlot(of id: RecordID, in vault: TestVault) throws {
        let path = vault.data + "/keyslots"
        var slots = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let slot = try #require(Self.slot(of: id, in: slots))
        slots[slot * 128 + 40] ^= 0x01
        try Data(slots).write(to: URL(fileURLWithPath: path))
    }
}

@Suite("Amendments")
struct AmendmentTests {
    @Test("an amendment names the record it supersedes; both stay readable")
    func amendmentKeepsBoth() throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let caseID = Samples.caseID()
        let first = try store.sealed.put(
            NewRecord(caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "v1")))
        let second = try store.sealed.put(
            NewRecord(
                caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "v2"),
                supersedes: first.id)
        )
        #expect(second.supersedes == first.id)
        #expect(try store.sealed.get(first.id).content == Samples.content(.intakeForm, marker: "v1"))
        #expect(try store.sealed.get(second.id).metadata.supersedes == first.id)
    }

    @Test("superseding an unknown record, or one of another case or type, is refused and stores nothing")
    func badAmendmentsAreRefused() throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let caseID = Samples.caseID()
        let first = try store.sealed.put(
            NewRecord(caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "v1")))
        let attempts: [(NewRecord, CaseVaultError.Code)] = [
            (
                NewRecord(
                    caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "x"),
                    supersedes: RecordID(bytes: [UInt8](repeating: 9, count: 16))), .notFound
            ),
            (
                NewRecord(
                    caseID: Samples.caseID(), type: .intakeForm, content: Samples.content(.intakeForm, marker: "x"),
                    supersedes: first.id), .invalidField
            ),
            (
                NewRecord(
                    caseID: caseID, type: .evaluation, content: Samples.content(.evaluation, marker: "x"),
                    supersedes: first.id), .invalidField
            ),
        ]
        for (record, code) in attempts {
            do {
                _ = try store.sealed.put(record)
                Issue.record("accepted a bad amendment")
            } catch {
                #expect(error.code == code)
            }
        }
        #expect(try store.records(caseID: caseID).map(\.id) == [first.id])
    }
}

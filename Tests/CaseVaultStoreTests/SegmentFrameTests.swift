import CaseVaultCore
import CaseVaultSealing
import Foundation
import GRDB
import Synchronization
import Testing

@testable import CaseVaultStore

/// The segments as the log of record: a put batch flushes only the segment, and what a power cut takes
/// from the index and the key slots comes back from the frames.
@Suite("Segment frames")
struct SegmentFrameTests {
    static func sampleFrame(author: String?, supersedes: RecordID?, participant: [UInt8]?) -> SegmentFrame {
        SegmentFrame(
            metadata: RecordMetadata(
                id: RecordID(bytes: (0..<16).map { UInt8($0) }), caseID: Samples.caseID(), type: .agreementToMediate,
                createdAt: 1_780_000_000_123, author: author, supersedes: supersedes, sealedSize: 40),
            participant: participant, slot: 77,
            wrappedKey: (0..<KeySlot.size).map { UInt8(truncatingIfNeeded: $0 * 7) },
            replayable: true)
    }

    @Test("a frame reads back field for field, and a frame with any byte changed or cut short reads as none")
    func frameRoundTrip() {
        let blob = (0..<40).map { UInt8($0 + 100) }
        for frame in [
            Self.sampleFrame(author: nil, supersedes: nil, participant: nil),
            Self.sampleFrame(
                author: "mediator-ä", supersedes: RecordID(bytes: [UInt8](repeating: 9, count: 16)),
                participant: [1, 2, 3]),
        ] {
            let (bytes, head) = frame.encode(blob: blob, blobDigest: SegmentFrame.blobDigest(blob))
            #expect(Array(bytes[head...]) == blob, "the blob ends the frame")
            #expect(Array(bytes[(head - KeySlot.size)..<head]) == frame.wrappedKey, "the wrapped key just before it")
            guard let decoded = SegmentFrame.decode(bytes) else {
                Issue.record("a whole frame did not decode")
                continue
            }
            #expect(decoded.frame == frame)
            #expect(decoded.headLength == head)
            for position in bytes.indices {
                var damaged = bytes
                damaged[position] ^= 0x20
                #expect(SegmentFrame.decode(damaged) == nil, "a frame with byte \(position) changed decoded")
            }
            #expect(SegmentFrame.decode(Array(bytes.dropLast())) == nil)
            #expect(SegmentFrame.decode([UInt8](repeating: 0, count: bytes.count)) == nil)
        }
    }

    /// A new case in `store`, for records to be filed in.
    static func openCase(_ store: RecordStore) throws -> CaseID {
        try store.sealed.openCase(header: Samples.content(.caseHeader, marker: "names"), mediators: [], author: nil).id
    }

    /// `source`'s data directory, key and all, copied to a new vault.
    static func copy(_ source: TestVault) throws -> TestVault {
        let copy = TestVault()
        try FileManager.default.copyItem(atPath: source.root + "/data", toPath: copy.root + "/data")
        try FileManager.default.copyItem(atPath: source.root + "/keys", toPath: copy.root + "/keys")
        return copy
    }

    @Test(
        "after a power cut that kept the segment's frames and lost the index rows and key slots written since the last settle, every acknowledged put reads back"
    )
    func replayRebuildsLostRowsAndSlots() throws {
        let vault = TestVault()
        var store = try vault.open()
        let caseID = try Self.openCase(store)
        let early = try (0..<2).map { index in
            try store.sealed.put(
                NewRecord(
                    caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "early-\(index)"))
            ).id
        }
        store.close()
        // The disk as it was at the last settle: what a power cut leaves of the index and the slot file.
        let cut = try Self.copy(vault)
        store = try vault.open()
        let late = try (0..<5).map { index in
            try store.sealed.put(
                NewRecord(
                    caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "late-\(index)"))
            ).id
        }
        // The segment was flushed by each batch: its bytes are what the disk has.
        let segments = cut.data + "/segments"
        try FileManager.default.removeItem(atPath: segments)
        try FileManager.default.copyItem(atPath: vault.data + "/segments", toPath: segments)
        store.close()
        let rowsBefore = try Self.recordRows(cut)
        #expect(rowsBefore == 3, "the copied index already had the late records: the test would prove nothing")

        let reopened = try cut.open()
        for (index, id) in early.enumerated() {
            #expect(try reopened.sealed.get(id).content == Samples.content(.intakeForm, marker: "early-\(index)"))
        }
        for (index, id) in late.enumerated() {
            #expect(try reopened.sealed.get(id).content == Samples.content(.sessionNote, marker: "late-\(index)"))
        }
        // A put after the replay takes a fresh slot and the end of the log.
        let next = try reopened.sealed.put(
            NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "next"))
        ).id
        reopened.close()
        let again = try cut.open()
        defer { again.close() }
        #expect(try again.sealed.get(next).content == Samples.content(.sessionNote, marker: "next"))
        for (index, id) in late.enumerated() {
            #expect(try again.sealed.get(id).content == Samples.content(.sessionNote, marker: "late-\(index)"))
        }
    }

    @Test(
        "after a power cut that kept the index's unflushed commits and lost the key slots written since the last settle, every acknowledged put reads back"
    )
    func replayRewritesLostSlots() throws {
        let vault = TestVault()
        var store = try vault.open()
        let caseID = try Self.openCase(store)
        store.close()
        let cut = try Self.copy(vault)
        store = try vault.open()
        defer { store.close() }
        let late = try (0..<4).map { index in
            try store.sealed.put(
                NewRecord(
                    caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "slot-\(index)"))
            ).id
        }
        // The index and its WAL as they are now (the commits reached the disk by write-back), the segments
        // too; the slot file as it was at the last settle.
        for name in ["index.sqlite", "index.sqlite-wal", "segments"] {
            try? FileManager.default.removeItem(atPath: cut.data + "/" + name)
            try FileManager.default.copyItem(atPath: vault.data + "/" + name, toPath: cut.data + "/" + name)
        }
        try? FileManager.default.removeItem(atPath: cut.data + "/index.sqlite-shm")
        #expect(try Self.recordRows(cut) == 5, "the copied index lacks the late records: the test would prove nothing")
        let slots = try #require(cut.files()["keyslots"])
        #expect(late.allSatisfy { SlotFinder.slot(of: $0, in: slots) == nil }, "the old slot file has their keys")

        let reopened = try cut.open()
        defer { reopened.close() }
        for (index, id) in late.enumerated() {
            #expect(try reopened.sealed.get(id).content == Samples.content(.sessionNote, marker: "slot-\(index)"))
        }
    }

    @Test("a torn frame past the acknowledged ones ends the log: it is scrubbed and nothing past it is taken")
    func tornTailIsScrubbed() throws {
        let vault = TestVault()
        var store = try vault.open()
        let caseID = try Self.openCase(store)
        store.close()
        let cut = try Self.copy(vault)
        store = try vault.open()
        let kept = try store.sealed.put(
            NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "kept"))
        ).id
        let torn = try store.sealed.put(
            NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "torn"))
        ).id
        let tornRow = try Self.frameRegion(vault, torn)
        store.close()
        let segments = cut.data + "/segments"
        try FileManager.default.removeItem(atPath: segments)
        try FileManager.default.copyItem(atPath: vault.data + "/segments", toPath: segments)
        // Change the second frame's last byte, as a write-back that stopped short of its last block would.
        let file = try FileHandle(forUpdating: URL(fileURLWithPath: Self.segmentPath(cut, tornRow.segment)))
        let last = UInt64(tornRow.offset + Int64(tornRow.length) - 1)
        try file.seek(toOffset: last)
        let byte = try #require(try file.read(upToCount: 1)).first ?? 0
        try file.seek(toOffset: last)
        try file.write(contentsOf: Data([byte ^ 0xFF]))
        try file.close()
        let tornID = Self.idBytes(torn)
        #expect(Self.segmentBytes(cut).contains(subsequence: tornID))

        let reopened = try cut.open()
        defer { reopened.close() }
        #expect(try reopened.sealed.get(kept).content == Samples.content(.sessionNote, marker: "kept"))
        #expect(throws: CaseVaultError.self) { try reopened.sealed.get(torn) }
        #expect(!Self.segmentBytes(cut).contains(subsequence: tornID), "the torn frame was left in the segment")
    }

    @Test(
        "a shred settles the puts before it only when it touches one of them: after a power cut between its sections, with a put acknowledged between them, every other record reads back and the shredded one is gone",
        arguments: [true, false])
    func shredAmongUnsettledPuts(shredsAnUnsettledRecord: Bool) throws {
        let vault = TestVault()
        var store = try vault.open()
        let caseID = try Self.openCase(store)
        let old = try store.sealed.put(
            NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "old"))
        ).id
        store.close()
        // Once the shred has overwritten and flushed the key slot, a put is queued (it goes in before the
        // shred's next section), and the disk is copied as a power cut then leaves it: the index as its
        // flushed mark commit left it, the slot file as just flushed. The segments are copied once the
        // shred is done: the ciphertext's overwrite and the put's frame were flushed, nothing else was.
        let live = Mutex<RecordStore?>(nil)
        let cut = TestVault()
        let (source, target) = (vault.root, cut.root)
        let copied = Mutex(false)
        let meanwhile = Mutex<Result<RecordID, CaseVaultError>?>(nil)
        store = try vault.open(clock: TestClock("2026-01-01T00:00:00Z")) { configuration in
            configuration.crashPointObserver = { point in
                guard point == .shredAfterSlotOverwrite, !copied.withLock({ $0 }), let store = live.withLock({ $0 })
                else { return }
                Thread.detachNewThread {
                    let result = Samples.note(store, caseID, marker: "meanwhile")
                    meanwhile.withLock { $0 = result }
                }
                let deadline = Date().addingTimeInterval(10)
                while !store.writes.hasWaiting && Date() < deadline { usleep(1000) }
                for folder in ["/data", "/keys"] {
                    try? FileManager.default.copyItem(atPath: source + folder, toPath: target + folder)
                }
                copied.withLock { $0 = true }
            }
        }
        live.withLock { $0 = store }
        let late = try (0..<3).map { index in
            try store.sealed.put(
                NewRecord(
                    caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "late-\(index)"))
            ).id
        }
        let markBefore = try Self.settledMark(vault)
        let victim = shredsAnUnsettledRecord ? late[1] : old
        try store.shred(victim)
        #expect(
            (try Self.settledMark(vault) != markBefore) == shredsAnUnsettledRecord,
            "the shred settled (or not) against what it touched")
        // The put returned before the shred's next section; its thread may not have stored that yet.
        let deadline = Date().addingTimeInterval(10)
        while meanwhile.withLock({ $0 == nil }) && Date() < deadline { usleep(1000) }
        let put = try #require(try meanwhile.withLock { $0 }?.get(), "the put queued during the shred never returned")
        live.withLock { $0 = nil }
        store.close()
        #expect(copied.withLock { $0 }, "the shred never reached its slot overwrite")
        try FileManager.default.removeItem(atPath: cut.data + "/segments")
        try FileManager.default.copyItem(atPath: vault.data + "/segments", toPath: cut.data + "/segments")
        try? FileManager.default.removeItem(atPath: cut.data + "/index.sqlite-shm")
        #expect(
            SlotFinder.slot(of: put, in: try #require(cut.files()["keyslots"])) == nil,
            "the copied slot file has the put's key: the test would prove nothing")

        let reopened = try cut.open()
        defer { reopened.close() }
        #expect(try reopened.isShredded(victim))
        #expect(!Self.segmentBytes(cut).contains(subsequence: Self.idBytes(victim)), "the shredded frame is back")
        for id in ([old] + late).filter({ $0 != victim }) {
            let marker = id == old ? "old" : "late-\(late.firstIndex(of: id) ?? 0)"
            #expect(try reopened.sealed.get(id).content == Samples.content(.sessionNote, marker: marker))
        }
        #expect(try reopened.sealed.get(put).content == Samples.content(.sessionNote, marker: "meanwhile"))
    }

    @Test(
        "a data directory written by main before segment frames opens and reads back; new records are framed beside the old ones, and a shred leaves neither kind's bytes"
    )
    func directoryFromBeforeFrames() throws {
        let vault = TestVault()
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures/datadir-v10.tar.gz").path
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/bin/tar")
        tar.arguments = ["-xzf", fixture, "-C", vault.root]
        try tar.run()
        tar.waitUntilExit()
        #expect(tar.terminationStatus == 0)
        let manifest = try String(contentsOfFile: vault.root + "/manifest", encoding: .utf8)
            .split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        let caseID = try CaseID(try #require(manifest.first { $0[0] == "case" })[1])
        let old = try manifest.filter { $0[0] == "record" }.map {
            (id: try RecordID($0[1]), type: try #require(RecordType(rawValue: $0[2])), marker: $0[3])
        }
        let shredded = try manifest.filter { $0[0] == "shredded" }.map { try RecordID($0[1]) }
        #expect(old.count == 5 && shredded.count == 1)

        var store = try vault.open()
        for record in old {
            #expect(try store.sealed.get(record.id).content == Samples.content(record.type, marker: record.marker))
        }
        for id in shredded {
            #expect(try store.isShredded(id))
        }
        let new = try (0..<3).map { index in
            try store.sealed.put(
                NewRecord(
                    caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "new-\(index)"))
            ).id
        }
        #expect(try Self.frameStarts(vault, old.map(\.id)).allSatisfy { $0 == nil }, "an old record gained a frame")
        #expect(try Self.frameStarts(vault, new).allSatisfy { $0 != nil }, "a new record has no frame")
        #expect(Self.segmentBytes(vault).contains(subsequence: Self.idBytes(new[1])))
        try store.shred(old[0].id)
        try store.shred(new[1])
        store.close()

        store = try vault.open()
        defer { store.close() }
        for record in old.dropFirst() {
            #expect(try store.sealed.get(record.id).content == Samples.content(record.type, marker: record.marker))
        }
        for (index, id) in new.enumerated() where index != 1 {
            #expect(try store.sealed.get(id).content == Samples.content(.sessionNote, marker: "new-\(index)"))
        }
        #expect(try store.isShredded(old[0].id) && store.isShredded(new[1]))
        #expect(!Self.segmentBytes(vault).contains(subsequence: Self.idBytes(new[1])), "a shred left a frame's head")
    }

    @Test(
        "a rotation leaves no wrapped key under the retired epoch anywhere: the copy in each frame is zeroed with its slot's rewrap"
    )
    func rotationZeroesTheFramesKeyCopies() throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let caseID = try Self.openCase(store)
        let ids = try (0..<3).map { index in
            try store.sealed.put(
                NewRecord(
                    caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "r-\(index)"))
            ).id
        }
        let slots = try #require(vault.files()["keyslots"])
        let wrapped = try ids.map { id in
            let slot = try #require(SlotFinder.slot(of: id, in: slots))
            return Array(slots[(slot * KeySlot.size)..<((slot + 1) * KeySlot.size)])
        }
        for bytes in wrapped {
            #expect(Self.segmentBytes(vault).contains(subsequence: bytes), "the frame holds no copy: nothing to prove")
        }
        let report = try store.rotate()
        #expect(!report.retired.isEmpty)
        for bytes in wrapped {
            #expect(vault.filesContaining(bytes).isEmpty, "a wrapped key under the retired epoch is left on the disk")
        }
        for (index, id) in ids.enumerated() {
            #expect(try store.sealed.get(id).content == Samples.content(.sessionNote, marker: "r-\(index)"))
        }
    }

    static func idBytes(_ id: RecordID) -> [UInt8] {
        id.bytes
    }

    static func segmentPath(_ vault: TestVault, _ segment: UInt32) -> String {
        vault.data + "/segments/" + String(format: "%08u", segment)
    }

    static func segmentBytes(_ vault: TestVault) -> [UInt8] {
        vault.files().filter { $0.key.hasPrefix("segments/") }.sorted { $0.key < $1.key }.flatMap(\.value)
    }

    /// The index's settled mark (`settled_segment`, `settled_end`), from the real index file.
    static func settledMark(_ vault: TestVault) throws -> [Int64] {
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        defer { try? index.close() }
        return try index.read { db in
            try Int64.fetchAll(
                db, sql: "SELECT value FROM meta WHERE key IN ('settled_segment', 'settled_end') ORDER BY key")
        }
    }

    static func recordRows(_ vault: TestVault) throws -> Int {
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        defer { try? index.close() }
        return try index.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM records") ?? 0 }
    }

    static func frameStarts(_ vault: TestVault, _ ids: [RecordID]) throws -> [Int64?] {
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        defer { try? index.close() }
        return try index.read { db in
            try ids.map { id in
                try Row.fetchOne(db, sql: "SELECT frame_start FROM records WHERE id = ?", arguments: [id.rawValue])?[0]
            }
        }
    }

    /// The segment, start and length of record `id`'s frame, from the index of an open store.
    static func frameRegion(_ vault: TestVault, _ id: RecordID) throws -> (segment: UInt32, offset: Int64, length: Int)
    {
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        defer { try? index.close() }
        return try index.read { db in
            let row = try #require(
                try Row.fetchOne(
                    db,
                    sql: "SELECT segment, frame_start, offset + sealed_size - frame_start FROM records WHERE id = ?",
                    arguments: [id.rawValue]))
            return (row[0], row[1], row[2])
        }
    }
}

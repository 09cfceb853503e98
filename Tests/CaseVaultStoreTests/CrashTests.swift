import CaseVaultCore
import CaseVaultStore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Crash safety")
struct CrashTests {
    /// How many kill cycles `make test` runs; `scripts/crash-soak.sh` sets more.
    static let cycles = Int(ProcessInfo.processInfo.environment["CASEVAULT_CRASH_CYCLES"] ?? "") ?? 50

    @Test("a writer killed with SIGKILL at random moments loses no write it acknowledged")
    func killedWriterLosesNoAcknowledgedWrite() throws {
        let vault = TestVault()
        let caseID = Samples.caseID()
        var acknowledged: [(RecordID, String)] = []
        for cycle in 0..<Self.cycles {
            // Killed at a random moment after the store opened: while puts are in flight.
            let (process, reader) = try Helper.start([
                "put-loop", "--data", vault.data, "--key", vault.key, "--case-id", caseID.rawValue, "--writers", "4",
            ])
            usleep(UInt32.random(in: 1_000...60_000))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            var thisCycle: [(RecordID, String)] = []
            while let line = reader.next() {
                let parts = line.split(separator: " ")
                guard parts.count == 3, parts[0] == "put", let id = try? RecordID(String(parts[1])) else {
                    // A torn last line is an id whose put returned but whose line was cut by the kill: skip it.
                    #expect(!line.hasPrefix("error"), "cycle \(cycle): the writer reported \(line)")
                    continue
                }
                thisCycle.append((id, String(parts[2])))
            }
            acknowledged += thisCycle

            // Every open recovers; this cycle's acknowledged puts must all read back now, and every earlier
            // one at the end (checking all of them every cycle would make the soak quadratic).
            let store = try vault.open()
            try Self.expectIntact(thisCycle, in: store, cycle: cycle)
            store.close()
        }
        let store = try vault.open()
        try Self.expectIntact(acknowledged, in: store, cycle: Self.cycles)
        store.close()
        #expect(acknowledged.count > Self.cycles, "the writer should have acknowledged puts before being killed")
    }
}

extension CrashTests {
    static func expectIntact(_ records: [(RecordID, String)], in store: RecordStore, cycle: Int) throws {
        for (id, text) in records {
            let record = try store.sealed.get(id)
            #expect(record.content == Array(#"{"text":"\#(text)"}"#.utf8), "cycle \(cycle): \(id) came back wrong")
        }
    }
}

/// Reads newline-terminated lines from a pipe; a last line without its newline is returned as is.
final class LineReader {
    private let handle: Foundation.FileHandle
    private var buffer: [UInt8] = []
    private var finished = false

    init(_ handle: Foundation.FileHandle) {
        self.handle = handle
    }

    func next() -> String? {
        while true {
            if let newline = self.buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: self.buffer[..<newline], as: UTF8.self)
                self.buffer.removeSubrange(...newline)
                return line
            }
            if self.finished {
                guard !self.buffer.isEmpty else { return nil }
                defer { self.buffer.removeAll() }
                return String(decoding: self.buffer, as: UTF8.self)
            }
            let data = self.handle.availableData
            if data.isEmpty {
                self.finished = true
            } else {
                self.buffer += data
            }
        }
    }
}

@Suite("Crash recovery of puts")
struct PutRecoveryTests {
    /// The segments are the log of record: a put whose frame was whole in the segment when it was killed
    /// (before the index commit, the slot's write, or the answer) is committed at the next open, as a
    /// transaction whose commit reached SQLite's WAL is. Either way nothing is left that no record owns.
    @Test(
        "a put killed after writing its frame, before its commit, is committed whole at the next open, and leaves no wrapped key or ciphertext that no record owns",
        arguments: [CrashPoint.putAfterFrameWrite, .putAfterFlush, .putBeforeCommit])
    func killedPutIsCommittedWholeOrNotAtAll(point: CrashPoint) throws {
        let vault = TestVault()
        let caseID = Samples.caseID()
        let store = try vault.open()
        let kept = try store.sealed.put(
            NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "kept")))
        store.close()
        let keptRegion = try BlobRegion(vault: vault, id: kept.id)

        let run = try Helper.run([
            "put-one", "--data", vault.data, "--key", vault.key, "--case-id", caseID.rawValue, "--crash-at",
            point.rawValue,
        ])
        #expect(run.status == SIGKILL)
        let committedEnd = keptRegion.offset + keptRegion.length
        let before = try #require(vault.files()["keyslots"])
        let liveSlotsBefore = (0..<(before.count / 128)).filter {
            Array(before[($0 * 128)..<($0 * 128 + 4)]) == Array("CVS1".utf8)
        }
        let tailBefore = try #require(vault.files()["segments/00000000"]).dropFirst(committedEnd)
        #expect(tailBefore.contains { $0 != 0 }, "the crashed put should have left its ciphertext on disk")
        if point != .putAfterFrameWrite {
            #expect(liveSlotsBefore.count == 2, "the crashed put should have left its wrapped key on disk")
        }

        let reopened = try vault.open()
        defer { reopened.close() }
        let records = try reopened.records(caseID: caseID).map(\.id)
        #expect(records.count == 2 && records.first == kept.id, "the killed put's whole frame was not committed")
        let slots = try #require(vault.files()["keyslots"])
        let live = (0..<(slots.count / 128)).filter { Array(slots[($0 * 128)..<($0 * 128 + 4)]) == Array("CVS1".utf8) }
        #expect(Set(live) == Set(records.compactMap { SlotFinder.slot(of: $0, in: slots) }), "a key no record owns")
        #expect(live.count == 2)
        #expect(try reopened.sealed.get(kept.id).content == Samples.content(.sessionNote, marker: "kept"))
        let killed = try #require(records.last)
        #expect(try reopened.sealed.get(killed).content == Array(#"{"text":"uncommitted"}"#.utf8))
        let killedRegion = try BlobRegion(vault: vault, id: killed)
        let segment = try #require(vault.files()["segments/00000000"])
        #expect(killedRegion.offset > committedEnd)
        #expect(
            segment.dropFirst(killedRegion.offset + killedRegion.length).allSatisfy { $0 == 0 },
            "ciphertext no record owns was left in the segment")
    }
}

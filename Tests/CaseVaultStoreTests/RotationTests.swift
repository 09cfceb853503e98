import CaseVaultCore
import CaseVaultStore
import Foundation
import GRDB
import Logging
import Testing

/// Key rotation (docs/SECURITY.md) through real files: a new epoch, every slot rewrapped in place, old epochs
/// retired, and a writer killed with SIGKILL anywhere in it.
@Suite("Key rotation", .serialized)
struct RotationTests {
    static let cycles = max(20, Int(ProcessInfo.processInfo.environment["CASEVAULT_CRASH_CYCLES"] ?? "") ?? 20)

    /// The epoch written in each live record's slot, read from the real files.
    static func slotEpochs(_ vault: TestVault) throws -> [UInt32] {
        var configuration = GRDB.Configuration()
        configuration.readonly = true
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite", configuration: configuration)
        let slots = try index.read { db in try Int64.fetchAll(db, sql: "SELECT slot FROM records WHERE state = 'live'")
        }
        let file = try [UInt8](Data(contentsOf: URL(fileURLWithPath: vault.data + "/keyslots")))
        return slots.map { slot in
            let offset = Int(slot) * 128 + 4
            return file[offset..<(offset + 4)].enumerated().reduce(UInt32(0)) {
                $0 | UInt32($1.element) << (8 * $1.offset)
            }
        }
    }

    static func populate(_ store: RecordStore, count: Int) throws -> [RecordID: [UInt8]] {
        var records: [RecordID: [UInt8]] = [:]
        let caseID = CaseID(bytes: Array(repeating: 7, count: 16))
        for n in 0..<count {
            let content = Array(#"{"text":"rotation \#(n) \#(String(repeating: "x", count: n % 50))"}"#.utf8)
            records[try store.sealed.put(NewRecord(caseID: caseID, type: .sessionNote, content: content)).id] = content
        }
        return records
    }

    @Test("a rotation moves every slot to a new epoch in batches, retires the old one, and loses nothing")
    func rotationInBatches() throws {
        let vault = TestVault()
        let store = try vault.open()
        var records = try Self.populate(store, count: 50)
        #expect(store.currentEpoch == 1)

        var seen: [Int] = []
        let partial = try store.rotate(limit: 20, batch: 8) { seen.append($0.rewrapped) }
        #expect(
            partial.opened && partial.epoch == 2 && partial.rewrapped == 20 && partial.remaining == 30
                && !partial.complete)
        #expect(seen == [8, 16, 20], "progress after each batch")
        #expect(try store.activeEpochs() == [1, 2], "the old epoch stays while slots use it")
        // New records use the new epoch at once; old ones still open.
        records.merge(try Self.populate(store, count: 5)) { $1 }
        for (id, content) in records { #expect(try store.sealed.get(id).content == content) }

        let rest = try store.rotate(batch: 8)
        #expect(!rest.opened && rest.epoch == 2 && rest.rewrapped == 30 && rest.complete && rest.retired == [1])
        #expect(try store.activeEpochs() == [2])
        for (id, content) in records { #expect(try store.sealed.get(id).content == content) }
        store.close()
        #expect(try Self.slotEpochs(vault).allSatisfy { $0 == 2 })

        // Reopened: epoch 1 stays retired and a slot under it (an old copy put back) no longer opens.
        let reopened = try vault.open()
        #expect(reopened.currentEpoch == 2)
        let next = try reopened.rotate()
        #expect(next.opened && next.epoch == 3 && next.rewrapped == 55 && next.retired == [2])
        for (id, content) in records { #expect(try reopened.sealed.get(id).content == content) }
        reopened.close()
    }

    @Test(
        "a rotation meets a key slot that does not open: it stops there naming the record, retires nothing, and once that record is shredded it completes"
    )
    func rotationStopsAtADamagedSlot() throws {
        let vault = TestVault()
        var records: [RecordID: [UInt8]]
        do {
            let store = try vault.open()
            records = try Self.populate(store, count: 10)
            store.close()
        }
        // One record's slot damaged on the disk: a byte of its wrapped key changed.
        let damaged = records.keys.sorted { $0.rawValue < $1.rawValue }[3]
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        let slot = try index.read { db in
            try Int64.fetchOne(db, sql: "SELECT slot FROM records WHERE id = ?", arguments: [damaged.rawValue])
        }
        try index.close()
        let path = vault.data + "/keyslots"
        var file = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        file[Int(try #require(slot)) * 128 + 60] ^= 0xFF
        try Data(file).write(to: URL(fileURLWithPath: path))
        records[damaged] = nil

        let store = try vault.open()
        do throws(CaseVaultError) {
            _ = try store.rotate()
            Issue.record("the rotation went past a key slot that does not open")
        } catch {
            #expect(error.code == .integrityFailure)
            #expect(error.message.contains(damaged.rawValue), "the refusal does not name the record: \(error.message)")
        }
        #expect(try store.activeEpochs() == [1, 2], "an epoch was retired while a slot under it remained")
        for (id, content) in records { #expect(try store.sealed.get(id).content == content) }
        // The operator's way out: the record cannot be read, and its shred lets the rotation finish.
        try store.shred(damaged)
        let rotation = try store.rotate()
        #expect(rotation.complete && rotation.retired == [1], "\(rotation)")
        for (id, content) in records { #expect(try store.sealed.get(id).content == content) }
        store.close()
    }

    @Test("a rotation killed with SIGKILL at random points loses no record and resumes", .timeLimit(.minutes(5)))
    func killedRotationResumes() throws {
        let vault = TestVault()
        var records: [RecordID: [UInt8]] = [:]
        do {
            let store = try vault.open()
            records = try Self.populate(store, count: 120)
            store.close()
        }
        let points: [CrashPoint] = [.rotateAfterEpoch, .rotateAfterSlotWrite, .rotateAfterBatch]
        var killed = 0
        var rotations = 0
        for cycle in 0..<Self.cycles {
            var arguments = ["rotate", "--data", vault.data, "--key", vault.key, "--batch", "7"]
            if cycle % 3 != 2 {
                // Each point passed a random number of times that it is sure to reach (120 slots, batches of 7).
                let point = points[(cycle - cycle / 3) % points.count]
                let passes =
                    point == .rotateAfterEpoch
                    ? 0 : point == .rotateAfterBatch ? Int.random(in: 0..<15) : Int.random(in: 0..<100)
                arguments += ["--crash-at", point.rawValue, "--crash-after-passes", "\(passes)"]
            } else {
                arguments += ["--die-after-microseconds", "\(Int.random(in: 1_000...25_000))"]
            }
            let result = try Helper.run(arguments)
            if result.output.contains("rotated") { rotations += 1 } else { killed += 1 }

            // After each crash: every record opens, byte for byte; at most two epochs are active.
            let store = try vault.open()
            for (id, content) in records {
                #expect(try store.sealed.get(id).content == content, "cycle \(cycle): a record was lost or changed")
            }
            let active = try store.activeEpochs()
            #expect((1...2).contains(active.count), "cycle \(cycle): active epochs \(active)")
            if cycle % 5 == 4 {
                // Some writing between crashes, under whichever epoch is current.
                records.merge(try Self.populate(store, count: 3)) { $1 }
            }
            store.close()
        }
        // Finishing: the interrupted rotation completes, every slot is under the one active epoch.
        let store = try vault.open()
        let final = try store.rotate()
        #expect(final.complete)
        let active = try store.activeEpochs()
        #expect(active.count == 1 && active.first == store.currentEpoch)
        for (id, content) in records { #expect(try store.sealed.get(id).content == content) }
        store.close()
        #expect(try Self.slotEpochs(vault).allSatisfy { $0 == active.first })
        #expect(
            killed >= Self.cycles / 2,
            "most cycles should die mid-rotation (\(killed) of \(Self.cycles); \(rotations) finished)")
    }
}

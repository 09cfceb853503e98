import CaseVaultCore
import CaseVaultStore
import Foundation
import GRDB
import Testing

/// The free list and the high-water mark in the index say which key slots are unowned. A damaged index
/// (a disk, an operator's hand) may say so of a slot a record owns; the store must then lose nothing:
/// writing or scrubbing such a slot destroys that record's key for good.
@Suite("Key slot accounting")
struct SlotAccountingTests {
    @Test("a reopen scrubs no slot a record owns, though the free list names every one and the high-water mark is 0")
    func recoveryLeavesOwnedSlots() throws {
        let vault = TestVault()
        let caseID = Samples.caseID()
        var filed = try Self.fileAndClose(vault, caseID, .intakeForm, marker: "owned")
        try Self.index(vault) { db in
            try db.execute(sql: "INSERT OR IGNORE INTO free_slots (slot) SELECT slot FROM records")
            try db.execute(sql: "UPDATE meta SET value = 0 WHERE key = 'slot_high_water'")
        }

        let store = try vault.open()
        defer { store.close() }
        for (id, content) in filed {
            #expect(try store.sealed.get(id).content == content)
        }
        // New puts take none of the owned slots, so the old records stay readable beside them.
        for n in 0..<8 {
            let content = Samples.content(.intakeForm, marker: "new \(n)")
            filed.append(
                (try store.sealed.put(NewRecord(caseID: caseID, type: .intakeForm, content: content)).id, content))
        }
        for (id, content) in filed {
            #expect(try store.sealed.get(id).content == content)
        }
        let (freeOwned, highWater, top) = try Self.index(vault) { db in
            (
                try Int.fetchOne(db, sql: "SELECT count(*) FROM free_slots WHERE slot IN (SELECT slot FROM records)")
                    ?? -1,
                try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'slot_high_water'") ?? -1,
                try Int64.fetchOne(db, sql: "SELECT max(slot) FROM records") ?? -1
            )
        }
        #expect(freeOwned == 0)
        #expect(highWater > top)
    }

    @Test("a reopen scrubs no record's sealed content, though the index's segment cursor says the segment is empty")
    func recoveryLeavesOwnedSegmentBytes() throws {
        let vault = TestVault()
        let caseID = Samples.caseID()
        var filed = try Self.fileAndClose(vault, caseID, .evaluation, marker: "blob")
        try Self.index(vault) { db in
            try db.execute(sql: "UPDATE meta SET value = 0 WHERE key IN ('segment_current', 'segment_end')")
        }
        let store = try vault.open()
        defer { store.close() }
        for n in 0..<5 {
            let content = Samples.content(.evaluation, marker: "after \(n)")
            filed.append(
                (try store.sealed.put(NewRecord(caseID: caseID, type: .evaluation, content: content)).id, content))
        }
        for (id, content) in filed {
            #expect(try store.sealed.get(id).content == content)
        }
    }

    @Test("a put never writes a free slot that the index says a record owns")
    func putSkipsOwnedSlot() throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let caseID = Samples.caseID()
        let kept = try store.sealed.put(
            NewRecord(caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "kept")))
        let gone = try store.sealed.put(
            NewRecord(caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "gone")))
        let slotOf = { (id: RecordID) throws -> Int64 in
            try #require(
                try Self.index(vault) { db in
                    try Int64.fetchOne(db, sql: "SELECT slot FROM records WHERE id = ?", arguments: [id.rawValue])
                })
        }
        let keptSlot = try slotOf(kept.id)
        let freed = try slotOf(gone.id)
        try store.shred(gone.id)
        // The store's free list now offers `freed`; the index, damaged behind its back, gives it to `kept`.
        try Self.index(vault) { db in
            try db.execute(sql: "UPDATE records SET slot = ? WHERE id = ?", arguments: [freed, kept.id.rawValue])
        }
        let next = try store.sealed.put(
            NewRecord(caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "next")))
        #expect(try slotOf(next.id) != freed)
        let freeListed = try Self.index(vault) { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM free_slots WHERE slot = ?", arguments: [freed]) ?? -1
        }
        #expect(freeListed == 0, "the owned slot is still on the free list")
        // Undo the damage: `kept` reads back, so its key in `keptSlot` was never touched.
        try Self.index(vault) { db in
            try db.execute(sql: "UPDATE records SET slot = ? WHERE id = ?", arguments: [keptSlot, kept.id.rawValue])
        }
        #expect(try store.sealed.get(kept.id).content == Samples.content(.intakeForm, marker: "kept"))
        #expect(try store.sealed.get(next.id).content == Samples.content(.intakeForm, marker: "next"))
    }

    /// Files five records of `type` in a store opened and closed again; their ids and contents.
    static func fileAndClose(_ vault: TestVault, _ caseID: CaseID, _ type: RecordType, marker: String) throws -> [(
        RecordID, [UInt8]
    )] {
        let store = try vault.open()
        defer { store.close() }
        return try (0..<5).map { n in
            let content = Samples.content(type, marker: "\(marker) \(n)")
            return (try store.sealed.put(NewRecord(caseID: caseID, type: type, content: content)).id, content)
        }
    }

    /// Runs `body` in a write transaction on the real index file, beside (or without) an open store.
    @discardableResult
    static func index<T>(_ vault: TestVault, _ body: (Database) throws -> T) throws -> T {
        var configuration = GRDB.Configuration()
        configuration.busyMode = .timeout(10)
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite", configuration: configuration)
        defer { try? index.close() }
        return try index.write(body)
    }
}

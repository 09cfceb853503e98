import CaseVaultCore
import CaseVaultSealing
import CaseVaultStore
import Logging
import Synchronization
import Testing

/// The real store behind the storage protocol, keeping a copy of every byte that crosses it in either
/// direction: blobs, wrapped keys, sealed hold reasons and facts, attachment chunks.
final class WatchedStorage: RecordStorage {
    let inner: RecordStore
    private let crossed = Mutex<[[UInt8]]>([])

    init(_ inner: RecordStore) {
        self.inner = inner
    }

    var bytesCrossed: [[UInt8]] { self.crossed.withLock { $0 } }

    func saw(_ bytes: [UInt8]) {
        self.crossed.withLock { $0.append(bytes) }
    }

    func saw(_ text: String) {
        self.saw(Array(text.utf8))
    }

    var sealing: SealingServices { self.inner.sealing }
    var logger: Logger { self.inner.logger }
    var maxContentBytes: Int { self.inner.maxContentBytes }
    func now() -> Int64 { self.inner.now() }

    func commit(_ record: SealedRecord, effects: FilingEffects) throws(CaseVaultError) -> RecordMetadata {
        self.saw(record.blob)
        self.saw("\(record.author ?? "") \(effects)")
        return try self.inner.commit(record, effects: effects)
    }

    func storedRecord(_ id: RecordID) throws(CaseVaultError) -> StoredRecord {
        let stored = try self.inner.storedRecord(id)
        self.saw(stored.blob)
        self.saw(stored.key.wrapped)
        return stored
    }

    func storedRecord(
        _ id: RecordID, rosterUID: UInt32?, decide: (RecordMetadata, CaseSummary, Bool) throws(CaseVaultError) -> Void
    ) throws(CaseVaultError) -> StoredRecord {
        let stored = try self.inner.storedRecord(id, rosterUID: rosterUID, decide: decide)
        self.saw(stored.blob)
        return stored
    }

    func metadata(_ id: RecordID) throws(CaseVaultError) -> RecordMetadata { try self.inner.metadata(id) }

    func shredHasBegun(_ id: RecordID) throws(CaseVaultError) -> Bool { try self.inner.shredHasBegun(id) }

    func withCaseLock<T>(_ id: CaseID, _ body: () throws(CaseVaultError) -> T) throws(CaseVaultError) -> T {
        try self.inner.withCaseLock(id, body)
    }

    func caseSummary(_ id: CaseID) throws(CaseVaultError) -> CaseSummary { try self.inner.caseSummary(id) }

    func withCaseLock<T>(
        _ id: CaseID, readingRoster rosterUID: UInt32?,
        _ body: (CaseSummary?, Bool) throws(CaseVaultError) -> T
    ) throws(CaseVaultError) -> T {
        try self.inner.withCaseLock(id, readingRoster: rosterUID, body)
    }

    func caseHeaderID(_ id: CaseID) throws(CaseVaultError) -> RecordID { try self.inner.caseHeaderID(id) }

    func notesToDestroy(_ caseID: CaseID) throws(CaseVaultError) -> [RecordID] {
        try self.inner.notesToDestroy(caseID)
    }

    func agreements(_ caseID: CaseID) throws(CaseVaultError) -> [(id: RecordID, sealedParticipant: [UInt8]?)] {
        let agreements = try self.inner.agreements(caseID)
        for agreement in agreements { self.saw(agreement.sealedParticipant ?? []) }
        return agreements
    }

    func finishMarkedShreds(_ ids: [RecordID]) throws(CaseVaultError) { try self.inner.finishMarkedShreds(ids) }

    func insertHold(_ hold: SealedHold) throws(CaseVaultError) {
        self.saw(hold.sealedReason)
        try self.inner.insertHold(hold)
    }

    func sealedHolds() throws(CaseVaultError) -> [SealedHold] {
        let holds = try self.inner.sealedHolds()
        for hold in holds { self.saw(hold.sealedReason) }
        return holds
    }

    func statisticsSnapshot(types: [RecordType]) throws(CaseVaultError) -> StatisticsSnapshot {
        let snapshot = try self.inner.statisticsSnapshot(types: types)
        for kept in snapshot.kept.values { self.saw(kept.sealed) }
        return snapshot
    }

    func statisticsRecordIDs(_ caseID: CaseID, types: [RecordType]) throws(CaseVaultError) -> [RecordID] {
        try self.inner.statisticsRecordIDs(caseID, types: types)
    }

    func keepStatisticsFacts(_ facts: [KeptFacts]) throws(CaseVaultError) {
        for kept in facts { self.saw(kept.sealed) }
        try self.inner.keepStatisticsFacts(facts)
    }

    func beginAttachment(_ id: RecordID) throws(CaseVaultError) -> (key: StoredKey, file: any AttachmentSink) {
        let (key, file) = try self.inner.beginAttachment(id)
        return (key, WatchedSink(file, watcher: self))
    }

    func finishAttachment(_ file: any AttachmentSink) throws(CaseVaultError) {
        guard let watched = file as? WatchedSink else {
            preconditionFailure("an attachment sink this storage did not make")
        }
        try self.inner.finishAttachment(watched.inner)
    }

    /// Given the key the inner storage answered the next `openAttachment` with, the key to answer instead,
    /// before the vault unwraps it (a test's: a shred or a rotation in between); used once.
    let afterOpeningAttachment = Mutex<(@Sendable (RecordID, StoredKey) -> StoredKey)?>(nil)

    func openAttachment(_ id: RecordID) throws(CaseVaultError) -> (key: StoredKey, file: any AttachmentSource) {
        var (key, file) = try self.inner.openAttachment(id)
        let change = self.afterOpeningAttachment.withLock { change in
            defer { change = nil }
            return change
        }
        if let change { key = change(id, key) }
        return (key, WatchedSource(file, watcher: self))
    }
}

final class WatchedSink: AttachmentSink {
    let inner: any AttachmentSink
    let watcher: WatchedStorage
    var recordID: RecordID { self.inner.recordID }

    init(_ inner: any AttachmentSink, watcher: WatchedStorage) {
        self.inner = inner
        self.watcher = watcher
    }

    func append(_ sealed: [UInt8]) throws(CaseVaultError) {
        self.watcher.saw(sealed)
        try self.inner.append(sealed)
    }

    func flush() throws(CaseVaultError) { try self.inner.flush() }
}

final class WatchedSource: AttachmentSource {
    let inner: any AttachmentSource
    let watcher: WatchedStorage
    var size: Int64 { self.inner.size }

    init(_ inner: any AttachmentSource, watcher: WatchedStorage) {
        self.inner = inner
        self.watcher = watcher
    }

    func read(count: Int, at offset: Int64) throws(CaseVaultError) -> [UInt8] {
        let bytes = try self.inner.read(count: count, at: offset)
        self.watcher.saw(bytes)
        return bytes
    }
}

@Suite("The storage protocol carries no plaintext")
struct StorageBoundaryTests {
    @Test(
        "a case's life through the vault (header, filings, reads, a hold, statistics, an attachment) hands the storage ciphertext and ids only"
    )
    func storageSeesCiphertextOnly() throws {
        let test = TestVault()
        let store = try test.open()
        defer { store.close() }
        let watched = WatchedStorage(store)
        let vault = Vault(storage: watched)
        let marker = "Zephyrine-Quillfeather"

        let summary = try vault.openCase(
            header: Samples.content(.caseHeader, marker: marker), mediators: [], author: nil)
        let intake = try vault.file(
            NewRecord(caseID: summary.id, type: .intakeForm, content: Samples.content(.intakeForm, marker: marker)))
        for participant in ["p1", "p2"] {
            let content = String(decoding: Samples.content(.agreementToMediate, marker: marker), as: UTF8.self)
                .replacingOccurrences(of: "\"p1\"", with: "\"\(participant)\"")
            _ = try vault.file(NewRecord(caseID: summary.id, type: .agreementToMediate, content: Array(content.utf8)))
        }
        let note = try vault.file(
            NewRecord(caseID: summary.id, type: .sessionNote, content: Samples.content(.sessionNote, marker: marker)))
        _ = try vault.file(
            NewRecord(caseID: summary.id, type: .evaluation, content: Samples.content(.evaluation, marker: marker)))
        let final = try vault.file(
            NewRecord(
                caseID: summary.id, type: .finalAgreement, content: Samples.content(.finalAgreement, marker: marker)))
        #expect(final.shredded == [note.record.id])

        // What the vault gives back is the content in clear, so the marker is there to be found.
        #expect(String(decoding: try vault.get(intake.record.id).content, as: UTF8.self).contains(marker))
        #expect(String(decoding: try vault.caseHeader(summary.id), as: UTF8.self).contains(marker))
        let read = try vault.read(intake.record.id, rosterUID: nil) { _, _, _ throws(CaseVaultError) in }
        #expect(String(decoding: read.content, as: UTF8.self).contains(marker))

        _ = try vault.placeHold(on: summary.id, reason: "held for \(marker)", authority: .daemon)
        #expect(try vault.holds().map(\.reason) == ["held for \(marker)"])
        let facts = try vault.statisticsFacts()
        #expect(facts.map(\.category) == ["roommate"])
        #expect(try vault.statisticsFacts().map(\.satisfaction) == [[4]])

        let upload = try vault.beginAttachment(intake.record.id, mediaType: "text/plain", maxBytes: 1 << 20)
        let scan = Array(String(repeating: "\(marker) signed ", count: 9000).utf8)
        try scan.withUnsafeBytes { bytes in try upload.append(bytes) }
        try vault.finishAttachment(upload)
        let download = try vault.openAttachment(intake.record.id)
        var back: [UInt8] = []
        while let chunk = try download.next() { back += chunk }
        #expect(back == scan)

        let crossed = watched.bytesCrossed
        #expect(crossed.count > 20)
        let leaks = crossed.filter { $0.contains(subsequence: Array(marker.utf8)) }
        #expect(leaks.isEmpty, "plaintext crossed the storage protocol \(leaks.count) times")
        // Nor did the categories or outcomes the statistics count.
        #expect(!crossed.contains { $0.contains(subsequence: Array("roommate".utf8)) })
        #expect(!crossed.contains { $0.contains(subsequence: Array("resolved".utf8)) })
    }
}

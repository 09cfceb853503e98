import CaseVaultCore
import CaseVaultStore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a shred must leave behind (docs/ARCHITECTURE.md), checked on the real files of the data directory.
struct ShredEvidence {
    let id: RecordID
    let wrappedKey: [UInt8]
    let sealed: [UInt8]

    /// Captures the record's wrapped key and sealed blob from disk while it is still live.
    init(vault: TestVault, id: RecordID) throws {
        let files = vault.files()
        let slots = try #require(files["keyslots"])
        let slot = try #require(SlotFinder.slot(of: id, in: slots))
        self.id = id
        self.wrappedKey = Array(slots[(slot * 128 + 24)..<(slot * 128 + 96)])
        self.sealed = try BlobRegion(vault: vault, id: id).read()
    }

    /// Asserts that no file under the data directory holds the wrapped key or any 16-byte window of the
    /// sealed content.
    func expectGone(from vault: TestVault, sourceLocation: SourceLocation = #_sourceLocation) {
        let files = vault.files()
        for (name, bytes) in files {
            #expect(
                !bytes.contains(subsequence: self.wrappedKey), "\(name) still holds the wrapped key",
                sourceLocation: sourceLocation)
        }
        // Index every 16-byte window of the ciphertext by its first 8 bytes, then slide over each file.
        var windows: [UInt64: [Int]] = [:]
        for start in 0...(self.sealed.count - 16) {
            windows[Self.word(self.sealed, at: start), default: []].append(start)
        }
        for (name, bytes) in files where bytes.count >= 16 {
            var found = false
            var start = 0
            while start <= bytes.count - 16 && !found {
                if let candidates = windows[Self.word(bytes, at: start)] {
                    found = candidates.contains {
                        bytes[start..<(start + 16)].elementsEqual(self.sealed[$0..<($0 + 16)])
                    }
                }
                start += 1
            }
            #expect(!found, "\(name) holds a 16-byte window of the sealed content", sourceLocation: sourceLocation)
        }
    }
}

extension ShredEvidence {
    static func word(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) }
    }
}

@Suite("Shredding")
struct ShredTests {
    @Test(
        "after a shred: reads say shredded, and no file holds the wrapped key or any 16-byte window of the ciphertext")
    func shredLeavesNothingBehind() throws {
        let vault = TestVault()
        let store = try vault.open()
        let caseID = Samples.caseID()
        let marker = "PLAINTEXT-MARKER-7f3a9c"
        let keep = try store.sealed.put(
            NewRecord(caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: marker)))
        var notes: [RecordID] = []
        for n in 0..<5 {
            notes.append(
                try store.sealed.put(
                    NewRecord(
                        caseID: caseID, type: .sessionNote,
                        content: Samples.content(.sessionNote, marker: marker + "\(n)"))
                ).id)
            #expect(vault.filesContaining(Array(marker.utf8)).isEmpty)
        }
        let evidence = try notes.map { try ShredEvidence(vault: vault, id: $0) }
        try store.shred(notes[0])
        try store.shred(Array(notes[1...]))
        #expect(vault.filesContaining(Array(marker.utf8)).isEmpty)
        for item in evidence {
            #expect(throws: CaseVaultError.self) { try store.sealed.get(item.id) }
            item.expectGone(from: vault)
        }
        #expect(try store.records(caseID: caseID).map(\.id) == [keep.id])
        store.close()

        let reopened = try vault.open()
        for item in evidence {
            do {
                _ = try reopened.sealed.get(item.id)
                Issue.record("a shredded record came back after reopen")
            } catch {
                #expect(error.code == .shredded)
            }
            item.expectGone(from: vault)
        }
        #expect(try reopened.sealed.get(keep.id).content == Samples.content(.intakeForm, marker: marker))
        reopened.close()
        #expect(vault.filesContaining(Array(marker.utf8)).isEmpty)
    }

    @Test("a shred truncates the index's WAL, so no page image of its rows lives on there; a clean close leaves none")
    func shredTruncatesTheWAL() throws {
        let vault = TestVault()
        let store = try vault.open()
        let caseID = Samples.caseID()
        let notes = try (0..<20).map { n in
            try store.sealed.put(
                NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "wal\(n)"))
            ).id
        }
        #expect(vault.indexWALBytes > 0, "the puts' rows went through the WAL")
        try store.shred(notes)
        #expect(vault.indexWALBytes == 0, "after the shred the WAL still holds \(vault.indexWALBytes) bytes")
        _ = try store.sealed.put(
            NewRecord(caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "after")))
        #expect(vault.indexWALBytes > 0)
        #expect(store.close() == nil)
        #expect(vault.indexWALBytes == 0, "a clean close left \(vault.indexWALBytes) bytes of WAL")
    }

    @Test("a slot freed by a shred is reused without confusing the old record with the new one")
    func freedSlotIsReused() throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let caseID = Samples.caseID()
        let old = try store.sealed.put(
            NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "old")))
        let oldSlot = SlotFinder.slot(of: old.id, in: try #require(vault.files()["keyslots"]))
        try store.shred(old.id)
        let new = try store.sealed.put(
            NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "new")))
        #expect(try store.sealed.get(new.id).content == Samples.content(.sessionNote, marker: "new"))
        #expect(SlotFinder.slot(of: new.id, in: try #require(vault.files()["keyslots"])) == oldSlot)
        do {
            _ = try store.sealed.get(old.id)
            Issue.record("the old record opened")
        } catch {
            #expect(error.code == .shredded)
        }
    }

    @Test(
        "a process killed between any two steps of a shred comes back with the record fully shredded",
        arguments: CrashPoint.allCases.filter { $0.rawValue.hasPrefix("shred.") })
    func shredKilledAtEveryStepIsFinishedOnOpen(point: CrashPoint) throws {
        let vault = TestVault()
        let caseID = Samples.caseID()
        let store = try vault.open()
        let victim = try store.sealed.put(
            NewRecord(caseID: caseID, type: .sessionNote, content: Samples.content(.sessionNote, marker: "victim")))
        let survivor = try store.sealed.put(
            NewRecord(caseID: caseID, type: .finalAgreement, content: Samples.content(.finalAgreement, marker: "keep")))
        store.close()
        let evidence = try ShredEvidence(vault: vault, id: victim.id)

        let run = try Helper.run([
            "shred", "--data", vault.data, "--key", vault.key, "--crash-at", point.rawValue, victim.id.rawValue,
        ])
        #expect(run.status == SIGKILL, "the helper should have died at \(point.rawValue)")

        let reopened = try vault.open()
        defer { reopened.close() }
        do {
            _ = try reopened.sealed.get(victim.id)
            Issue.record("the record survived a shred killed at \(point.rawValue)")
        } catch {
            #expect(error.code == .shredded)
        }
        #expect(try reopened.isShredded(victim.id))
        #expect(
            try Certified.methods(reopened)[victim.id.rawValue] == "shred_request",
            "recovery must issue the certificate")
        evidence.expectGone(from: vault)
        #expect(try reopened.sealed.get(survivor.id).content == Samples.content(.finalAgreement, marker: "keep"))
    }
}

/// What the vault's certificates say was destroyed: record id → method, from certificates that verify.
enum Certified {
    static func methods(_ store: RecordStore) throws -> [String: String] {
        var methods: [String: String] = [:]
        for document in try store.certificates() {
            let certificate = try #require(
                DestructionCertificate.verify(document: document, publicKey: store.certificatePublicKey))
            for record in certificate.records {
                #expect(methods[record.recordID] == nil, "a record is certified twice")
                methods[record.recordID] = certificate.method
            }
        }
        return methods
    }
}

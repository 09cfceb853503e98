import CaseVaultCore
import CaseVaultSealing
import CaseVaultStore
import Testing

/// An attachment opened while its record's key changes under it: a shred scrubs the slot as the storage reads
/// it, or a rotation retires the epoch of the key it read before the vault unwraps it
/// (`WatchedStorage.afterOpeningAttachment`).
@Suite("Attachments opened while their key changes")
struct AttachmentRaceTests {
    @Test(
        "an attachment whose record is shredded as the storage reads its key is refused as shredded, not as damage; one whose key a rotation rewrapped under a new epoch, retiring the old, before the vault unwraps it is read again and downloads whole"
    )
    func attachmentBesideShredAndRotation() throws {
        let test = TestVault()
        let store = try test.open()
        defer { store.close() }
        let watched = WatchedStorage(store)
        let vault = Vault(storage: watched)
        let summary = try vault.openCase(
            header: Samples.content(.caseHeader, marker: "race"), mediators: [], author: nil)
        func attached(_ marker: String) throws -> (RecordID, [UInt8]) {
            let intake = try vault.file(
                NewRecord(caseID: summary.id, type: .intakeForm, content: Samples.content(.intakeForm, marker: marker)))
            let upload = try vault.beginAttachment(intake.record.id, mediaType: "text/plain", maxBytes: 1 << 20)
            let scan = Array(String(repeating: "\(marker) scan ", count: 100).utf8)
            try scan.withUnsafeBytes { bytes in try upload.append(bytes) }
            try vault.finishAttachment(upload)
            return (intake.record.id, scan)
        }
        let (shredded, _) = try attached("shredded")
        let (rotated, scan) = try attached("rotated")

        // The shred runs while the storage reads: the slot it reads is the one the shred scrubbed.
        watched.afterOpeningAttachment.withLock {
            $0 = { id, key in
                _ = try? store.shred(id)
                var read = key
                read.wrapped = KeySlot.scrubbed()
                return read
            }
        }
        do throws(CaseVaultError) {
            _ = try vault.openAttachment(shredded)
            Issue.record("the attachment of a record shredded meanwhile was opened")
        } catch {
            #expect(error.code == .shredded, "\(error)")
        }

        // The rotation runs after the storage read the slot: the key read is under the epoch it retires.
        watched.afterOpeningAttachment.withLock {
            $0 = { _, key in
                _ = try? store.rotate()
                return key
            }
        }
        let download = try vault.openAttachment(rotated)
        #expect(try store.activeEpochs() == [2], "the rotation did not retire the epoch the key was read under")
        var back: [UInt8] = []
        while let chunk = try download.next() { back += chunk }
        #expect(back == scan)
    }
}

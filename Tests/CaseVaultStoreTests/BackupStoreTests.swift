import CaseVaultCore
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Logging
import Synchronization
import Testing

/// Backups (docs/ARCHITECTURE.md) through the real files: the store writes a backup while a shred runs beside it,
/// and a restore refuses every changed byte of the file.
@Suite("Backup files", .serialized)
struct BackupStoreTests {
    let vault = TestVault()
    var keys: BackupKeyFile { BackupKeyFile(path: self.vault.root + "/keys/backup.keys") }

    func intakes(_ store: RecordStore, count: Int) throws -> [RecordID: [UInt8]] {
        var records: [RecordID: [UInt8]] = [:]
        let caseID = Samples.caseID()
        for n in 0..<count {
            let content = Samples.content(.intakeForm, marker: "backup \(n)")
            records[try store.sealed.put(NewRecord(caseID: caseID, type: .intakeForm, content: content)).id] = content
        }
        return records
    }

    func backup(_ store: RecordStore, during: (Int) throws -> Void = { _ in }) throws -> [UInt8] {
        var file: [UInt8] = []
        var pieces = 0
        _ = try store.backup(id: RecordStore.newBackupID(), keys: self.keys, retentionDays: 35) {
            bytes throws(CaseVaultError) in
            file += bytes
            pieces += 1
            do { try during(pieces) } catch { Issue.record(error) }
        }
        return file
    }

    /// Restores `file` into `target` with no ledger.
    func restore(_ file: [UInt8], into target: String) throws(CaseVaultError) -> RestoreSummary {
        try self.vault.restore(file, into: target, keys: self.keys)
    }

    func reopen(_ target: String) throws(CaseVaultError) -> RecordStore {
        var configuration = self.vault.configuration()
        configuration.dataDirectory = URL(fileURLWithPath: target)
        return try RecordStore.open(configuration, logger: Logger(label: "test"))
    }

    @Test("a record shredded while the backup runs is not in it, even restored without a ledger; every other record is")
    func shredDuringBackup() throws {
        let store = try self.vault.open()
        var records = try self.intakes(store, count: 12)
        // The backup reads records in the order they lie in the segments: shred the last one once the
        // backup has begun streaming records (its second piece is the first record's slot).
        let order = records.keys.sorted {
            try! BlobRegion(vault: self.vault, id: $0).offset < BlobRegion(vault: self.vault, id: $1).offset
        }
        let doomed = order.last!
        let file = try self.backup(store) { piece in
            if piece == 2 { try store.shred(doomed) }
        }
        records[doomed] = nil
        store.close()

        let target = self.vault.root + "/restored"
        let summary = try self.restore(file, into: target)
        #expect(summary.records == records.count && summary.reshredded == 0)
        let restored = try self.reopen(target)
        defer { restored.close() }
        for (id, content) in records { #expect(try restored.sealed.get(id).content == content) }
        #expect(throws: CaseVaultError.self) { try restored.sealed.get(doomed) }
        #expect(try restored.metadata(records.keys.first!).type == .intakeForm)
    }

    @Test("backups taken at the same time each keep their own key: none is left without one")
    func concurrentBackupsKeepEveryKey() throws {
        let store = try self.vault.open()
        defer { store.close() }
        _ = try self.intakes(store, count: 2)
        let ids = Mutex<[String]>([])
        let failures = Mutex<[String]>([])
        let keys = self.keys
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<15 {
                let id = RecordStore.newBackupID()
                do {
                    _ = try store.backup(id: id, keys: keys, retentionDays: 35) { _ throws(CaseVaultError) in }
                    ids.withLock { $0.append(id) }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
        // Every backup's id heads one key slot ("CVBK" | id) of the key file.
        let bytes = try #require(FileManager.default.contents(atPath: self.keys.path)).map { $0 }
        let slots = stride(from: 0, to: bytes.count - 127, by: 128).map { Array(bytes[$0..<($0 + 128)]) }
        let keyed = Set(slots.filter { $0.prefix(4).elementsEqual("CVBK".utf8) }.map { Hex.encode(Array($0[4..<20])) })
        let taken = ids.withLock { $0 }
        #expect(taken.count == 120)
        #expect(
            taken.filter { !keyed.contains($0) }.isEmpty,
            "\(taken.filter { !keyed.contains($0) }.count) backups have no key")
    }

    @Test("a changed byte anywhere in a backup file is refused and nothing is restored")
    func everyFlipRefused() throws {
        let store = try self.vault.open()
        _ = try self.intakes(store, count: 3)
        let file = try self.backup(store)
        store.close()
        #expect(try self.restore(file, into: self.vault.root + "/whole").records == 3, "the untouched file restores")

        // Every byte of the clear header and stream header, then a stride through the frames, and the end.
        let positions =
            Array(0..<80) + Array(stride(from: 80, to: file.count, by: max(1, file.count / 400)))
            + Array((file.count - 40)..<file.count)
        for position in positions {
            var changed = file
            changed[position] ^= 0x40
            let target = self.vault.root + "/flip-\(position)"
            #expect(throws: CaseVaultError.self, "a flip at byte \(position) of \(file.count) was restored") {
                _ = try self.restore(changed, into: target)
            }
            #expect(!FileManager.default.fileExists(atPath: target), "a refused restore left \(target) behind")
        }
        // Anything after its end: refused.
        #expect(throws: CaseVaultError.self, "a file with bytes after its end was restored") {
            _ = try self.restore(file + [0], into: self.vault.root + "/longer")
        }
        #expect(!FileManager.default.fileExists(atPath: self.vault.root + "/longer"))
        // Cut anywhere: refused too.
        for length in stride(from: 0, to: file.count, by: max(1, file.count / 50)) {
            #expect(throws: CaseVaultError.self, "a file cut to \(length) bytes was restored") {
                _ = try self.restore(Array(file.prefix(length)), into: self.vault.root + "/cut-\(length)")
            }
        }
    }

    @Test("a backup key file inside the data directory is refused before anything is written")
    func keyFileInsideData() throws {
        let store = try self.vault.open()
        defer { store.close() }
        var written = 0
        let inside = BackupKeyFile(path: self.vault.data + "/backup.keys")
        #expect(throws: CaseVaultError.self) {
            _ = try store.backup(id: RecordStore.newBackupID(), keys: inside, retentionDays: 35) {
                bytes throws(CaseVaultError) in
                written += bytes.count
            }
        }
        #expect(written == 0 && !FileManager.default.fileExists(atPath: inside.path))
    }

    @Test("an index snapshot that a crash left mid-backup is removed by the next open; a failed backup leaves none")
    func strayedSnapshotRemoved() throws {
        var store = try self.vault.open()
        _ = try self.intakes(store, count: 2)
        // A client that goes away mid-backup: the backup stops, and its snapshot goes with it.
        var pieces = 0
        #expect(throws: CaseVaultError.self) {
            _ = try store.backup(id: RecordStore.newBackupID(), keys: self.keys, retentionDays: 35) {
                _ throws(CaseVaultError) in
                pieces += 1
                if pieces == 3 { throw CaseVaultError(.storageFailure, "the client went away") }
            }
        }
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: self.vault.data).filter { $0.hasPrefix("backup-") }
                .isEmpty)
        store.close()

        // A SIGKILL cannot run that cleanup: the snapshot and its journal stay until the next open.
        let stray = self.vault.data + "/backup-" + RecordStore.newBackupID() + ".sqlite"
        try FileManager.default.copyItem(atPath: self.vault.data + "/index.sqlite", toPath: stray)
        _ = FileManager.default.createFile(atPath: stray + "-journal", contents: Data([1, 2, 3]))
        store = try self.vault.open()
        defer { store.close() }
        #expect(
            !FileManager.default.fileExists(atPath: stray)
                && !FileManager.default.fileExists(atPath: stray + "-journal"))
        #expect(FileManager.default.fileExists(atPath: self.vault.data + "/index.sqlite"))
    }

    @Test("a rotation that runs while the backup streams: every record of the backup opens after a restore")
    func rotationDuringBackup() throws {
        let store = try self.vault.open()
        let records = try self.intakes(store, count: 12)
        let file = try self.backup(store) { piece in
            // After the snapshot and the first record: every slot moves to epoch 2 and epoch 1 is retired.
            if piece == 3 {
                let report = try store.rotate()
                #expect(report.complete && report.retired == [1])
            }
        }
        store.close()
        let target = self.vault.root + "/restored"
        #expect(try self.restore(file, into: target).records == records.count)
        let restored = try self.reopen(target)
        defer { restored.close() }
        for (id, content) in records { #expect(try restored.sealed.get(id).content == content) }
        // The restored vault rotates on from there.
        #expect(try restored.rotate().complete)
        for (id, content) in records { #expect(try restored.sealed.get(id).content == content) }
    }
}

import CaseVaultCore
import CaseVaultFiles
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The shred ledger across restores, through the real files: a restore keeps every entry it is given, so a
/// chain of restores never brings a shredded record back; and the copy of the ledger beside the backup
/// keys, written by each shred, stands in for a data directory that was lost.
@Suite("Shred ledger across restores", .serialized)
struct LedgerStoreTests {
    static let marker = "LEDGER7CONTENT"
    let vault = TestVault()
    var keys: BackupKeyFile { BackupKeyFile(path: self.vault.root + "/keys/backup.keys") }
    /// Where the daemon keeps the copy by default: beside the backup key file.
    var copy: ShredLedgerFile { ShredLedgerFile(path: self.vault.root + "/keys/shred.ledger") }

    /// The vault's store, keeping the ledger copy beside the backup keys as the daemon does.
    func openKeepingCopy() throws(CaseVaultError) -> RecordStore {
        var configuration = self.vault.configuration()
        configuration.shredLedgerCopy = URL(fileURLWithPath: self.copy.path)
        return try RecordStore.open(configuration, logger: Logger(label: "test"))
    }

    func intake(_ store: RecordStore) throws -> RecordID {
        let content = Samples.content(.intakeForm, marker: Self.marker)
        return try store.sealed.put(NewRecord(caseID: Samples.caseID(), type: .intakeForm, content: content)).id
    }

    func backup(_ store: RecordStore) throws -> [UInt8] {
        var file: [UInt8] = []
        _ = try store.backup(id: RecordStore.newBackupID(), keys: self.keys, retentionDays: 35) {
            bytes throws(CaseVaultError) in
            file += bytes
        }
        return file
    }

    func restore(
        _ file: [UInt8], into target: String, ledger: [ShredLedgerEntry], copy: ShredLedgerFile? = nil
    ) throws(CaseVaultError) -> RestoreSummary {
        try self.vault.restore(file, into: target, keys: self.keys, ledger: ledger, ledgerCopy: copy)
    }

    func reopen(_ target: String) throws(CaseVaultError) -> RecordStore {
        var configuration = self.vault.configuration()
        configuration.dataDirectory = URL(fileURLWithPath: target)
        return try RecordStore.open(configuration, logger: Logger(label: "test"))
    }

    static func isShredded(_ store: RecordStore, _ id: RecordID) throws -> Bool {
        do {
            _ = try store.sealed.get(id)
            return false
        } catch  where error.code == .shredded {
            return true
        }
    }

    @Test(
        "an older backup restored with a ledger naming a record it never held keeps that entry, so the next restore of a backup that holds the record shreds it"
    )
    func chainOfRestoresKeepsTheWholeLedger() throws {
        let store = try self.vault.open()
        let kept = try self.intake(store)
        let older = try self.backup(store)
        let doomed = try self.intake(store)
        let newer = try self.backup(store)
        try store.shred(doomed)
        let live = try store.shredLedger()
        store.close()
        #expect(live.map(\.recordID) == [doomed])

        // The older backup never held the record: nothing to shred again, but the restored vault's ledger
        // must still name it.
        let first = self.vault.root + "/first"
        let summary = try self.restore(older, into: first, ledger: live)
        #expect(summary.records == 1 && summary.reshredded == 0 && summary.ledgerAdded == 1, "\(summary)")
        let firstLedger = try RecordStore.shredLedger(ofDataDirectory: first)
        #expect(firstLedger.map(\.recordID) == [doomed], "the restored ledger lost a record the backup did not hold")
        #expect(firstLedger.first?.caseID == live.first?.caseID && firstLedger.first?.type == .intakeForm)

        // The newer backup holds the record; its restore reads the first restored vault's ledger, as
        // `restore --live-data` does.
        let second = self.vault.root + "/second"
        let again = try self.restore(newer, into: second, ledger: firstLedger)
        #expect(again.records == 2 && again.reshredded == 1, "\(again)")
        let restored = try self.reopen(second)
        defer { restored.close() }
        #expect(
            try Self.isShredded(restored, doomed),
            "a record shredded in the live vault came back through a chain of restores")
        #expect(try restored.sealed.get(kept).content == Samples.content(.intakeForm, marker: Self.marker))
        #expect(try restored.shredLedger().map(\.recordID) == [doomed])
    }

    @Test(
        "the data directory lost: a restore reads the ledger copy beside the backup keys, written by the shred itself, and the record shredded after the last backup stays shredded"
    )
    func lostDataDirectoryRestoredFromCopy() throws {
        let store = try self.openKeepingCopy()
        let kept = try self.intake(store)
        let doomed = try self.intake(store)
        let file = try self.backup(store)
        // After the last backup, and no backup or sweep since: only the shred's own append records it.
        try store.shred(doomed)
        store.close()
        try FileManager.default.removeItem(atPath: self.vault.data)

        let text = String(decoding: try #require(FileManager.default.contents(atPath: self.copy.path)), as: UTF8.self)
        #expect(text.contains(doomed.rawValue) && !text.contains(kept.rawValue))
        #expect(!text.contains(Self.marker), "the ledger copy holds content")

        let target = self.vault.root + "/restored"
        let summary = try self.restore(file, into: target, ledger: [], copy: self.copy)
        #expect(summary.records == 2 && summary.reshredded == 1 && summary.copyEntries == 1, "\(summary)")
        let restored = try self.reopen(target)
        defer { restored.close() }
        #expect(try Self.isShredded(restored, doomed), "the restore brought back a record shredded after the backup")
        #expect(try restored.sealed.get(kept).content == Samples.content(.intakeForm, marker: Self.marker))
    }

    @Test(
        "a ledger copy with a line altered, or another vault's copy, is refused and nothing is restored; a last line cut short is left out"
    )
    func copyIsChecked() throws {
        let store = try self.openKeepingCopy()
        let doomed = try self.intake(store)
        let file = try self.backup(store)
        try store.shred(doomed)
        store.close()
        let original = try #require(FileManager.default.contents(atPath: self.copy.path)).map { $0 }
        func replaceCopy(_ bytes: [UInt8]) throws {
            try Data(bytes).write(to: URL(fileURLWithPath: self.copy.path))
            chmod(self.copy.path, 0o600)
        }

        // An append that a crash cut short: the whole lines before it are read.
        try replaceCopy(original + Array(doomed.rawValue.prefix(20).utf8))
        let torn = try self.restore(file, into: self.vault.root + "/torn", ledger: [], copy: self.copy)
        #expect(torn.reshredded == 1 && torn.copyEntries == 1, "\(torn)")

        // One hex digit of the record id changed (the header is the first line; the entry starts after it).
        var altered = original
        let start = try #require(altered.firstIndex(of: UInt8(ascii: "\n"))) + 1
        altered[start] = altered[start] == UInt8(ascii: "a") ? UInt8(ascii: "b") : UInt8(ascii: "a")
        try replaceCopy(altered)
        do {
            _ = try self.restore(file, into: self.vault.root + "/altered", ledger: [], copy: self.copy)
            Issue.record("a ledger copy with an altered line was read")
        } catch {
            #expect(error.code == .integrityFailure && error.field == "backup.ledger_file", "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: self.vault.root + "/altered"))

        // Another vault's copy, whole and well formed: its lines do not check out under this root key.
        let other = TestVault()
        var configuration = other.configuration()
        configuration.shredLedgerCopy = URL(fileURLWithPath: other.root + "/keys/shred.ledger")
        let foreign = try RecordStore.open(configuration, logger: Logger(label: "test"))
        try foreign.shred(try self.intake(foreign))
        foreign.close()
        do {
            _ = try self.restore(
                file, into: self.vault.root + "/foreign", ledger: [],
                copy: ShredLedgerFile(path: other.root + "/keys/shred.ledger"))
            Issue.record("another vault's ledger copy was read")
        } catch {
            #expect(error.code == .integrityFailure && error.field == "backup.ledger_file", "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: self.vault.root + "/foreign"))
    }

    @Test("the copy is rewritten at open as the union of itself and the index: entries only it holds are kept")
    func copyKeepsWhatOnlyItKnows() throws {
        var store = try self.openKeepingCopy()
        let first = try self.intake(store)
        try store.shred(first)
        store.close()
        // A data directory started afresh (a restore made without any ledger) under the same keys.
        try FileManager.default.removeItem(atPath: self.vault.data)
        store = try self.openKeepingCopy()
        let second = try self.intake(store)
        try store.shred(second)
        store.close()
        store = try self.openKeepingCopy()
        store.close()
        let text = String(decoding: try #require(FileManager.default.contents(atPath: self.copy.path)), as: UTF8.self)
        #expect(text.contains(first.rawValue) && text.contains(second.rawValue), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: self.copy.path + ".new"))
    }

    @Test("a record shredded while a restore ran is shredded again when the restored vault opens, from the copy")
    func shredDuringRestoreStaysShredded() throws {
        let store = try self.openKeepingCopy()
        let doomed = try self.intake(store)
        let file = try self.backup(store)
        let target = self.vault.root + "/restored"
        _ = try self.restore(file, into: target, ledger: [], copy: self.copy)
        // The old daemon still serves: a shred after the restore read the copy.
        try store.shred(doomed)
        store.close()
        var configuration = self.vault.configuration()
        configuration.dataDirectory = URL(fileURLWithPath: target)
        configuration.shredLedgerCopy = URL(fileURLWithPath: self.copy.path)
        let restored = try RecordStore.open(configuration, logger: Logger(label: "test"))
        defer { restored.close() }
        #expect(try Self.isShredded(restored, doomed), "the record shredded during the restore came back")
    }
}

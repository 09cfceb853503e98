import CaseVaultAudit
import CaseVaultCore
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A file made while its folder's flush fails: its name is in the page cache and not on the disk, and a
/// later call that finds the file must flush the name again before anything it acknowledges depends on it.
extension FailingDiskTests {
    @Test(
        "the audit log's file made while its folder's flush fails: the open is refused, the next open flushes the name, and after a power cut every acknowledged entry is there"
    )
    func auditLogWhoseNameWasNotFlushed() async throws {
        let fs = try PowerCutFS()
        try fs.mount()
        let directory = fs.mountpoint + "/audit"
        #expect(mkdir(directory, 0o700) == 0)
        fs.flushTop()
        try fs.cut()
        try fs.mount(options: ["--fail=fsyncdir:/audit@1=EIO"])
        #expect(throws: CaseVaultError.self) { try AuditLog.open(directory: directory, clock: { 1_700_000_000_000 }) }
        var acknowledged: [UInt64] = []
        do {
            // A sealed daemon's log: its entries are unsigned until an unseal attaches it to the store, and
            // no checkpoint flushes the folder meanwhile.
            let (log, _) = try AuditLog.open(directory: directory, clock: { 1_700_000_000_000 })
            defer { log.close() }
            for number in UInt64(1)...5 {
                try await log.awaitDurable(try await log.append(AuditLogTests.request(number)))
                acknowledged.append(number)
            }
        }
        try fs.cut()
        #expect(fs.injected.count == 1, "the failure was not injected: \(fs.injected)")
        try fs.mount()
        let text = String(decoding: FileManager.default.contents(atPath: directory + "/log") ?? Data(), as: UTF8.self)
        let missing = acknowledged.filter { !text.contains("\"request\":\($0),") }
        #expect(acknowledged.count == 5 && missing.isEmpty, "acknowledged entries lost at the power cut: \(missing)")
        try fs.cut()
    }

    @Test(
        "the backup key file made while its folder's flush fails: that backup is refused, the next one flushes the name, and after a power cut its key is there"
    )
    func backupKeyFileWhoseNameWasNotFlushed() throws {
        let fs = try PowerCutFS()
        try fs.mount()
        let vault = fs.newVault()
        try vault.open().close()
        try fs.cut()
        // The keys' folder holds the root key already; its next flush is the one after the backup key file
        // is made.
        let keys = BackupKeyFile(path: vault.root + "/keys/backup.keys")
        try fs.mount(options: ["--fail=\(Self.onDisk("fsyncdir:/<vault>/keys", vault: vault))@1=EIO"])
        var kept: [UInt8] = []
        do {
            let store = try vault.open()
            defer { store.close() }
            let refused = RecordStore.newBackupID()
            #expect(throws: CaseVaultError.self) {
                try store.backup(id: refused, keys: keys, retentionDays: 35) { _ throws(CaseVaultError) in }
            }
            let id = RecordStore.newBackupID()
            _ = try store.backup(id: id, keys: keys, retentionDays: 35) { _ throws(CaseVaultError) in }
            kept = Hex.decode(id) ?? []
        }
        try fs.cut()
        #expect(fs.injected.count == 1, "the failure was not injected: \(fs.injected)")
        try fs.mount()
        let entries = try keys.entries()
        #expect(
            entries.contains { $0.id == kept },
            "the acknowledged backup's key was lost at the power cut (\(entries.count) keys in the file)")
        try fs.cut()
    }
}

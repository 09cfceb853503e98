import CaseVaultCore
import CaseVaultCrypto
import CaseVaultSealing
import Foundation
import Testing

/// The file format of a database's backups and of a vault moved between the backends (`LogicalBackup`).
@Suite("The logical backup format")
struct LogicalBackupTests {
    @Test(
        "the largest record a daemon takes (a 64 MiB blob and its row) is one item a restore accepts, which the first encoding (the blob in base64 inside the row) was not; an item longer than a restore accepts is refused before it is written"
    )
    func itemLimit() throws {
        let sealing = try SealingServices(rootKey: EpochExchangeTests.vaultRootKey)
        let writer = try LogicalBackup.Writer(
            magic: LogicalBackup.magic, id: Random.bytes(count: 16), createdAt: 0, vaultCheck: sealing.rootKeyCheck,
            key: sealing.newBackupKey())
        let row = LogicalBackup.Record(
            id: RecordID(bytes: Random.bytes(count: 16)).rawValue,
            caseID: CaseID(bytes: Random.bytes(count: 16)).rawValue,
            type: RecordType.finalAgreement.rawValue, createdAt: 1, author: "uid:1000", supersedes: nil,
            wrappedKey: Random.bytes(count: 72))
        let blob = [UInt8](repeating: 7, count: (64 << 20) + 256)
        let frame = try writer.frame(.recordAndBlob, LogicalBackup.recordItem(row, blob: blob))
        #expect(frame.count - 4 <= LogicalBackup.maxMessage)
        let (decoded, body) = try LogicalBackup.record(
            .recordAndBlob, ArraySlice(LogicalBackup.recordItem(row, blob: blob)))
        #expect(decoded.id == row.id && body == blob)
        var first = row
        first.blob = Data(blob)
        #expect(LogicalBackup.encode(first).count > LogicalBackup.maxMessage)
        #expect(throws: CaseVaultError.self) {
            try writer.frame(.recordAndBlob, [UInt8](repeating: 0, count: LogicalBackup.maxMessage))
        }
    }
}

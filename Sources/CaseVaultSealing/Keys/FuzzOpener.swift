package import CaseVaultCore
internal import CaseVaultCrypto

/// The fuzz targets' way into what only the sealing layer opens: a key slot and a sealed blob, and an
/// attachment file. It is made from a root key's bytes, which only the fuzz targets hold (their fixed test
/// key): no other target ever sees a root key's bytes, so none can open a record through it. LayeringTests
/// fails on any use of it outside the fuzz targets.
package final class FuzzOpener: Sendable {
    private let barrier: Barrier

    package init(rootKeyBytes: [UInt8], dataKeyBytes: [UInt8]) throws(CaseVaultError) {
        do {
            self.barrier = try Barrier(rootKey: RootKey(secret: try SecureBytes(copying: rootKeyBytes)))
            self.fallback = DataKey(secret: try SecureBytes(copying: dataKeyBytes))
        } catch {
            throw CaseVaultError(.keyUnavailable, "the fuzz targets' test keys could not be made", cause: error)
        }
    }

    /// The key a blob is opened with when its slot does not open.
    private let fallback: DataKey

    /// `blob` opened for `record` with the key in `slot` (number `slotNumber`), or with the test data key
    /// when the slot does not open, so that the blob's checks are fuzzed whatever the slot holds.
    package func sealedRecord(slot: [UInt8], slotNumber: Int64, blob: [UInt8], record: RecordMetadata) -> [UInt8]? {
        let dataKey =
            (try? self.barrier.unwrap(slotBytes: slot, recordID: record.id, slot: slotNumber)) ?? self.fallback
        return try? self.barrier.open(blob: blob, dataKey: dataKey, record: record)
    }

    /// `file` opened as `record`'s attachment under the test data key.
    package func attachment(_ file: any AttachmentSource, record: RecordMetadata) throws(CaseVaultError)
        -> AttachmentDownload
    {
        try AttachmentDownload(record: record, dataKey: self.fallback, file: file)
    }
}

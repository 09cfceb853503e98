package import CaseVaultCore

/// The fuzz targets' ways into what only the sealing layer opens: a key slot and a sealed blob, and an
/// attachment file, under the fixed test keys of `CaseVaultFuzz`. Nothing else calls them (the storage is
/// held to that by LayeringTests).
package enum FuzzOpening {
    /// `blob` opened for `record` with the key in `slot` (number `slotNumber`), or with `fallback` when
    /// the slot does not open, so that the blob's checks are fuzzed whatever the slot holds.
    package static func sealedRecord(
        _ services: SealingServices, slot: [UInt8], slotNumber: Int64, blob: [UInt8], record: RecordMetadata,
        fallback: DataKey
    ) -> [UInt8]? {
        let barrier = services.barrier
        let dataKey = (try? barrier.unwrap(slotBytes: slot, recordID: record.id, slot: slotNumber)) ?? fallback
        return try? barrier.open(blob: blob, dataKey: dataKey, record: record)
    }

    /// `file` opened as `record`'s attachment under `dataKey`.
    package static func attachment(_ file: any AttachmentSource, record: RecordMetadata, dataKey: DataKey)
        throws(CaseVaultError) -> AttachmentDownload
    {
        try AttachmentDownload(record: record, dataKey: dataKey, file: file)
    }
}

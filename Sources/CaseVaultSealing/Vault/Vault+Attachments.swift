package import CaseVaultCore

extension Vault {
    /// Starts the upload of `id`'s attachment. `attachment-exists` if it has one; `not-found`/`shredded`
    /// for an unknown or shredded record.
    package func beginAttachment(_ id: RecordID, mediaType: String, maxBytes: Int64) throws(CaseVaultError)
        -> AttachmentUpload
    {
        let (key, file) = try self.storage.beginAttachment(id)
        let sealer = try AttachmentSealer(
            record: key.metadata, dataKey: try self.barrier.dataKey(key), mediaType: mediaType)
        return try AttachmentUpload(file: file, sealer: sealer, maxBytes: maxBytes)
    }

    /// Seals the upload's last chunk and makes the attachment visible, only while the record is live: an
    /// upload that ends after its record was shredded fails with `shredded`, and leaves nothing.
    package func finishAttachment(_ upload: AttachmentUpload) throws(CaseVaultError) {
        try upload.sealLast()
        try self.storage.finishAttachment(upload.file)
    }

    /// Opens `id`'s attachment for reading; `not-found` when it has none. A shred that scrubbed the record's
    /// key after the storage read it is reported as what it is (`shredded`), and a rotation that rewrapped
    /// it and retired its epoch in between makes the key read once more, as `open` does for content.
    package func openAttachment(_ id: RecordID) throws(CaseVaultError) -> AttachmentDownload {
        let (key, file) = try self.storage.openAttachment(id)
        let dataKey: DataKey
        do throws(CaseVaultError) {
            dataKey = try self.barrier.dataKey(key)
        } catch {
            if try self.storage.shredHasBegun(id) {
                throw CaseVaultError.recordShredded()
            }
            guard error.code == .integrityFailure else { throw error }
            let reread = try self.storage.storedRecord(id).key
            guard reread.wrapped != key.wrapped else { throw error }
            dataKey = try self.barrier.dataKey(reread)
        }
        return try AttachmentDownload(record: key.metadata, dataKey: dataKey, file: file)
    }
}

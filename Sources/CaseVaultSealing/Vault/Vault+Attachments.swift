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

    /// Opens `id`'s attachment for reading; `not-found` when it has none. A key that does not open is read
    /// again as `open` reads content again (`readsAgain`): `shredded` once a shred scrubbed it, and opened
    /// once more when a rotation rewrapped it and retired its epoch in between.
    package func openAttachment(_ id: RecordID) throws(CaseVaultError) -> AttachmentDownload {
        try self.openAttachment(id, first: true)
    }

    private func openAttachment(_ id: RecordID, first: Bool) throws(CaseVaultError) -> AttachmentDownload {
        let (key, file) = try self.storage.openAttachment(id)
        do throws(CaseVaultError) {
            return try AttachmentDownload(record: key.metadata, dataKey: try self.barrier.dataKey(key), file: file)
        } catch {
            guard try self.readsAgain(id, after: error, first: first) else { throw error }
            return try self.openAttachment(id, first: false)
        }
    }
}

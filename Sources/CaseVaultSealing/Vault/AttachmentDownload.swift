package import CaseVaultCore

/// An attachment being read, chunk by chunk, opened here from the storage's sealed file.
package final class AttachmentDownload: @unchecked Sendable {
    private let file: any AttachmentSource
    private let opener: AttachmentOpener
    private var offset: Int64
    /// The media type given when it was uploaded.
    package var mediaType: String { self.opener.mediaType }
    /// The attachment's size in bytes.
    package let size: Int64

    /// Opens `file`, the attachment of `record` under `dataKey`; `integrity-failure` for a file whose head
    /// does not authenticate.
    init(record: RecordMetadata, dataKey: DataKey, file: any AttachmentSource) throws(CaseVaultError) {
        self.file = file
        guard let size = AttachmentFormat.plaintextSize(fileSize: file.size) else {
            throw AttachmentFormat.integrityFailure()
        }
        let head = try file.read(count: AttachmentFormat.headBytes, at: 0)
        self.opener = try AttachmentOpener(record: record, dataKey: dataKey, head: head)
        self.size = size
        self.offset = Int64(AttachmentFormat.headBytes)
    }

    /// The next plaintext chunk; `nil` after the last. Throws `integrity-failure` for a chunk that does not
    /// authenticate and for a file that ends before its final chunk.
    package func next() throws(CaseVaultError) -> [UInt8]? {
        if self.opener.isFinished {
            guard self.offset == self.file.size else { throw AttachmentFormat.integrityFailure() }
            return nil
        }
        let count = Int(min(Int64(AttachmentFormat.sealedChunkBytes), self.file.size - self.offset))
        guard count >= AttachmentFormat.chunkOverhead else { throw AttachmentFormat.integrityFailure() }
        let sealed = try self.file.read(count: count, at: self.offset)
        self.offset += Int64(sealed.count)
        return try self.opener.open(sealed)
    }
}

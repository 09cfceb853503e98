internal import CaseVaultCore
internal import CaseVaultFiles
internal import CaseVaultSealing

#if canImport(Glibc)
internal import Glibc
#endif

/// Attachments' sealed files (a signed PDF scan), one per record. The sealing layer seals and opens them
/// chunk by chunk (`AttachmentUpload`, `AttachmentDownload`); here they are written, linked and read. An
/// upload is written to `<record id>.partial`, flushed, then linked into place (never replacing an
/// existing one).
///
/// A shred wins over an upload: it removes the partial file with the attachment, the upload notices at its
/// next chunk (the file it writes has no name left) and fails, and the link into place is made as the
/// store's writer, only while the record is live.
final class AttachmentFile: AttachmentSink {
    let recordID: RecordID
    private let file: PosixFile
    private let partialPath: String
    private let finalPath: String
    private let directory: String
    private var offset: Int64 = 0
    private var done = false

    init(recordID: RecordID, directory: String) throws(CaseVaultError) {
        self.recordID = recordID
        self.directory = directory
        self.finalPath = directory + "/" + recordID.rawValue
        self.partialPath = self.finalPath + ".partial"
        if DataDirectory.exists(self.finalPath) {
            throw Self.exists()
        }
        do {
            self.file = try PosixFile(path: self.partialPath, flags: O_WRONLY | O_CREAT | O_EXCL)
        } catch {
            // Another upload of the same record is under way.
            throw Self.exists()
        }
    }

    static func exists() -> CaseVaultError {
        CaseVaultError(
            .attachmentExists, "this record already has an attachment (or one is being uploaded); records are immutable"
        )
    }

    func append(_ sealed: [UInt8]) throws(CaseVaultError) {
        // A shred of the record removed the file: nothing more of it is written.
        guard try self.file.status().st_nlink > 0 else {
            throw CaseVaultError.recordShredded()
        }
        try self.file.write(sealed, at: self.offset)
        self.offset += Int64(sealed.count)
    }

    func flush() throws(CaseVaultError) {
        try self.file.flushData()
    }

    /// Links the attachment into place. The caller holds the writer role and has seen the record live.
    func link() throws(CaseVaultError) {
        guard Glibc.link(self.partialPath, self.finalPath) == 0 else {
            let code = errno
            unlink(self.partialPath)
            self.done = true
            if code == EEXIST { throw Self.exists() }
            throw POSIXFailure.error("link", path: self.finalPath, code: code)
        }
        unlink(self.partialPath)
        self.done = true
        try DataDirectory.flushDirectory(self.directory)
    }

    deinit {
        if !self.done {
            unlink(self.partialPath)
        }
    }
}

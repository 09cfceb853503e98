public import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
package import CaseVaultSealing
internal import Logging

#if canImport(Glibc)
internal import Glibc
#endif

/// Attachments (a signed PDF scan): one per record, streamed in and out in chunks, so memory stays at one
/// chunk whatever the size. The sealing layer seals and opens them (`AttachmentSealer`, `AttachmentOpener`,
/// whose `AttachmentFormat` says what the file holds); here they are written, linked and read. An upload
/// is written to `<record id>.partial`, flushed, then linked into place (never replacing an existing one).
///
/// A shred wins over an upload: it removes the partial file with the attachment, the upload notices at its
/// next chunk (the file it writes has no name left) and fails, and the link into place is made as the
/// store's writer, only while the record is live.
/// An attachment being uploaded. Used by one task at a time; `finish()` makes it visible, anything else
/// (an error, a dropped connection) leaves nothing behind.
public final class AttachmentUpload: @unchecked Sendable {
    let recordID: RecordID
    private let file: PosixFile
    private let partialPath: String
    private let finalPath: String
    private let directory: String
    private let sealer: AttachmentSealer
    private let maxBytes: Int64
    private var pending: [UInt8] = []
    private var offset: Int64
    public private(set) var size: Int64 = 0
    private var done = false

    init(record: RecordMetadata, dataKey: DataKey, mediaType: String, directory: String, maxBytes: Int64)
        throws(CaseVaultError)
    {
        self.recordID = record.id
        self.directory = directory
        self.finalPath = directory + "/" + record.id.rawValue
        self.partialPath = self.finalPath + ".partial"
        self.maxBytes = maxBytes
        if DataDirectory.exists(self.finalPath) {
            throw Self.exists()
        }
        do {
            self.file = try PosixFile(path: self.partialPath, flags: O_WRONLY | O_CREAT | O_EXCL)
        } catch {
            // Another upload of the same record is under way.
            throw Self.exists()
        }
        do {
            self.sealer = try AttachmentSealer(record: record, dataKey: dataKey, mediaType: mediaType)
        } catch {
            unlink(self.partialPath)
            throw error
        }
        let head = self.sealer.head
        try self.file.write(head, at: 0)
        self.offset = Int64(head.count)
        self.pending.reserveCapacity(AttachmentFormat.chunkBytes)
    }

    static func exists() -> CaseVaultError {
        CaseVaultError(
            .attachmentExists, "this record already has an attachment (or one is being uploaded); records are immutable"
        )
    }

    /// Seals and writes every whole chunk of `bytes`; keeps the rest for the next call.
    public func append(_ bytes: UnsafeRawBufferPointer) throws(CaseVaultError) {
        self.size += Int64(bytes.count)
        guard self.size <= self.maxBytes else {
            throw CaseVaultError(
                .contentTooLarge, "the attachment is larger than the configured limit of \(self.maxBytes) bytes")
        }
        var rest = bytes[...]
        while !rest.isEmpty {
            let take = min(rest.count, AttachmentFormat.chunkBytes - self.pending.count)
            self.pending.append(contentsOf: rest.prefix(take))
            rest = rest.dropFirst(take)
            if self.pending.count == AttachmentFormat.chunkBytes {
                try self.writePending(isFinal: false)
            }
        }
    }

    private func writePending(isFinal: Bool) throws(CaseVaultError) {
        // A shred of the record removed the file: nothing more of it is written.
        guard try self.file.status().st_nlink > 0 else {
            throw RecordStore.shreddedError()
        }
        let sealed = self.sealer.seal(self.pending, isFinal: isFinal)
        Memory.zero(&self.pending)
        self.pending.removeAll(keepingCapacity: true)
        try self.file.write(sealed, at: self.offset)
        self.offset += Int64(sealed.count)
    }

    /// Seals the last chunk and flushes it: the attachment is whole on disk, not yet in place.
    func sealLast() throws(CaseVaultError) {
        try self.writePending(isFinal: true)
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
        Memory.zero(&self.pending)
    }
}

/// An attachment being read, chunk by chunk.
public final class AttachmentDownload: @unchecked Sendable {
    private let file: PosixFile
    private let opener: AttachmentOpener
    private let fileSize: Int64
    private var offset: Int64
    /// The media type given when it was uploaded.
    public var mediaType: String { self.opener.mediaType }
    /// The attachment's size in bytes.
    public let size: Int64

    /// Opens the attachment file at `path` of `record` under its data key; `integrity-failure` for a file
    /// whose head does not authenticate. (Package-visible for the fuzz targets.)
    package init(record: RecordMetadata, dataKey: DataKey, path: String) throws(CaseVaultError) {
        do {
            self.file = try PosixFile(path: path, flags: O_RDONLY)
        } catch {
            throw CaseVaultError(.notFound, "this record has no attachment")
        }
        self.fileSize = try self.file.size()
        let head = try self.file.read(count: AttachmentFormat.headBytes, at: 0)
        guard let size = AttachmentFormat.plaintextSize(fileSize: self.fileSize) else {
            throw AttachmentFormat.integrityFailure()
        }
        self.opener = try AttachmentOpener(record: record, dataKey: dataKey, head: head)
        self.size = size
        self.offset = Int64(AttachmentFormat.headBytes)
    }

    /// The next plaintext chunk; `nil` after the last. Throws `integrity-failure` for a chunk that does not
    /// authenticate and for a file that ends before its final chunk.
    public func next() throws(CaseVaultError) -> [UInt8]? {
        if self.opener.isFinished {
            guard self.offset == self.fileSize else { throw AttachmentFormat.integrityFailure() }
            return nil
        }
        let count = Int(min(Int64(AttachmentFormat.sealedChunkBytes), self.fileSize - self.offset))
        guard count >= AttachmentFormat.chunkOverhead else { throw AttachmentFormat.integrityFailure() }
        let sealed = try self.file.read(count: count, at: self.offset)
        self.offset += Int64(sealed.count)
        return try self.opener.open(sealed)
    }
}

extension RecordStore {
    /// Starts the upload of `id`'s attachment. `attachment-exists` if it has one; `not-found`/`shredded`
    /// for an unknown or shredded record.
    public func beginAttachment(_ id: RecordID, mediaType: String, maxBytes: Int64) throws(CaseVaultError)
        -> AttachmentUpload
    {
        let row = try self.liveRow(id)
        let dataKey = try self.barrier.unwrap(slotBytes: try self.slots.read(row.slot), recordID: id, slot: row.slot)
        let upload = try AttachmentUpload(
            record: row.metadata, dataKey: dataKey, mediaType: mediaType, directory: self.directory.attachmentsPath,
            maxBytes: maxBytes
        )
        // A shred marked since the first look may have come too early to find the partial file: then the
        // upload is dropped (and its file with it) here.
        _ = try self.liveRow(id)
        return upload
    }

    /// Seals the upload's last chunk and links the attachment into place, as the writer and only while the
    /// record is live: an upload that ends after its record was shredded fails with `shredded`, and its
    /// partial file is removed.
    public func finishAttachment(_ upload: AttachmentUpload) throws(CaseVaultError) {
        try upload.sealLast()
        try self.asWriter { () throws(CaseVaultError) in
            _ = try self.liveRow(upload.recordID)
            try upload.link()
        }
    }

    /// Opens `id`'s attachment for reading; `not-found` when it has none.
    public func openAttachment(_ id: RecordID) throws(CaseVaultError) -> AttachmentDownload {
        let row = try self.liveRow(id)
        let dataKey = try self.barrier.unwrap(slotBytes: try self.slots.read(row.slot), recordID: id, slot: row.slot)
        return try AttachmentDownload(
            record: row.metadata, dataKey: dataKey, path: self.directory.attachmentsPath + "/" + id.rawValue)
    }

    /// Removes the attachments of shredded records (their keys are already gone with the key slots), and
    /// the partial files of uploads still under way, which then fail at their next chunk.
    func removeAttachments(_ ids: [RecordID]) throws(CaseVaultError) {
        var removed = false
        for id in ids {
            for path in [
                self.directory.attachmentsPath + "/" + id.rawValue,
                self.directory.attachmentsPath + "/" + id.rawValue + ".partial",
            ] {
                if unlink(path) == 0 {
                    removed = true
                } else if errno != ENOENT {
                    throw POSIXFailure.error("unlink", path: path)
                }
            }
        }
        if removed {
            try DataDirectory.flushDirectory(self.directory.attachmentsPath)
        }
    }

    /// After a crash: removes unfinished uploads, and attachments whose record is gone.
    func recoverAttachments() throws(CaseVaultError) {
        guard let handle = opendir(self.directory.attachmentsPath) else { return }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != ".", name != ".." { names.append(name) }
        }
        closedir(handle)
        var orphans: [String] = []
        for name in names {
            if name.hasSuffix(".partial") {
                orphans.append(name)
            } else if let id = try? RecordID(name) {
                let live = try self.index.read { db in try Index.row(db, id: id)?.state == .live }
                if !live { orphans.append(name) }
            } else {
                orphans.append(name)
            }
        }
        for name in orphans {
            unlink(self.directory.attachmentsPath + "/" + name)
        }
        if !orphans.isEmpty {
            try DataDirectory.flushDirectory(self.directory.attachmentsPath)
            self.logger.notice(
                "removed unfinished or orphaned attachments", metadata: ["files.count": "\(orphans.count)"])
        }
    }
}

package import CaseVaultCore
internal import CaseVaultFiles
package import CaseVaultSealing
internal import Logging

#if canImport(Glibc)
internal import Glibc
#endif

extension RecordStore {
    /// Starts the sealed file of `id`'s attachment. `attachment-exists` if it has one; `not-found`/`shredded`
    /// for an unknown or shredded record.
    package func beginAttachment(_ id: RecordID) throws(CaseVaultError) -> (key: StoredKey, file: any AttachmentSink) {
        let row = try self.liveRow(id)
        let key = StoredKey(metadata: row.metadata, slot: row.slot, wrapped: try self.slots.read(row.slot))
        let file = try AttachmentFile(recordID: id, directory: self.directory.attachmentsPath)
        // A shred marked since the first look may have come too early to find the partial file: then the
        // upload is dropped (and its file with it) here. Asked of the index itself, as the gate below is.
        _ = try self.liveRow(id, fromIndex: true)
        return (key, file)
    }

    /// Links the attachment into place, as the writer and only while the record is live: an upload that
    /// ends after its record was shredded fails with `shredded`, and its partial file is removed.
    package func finishAttachment(_ file: any AttachmentSink) throws(CaseVaultError) {
        guard let file = file as? AttachmentFile else {
            throw CaseVaultError(.storageFailure, "the attachment's file was not made by this store")
        }
        try self.asWriter { () throws(CaseVaultError) in
            _ = try self.liveRow(file.recordID, fromIndex: true)
            try file.link()
        }
    }

    /// `id`'s sealed attachment; `not-found` when it has none.
    package func openAttachment(_ id: RecordID) throws(CaseVaultError) -> (key: StoredKey, file: any AttachmentSource) {
        let row = try self.liveRow(id)
        let key = StoredKey(metadata: row.metadata, slot: row.slot, wrapped: try self.slots.read(row.slot))
        return (key, try AttachmentReader(path: self.directory.attachmentsPath + "/" + id.rawValue))
    }

    /// Removes the attachments of shredded records (their keys are already gone with the key slots), and
    /// the partial files of uploads still under way, which then fail at their next chunk.
    func removeAttachments(_ ids: [RecordID]) throws(CaseVaultError) {
        // One listing rather than two unlinks per record: most records have no attachment, and a sweep
        // disposes of a hundred thousand.
        let present = Set(try self.attachmentNames())
        var removed = false
        for id in ids {
            for name in [id.rawValue, id.rawValue + ".partial"] where present.contains(name) {
                let path = self.directory.attachmentsPath + "/" + name
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
        var orphans: [String] = []
        for name in try self.attachmentNames() {
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

    /// The names in the attachments directory (none when it does not exist). One that cannot be read throws:
    /// a shred must not pass over attachments it cannot see.
    func attachmentNames() throws(CaseVaultError) -> [String] {
        guard let handle = opendir(self.directory.attachmentsPath) else {
            if errno == ENOENT { return [] }
            throw POSIXFailure.error("opendir", path: self.directory.attachmentsPath)
        }
        defer { closedir(handle) }
        var names: [String] = []
        while true {
            // readdir answers nil both at the end and on an error, which only errno tells apart.
            errno = 0
            guard let entry = readdir(handle) else { break }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != ".", name != ".." { names.append(name) }
        }
        if errno != 0 { throw POSIXFailure.error("readdir", path: self.directory.attachmentsPath) }
        return names
    }
}

#if canImport(Glibc)
internal import Glibc
#endif
internal import CaseVaultCore
internal import CaseVaultCrypto

/// Sealed content, one file per record under `blobs/XX/`. Files rather than SQLite rows so that a shred
/// can overwrite the ciphertext in place and unlink it, leaving no copy in database free pages or WAL
/// frames; a batch of new files is made durable by the same filesystem flush as its key slots.
struct SealedBlobs: Sendable {
    let directory: DataDirectory

    /// Writes a new blob (not yet flushed). Fails if the file exists.
    func create(_ id: RecordID, _ sealed: [UInt8]) throws(CaseVaultError) {
        let folder = self.directory.blobDirectory(id)
        if mkdir(folder, 0o700) != 0, errno != EEXIST {
            throw POSIXFailure.error("mkdir", path: folder)
        }
        let handle = try FileHandle(path: self.directory.blobPath(id), flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        try handle.write(sealed, at: 0)
    }

    /// The sealed bytes, or `nil` if the file does not exist.
    func read(_ id: RecordID) throws(CaseVaultError) -> [UInt8]? {
        let handle: FileHandle
        do {
            handle = try FileHandle(path: self.directory.blobPath(id), flags: O_RDONLY)
        } catch {
            if case let cause as POSIXErrorCode = error.cause, cause.code == ENOENT { return nil }
            throw error
        }
        return try handle.readAll()
    }

    /// Overwrites the blob in place with random bytes of the same length (not yet flushed).
    /// A missing file is fine: an earlier attempt got further.
    func overwrite(_ id: RecordID) throws(CaseVaultError) {
        try Self.overwrite(path: self.directory.blobPath(id))
    }

    static func overwrite(path: String) throws(CaseVaultError) {
        let handle: FileHandle
        do {
            handle = try FileHandle(path: path, flags: O_WRONLY)
        } catch {
            if case let cause as POSIXErrorCode = error.cause, cause.code == ENOENT { return }
            throw error
        }
        let length = Int(try handle.size())
        var offset = 0
        while offset < length {
            let chunk = min(64 << 10, length - offset)
            try handle.write(Random.bytes(count: chunk), at: Int64(offset))
            offset += chunk
        }
    }

    /// Removes the blob's directory entry; a missing file is fine.
    func remove(_ id: RecordID) throws(CaseVaultError) {
        let path = self.directory.blobPath(id)
        guard unlink(path) == 0 || errno == ENOENT else { throw POSIXFailure.error("unlink", path: path) }
    }
}

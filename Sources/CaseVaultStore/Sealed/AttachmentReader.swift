package import CaseVaultCore
internal import CaseVaultFiles
internal import CaseVaultSealing

#if canImport(Glibc)
internal import Glibc
#endif

/// An attachment's sealed file, opened for reading. (Package-visible for the fuzz targets.)
package final class AttachmentReader: AttachmentSource {
    private let file: PosixFile
    package let size: Int64

    /// `not-found` when there is no file at `path`.
    package init(path: String) throws(CaseVaultError) {
        do {
            self.file = try PosixFile(path: path, flags: O_RDONLY)
        } catch {
            throw CaseVaultError(.notFound, "this record has no attachment")
        }
        self.size = try self.file.size()
    }

    package func read(count: Int, at offset: Int64) throws(CaseVaultError) -> [UInt8] {
        try self.file.read(count: count, at: offset)
    }
}

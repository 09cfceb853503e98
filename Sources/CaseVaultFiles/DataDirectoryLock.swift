package import CaseVaultCore

#if canImport(Glibc)
internal import Glibc
#endif

/// One daemon per data directory: an exclusive `flock` on `daemon.lock` inside it, held for as long as this
/// value lives. A second daemon started on the same directory is refused before it opens anything there:
/// its crash recovery would otherwise scrub the key slots of puts the first one has not committed yet, and
/// its audit log would write into the first one's.
///
/// The kernel drops the lock with the process, so a daemon killed with SIGKILL leaves no stale lock.
package final class DataDirectoryLock: Sendable {
    private let file: PosixFile

    package static let fileName = "daemon.lock"

    /// Takes the lock on `directory` (which exists), or throws `storage-failure` naming what to do.
    package init(directory: String) throws(CaseVaultError) {
        let path = directory + "/" + Self.fileName
        self.file = try PosixFile(path: path, flags: O_RDWR | O_CREAT, mode: 0o600)
        try DataDirectory.checkPrivateFile(path)
        guard try self.file.lock(LOCK_EX | LOCK_NB, path: path) else {
            throw CaseVaultError(
                .storageFailure,
                "another casevaultd is serving the data directory \(directory); stop it first, or give this one a data directory of its own"
            )
        }
    }
}

package import CaseVaultCore

#if canImport(Glibc)
package import Glibc
#endif

/// A private directory and its permission rules: the directory is 0700 and every file 0600, owned by the
/// daemon's user; anything that group or others can read or write is refused. The store adds its layout
/// (`DataDirectory+Layout.swift`); the audit log uses the same rules for its own directory.
package struct DataDirectory: Sendable {
    package let path: String

    package init(path: String) {
        self.path = path
    }

    package static func makeDirectory(_ path: String, createParents: Bool) throws(CaseVaultError) {
        var info = stat()
        if lstat(path, &info) != 0 {
            guard errno == ENOENT else { throw POSIXFailure.error("stat", path: path) }
            if createParents {
                let parent = Self.parent(of: path)
                if !parent.isEmpty, parent != path, lstat(parent, &info) != 0 {
                    try Self.makeDirectory(parent, createParents: true)
                }
            }
            let made = mkdir(path, 0o700) == 0
            guard made || errno == EEXIST else { throw POSIXFailure.error("mkdir", path: path) }
            guard lstat(path, &info) == 0 else { throw POSIXFailure.error("stat", path: path) }
            // The new directory itself is flushed (on ext4 without a journal its block and inode are written
            // only by its own flush: a power cut could leave its name pointing at a directory that does not
            // read back), then its name, which is durable only once its parent is flushed: without this, a
            // power cut after a first start can take the whole data directory (or the key's) with it,
            // whatever was flushed inside (found by the power-cut test).
            // A flush that fails removes the directory again when this call made it (new and empty), so that
            // the next call makes and flushes it rather than finding it and flushing nothing (found by the
            // failing-disk test of init).
            do {
                try Self.flushDirectory(path)
                let parent = Self.parent(of: path)
                try Self.flushDirectory(parent.isEmpty ? (path.hasPrefix("/") ? "/" : ".") : parent)
            } catch {
                if made { rmdir(path) }
                throw error
            }
        }
        try Self.checkPrivate(info, path: path, isDirectory: true)
    }

    /// Refuses a file or directory that is not ours, or that group or others may read or write.
    package static func checkPrivate(_ info: stat, path: String, isDirectory: Bool) throws(CaseVaultError) {
        let kind = info.st_mode & S_IFMT
        guard kind == (isDirectory ? S_IFDIR : S_IFREG) else {
            throw CaseVaultError(
                .insecurePermissions,
                "\(path) must be a \(isDirectory ? "directory" : "regular file") (not a link or device)"
            )
        }
        guard info.st_uid == geteuid() else {
            throw CaseVaultError(
                .insecurePermissions,
                "\(path) belongs to uid \(info.st_uid), not to this daemon's uid \(geteuid()); chown it to the daemon's user"
            )
        }
        guard info.st_mode & 0o077 == 0 else {
            let wanted = isDirectory ? "0700" : "0600"
            throw CaseVaultError(
                .insecurePermissions,
                "\(path) is readable or writable by group or others (mode \(String(info.st_mode & 0o777, radix: 8))); "
                    + "run chmod \(wanted) on it"
            )
        }
    }

    package static func checkPrivateFile(_ path: String) throws(CaseVaultError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw POSIXFailure.error("stat", path: path) }
        try Self.checkPrivate(info, path: path, isDirectory: false)
    }

    package static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return String(path[..<slash])
    }

    /// Makes a directory entry change (create, rename, unlink) durable.
    package static func flushDirectory(_ path: String) throws(CaseVaultError) {
        let handle = try PosixFile(path: path, flags: O_RDONLY | O_DIRECTORY)
        try handle.flush()
    }

    /// The path of the systemd credential `name` in `directory` (`$CREDENTIALS_DIRECTORY`, where systemd puts
    /// what `LoadCredential=` or `LoadCredentialEncrypted=` names): refused with `code` when the directory is
    /// unset, the name is not a plain file name, or no such credential is there. `source` names what needs
    /// it in the errors ("the systemd-credential key source").
    package static func credentialPath(
        _ name: String, directory: String?, source: String, code: CaseVaultError.Code
    ) throws(CaseVaultError) -> String {
        guard let directory, !directory.isEmpty else {
            throw CaseVaultError(
                code,
                "\(source) needs $CREDENTIALS_DIRECTORY: start the daemon from a unit with LoadCredentialEncrypted= (or LoadCredential=)"
            )
        }
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
            throw CaseVaultError(code, "the credential name must be a plain file name")
        }
        let path = directory + "/" + name
        guard Self.exists(path) else {
            throw CaseVaultError(
                code, "no credential \(name) in $CREDENTIALS_DIRECTORY; check the unit's LoadCredentialEncrypted= line")
        }
        return path
    }

    package static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }
}

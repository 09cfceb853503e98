package import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles

#if canImport(Glibc)
internal import Glibc
#endif

/// The root key's sources: the `file` source (32 random bytes in a 0600 file outside the data directory,
/// created on first use) and the `systemd-credential` source.
package enum RootKeyFile {
    package static let byteCount = 32

    /// Reads the root key, creating the file first if it does not exist.
    package static func loadOrCreate(path: String, dataDirectory: String) throws(CaseVaultError) -> RootKey {
        guard Self.isOutside(path, dataDirectory: dataDirectory) else {
            throw CaseVaultError(
                .keyUnavailable,
                "the root key file must live outside the data directory, so that a copy of the data never carries it"
            )
        }
        if !DataDirectory.exists(path) {
            try Self.create(path: path)
        }
        try DataDirectory.checkPrivateFile(path)
        let handle = try PosixFile(path: path, flags: O_RDONLY)
        var bytes = try handle.readAll()
        defer { Memory.zero(&bytes) }
        guard bytes.count == Self.byteCount else {
            throw CaseVaultError(
                .keyUnavailable,
                "the root key file \(path) must hold exactly \(Self.byteCount) bytes; restore it from your key backup"
            )
        }
        do {
            return RootKey(secret: try SecureBytes(copying: bytes))
        } catch {
            throw CaseVaultError(.keyUnavailable, "secure memory for the root key could not be allocated", cause: error)
        }
    }

    /// Reads the root key from a systemd credential: `directory/name`, exactly 32 bytes, readable by no one
    /// else. systemd puts it there (LoadCredential= or LoadCredentialEncrypted=); it is never created here.
    package static func loadCredential(name: String, directory: String?) throws(CaseVaultError) -> RootKey {
        let path = try DataDirectory.credentialPath(
            name, directory: directory, source: "the systemd-credential key source", code: .keyUnavailable)
        try DataDirectory.checkPrivateFile(path)
        var bytes = try PosixFile(path: path, flags: O_RDONLY).readAll()
        defer { Memory.zero(&bytes) }
        guard bytes.count == Self.byteCount else {
            throw CaseVaultError(.keyUnavailable, "the credential \(name) must hold exactly \(Self.byteCount) bytes")
        }
        do {
            return RootKey(secret: try SecureBytes(copying: bytes))
        } catch {
            throw CaseVaultError(.keyUnavailable, "secure memory for the root key could not be allocated", cause: error)
        }
    }

    /// Writes a new key through a temporary file, flushed and renamed into place, so a crash never
    /// leaves a short key file; and none whose name was not made durable, which would serve until a power
    /// cut took it, with the vault bound to it by then.
    private static func create(path: String) throws(CaseVaultError) {
        var key = Random.bytes(count: Self.byteCount)
        defer { Memory.zero(&key) }
        try Self.writeNew(path: path, bytes: key, removeIfNotDurable: true)
    }

    /// Writes `bytes` (0600) to `path` through a temporary file, flushed and renamed into place. With
    /// `removeIfNotDurable`, for a new file that nothing may find unless it is durable (a key), a failed flush
    /// of its name after the rename removes it again (`remove`); else the file stays, its name perhaps not
    /// durable.
    package static func writeNew(path: String, bytes: [UInt8], removeIfNotDurable: Bool = false)
        throws(CaseVaultError)
    {
        let directory = DataDirectory.parent(of: path)
        if !directory.isEmpty {
            try DataDirectory.makeDirectory(directory, createParents: true)
        }
        let temporary = path + ".new"
        unlink(temporary)
        do {
            let handle = try PosixFile(path: temporary, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
            try handle.write(bytes, at: 0)
            try handle.flush()
        }
        guard rename(temporary, path) == 0 else { throw POSIXFailure.error("rename", path: path) }
        do {
            try DataDirectory.flushDirectory(directory.isEmpty ? "." : directory)
        } catch {
            if removeIfNotDurable { Self.remove(path: path) }
            throw error
        }
    }

    /// Removes the file `writeNew` renamed into place at `path`, the removal flushed where the disk allows
    /// it: for a write whose purpose failed after it (a wrapped root key whose init failed, which a power cut
    /// must not bring back), or whose name's flush failed.
    package static func remove(path: String) {
        unlink(path)
        let directory = DataDirectory.parent(of: path)
        try? DataDirectory.flushDirectory(directory.isEmpty ? "." : directory)
    }

    /// Whether the file at `path` lies outside `dataDirectory` (both resolved through symbolic links).
    package static func isOutside(_ path: String, dataDirectory: String) -> Bool {
        let resolvedData = Self.resolved(dataDirectory)
        let resolvedDirectory = Self.resolved(DataDirectory.parent(of: path))
        return resolvedDirectory != resolvedData && !resolvedDirectory.hasPrefix(resolvedData + "/")
    }

    private static func resolved(_ path: String) -> String {
        guard let real = realpath(path.isEmpty ? "." : path, nil) else { return path }
        defer { free(real) }
        return String(cString: real)
    }
}

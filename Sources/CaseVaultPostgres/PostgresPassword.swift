package import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles

#if canImport(Glibc)
internal import Glibc
#endif

/// The database password, from a file only its owner may read or from a systemd credential; never from
/// the connection string or the command line, which other users of the host can see. The bytes read are
/// zeroed once copied into the `String` that PostgresNIO takes; that copy lives as long as the connection
/// settings do.
package enum PostgresPassword {
    /// The longest password file accepted.
    static let maxBytes = 1024

    /// Reads `path`: a regular file, not readable by group or others, holding the password on one line.
    package static func read(file path: String) throws(CaseVaultError) -> String {
        guard DataDirectory.exists(path) else {
            throw CaseVaultError(
                .invalidConfiguration, "the PostgreSQL password file does not exist; check password_file")
        }
        return try Self.readPrivate(path, what: "password file")
    }

    /// Reads the credential `name` from systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredentialEncrypted=`).
    package static func read(credential name: String, directory: String?) throws(CaseVaultError) -> String {
        let path = try DataDirectory.credentialPath(
            name, directory: directory, source: "a PostgreSQL password credential", code: .invalidConfiguration)
        return try Self.readPrivate(path, what: "password credential")
    }

    /// Opens `path` (never through a symbolic link, never blocking on a FIFO), checks the file it opened
    /// (a regular file of this user's, mode 0600 or stricter, at most `maxBytes`), and reads its one line.
    private static func readPrivate(_ path: String, what: String) throws(CaseVaultError) -> String {
        // Checked by name first for the clearer error on a link, then again on what was opened.
        try DataDirectory.checkPrivateFile(path)
        let handle = try PosixFile(path: path, flags: O_RDONLY | O_NONBLOCK)
        try DataDirectory.checkPrivate(try handle.status(), path: path, isDirectory: false)
        guard try handle.size() <= Int64(Self.maxBytes) else {
            throw CaseVaultError(.invalidConfiguration, "the PostgreSQL \(what) is longer than \(Self.maxBytes) bytes")
        }
        var bytes = try handle.read(count: Self.maxBytes + 1, at: 0)
        defer { Memory.zero(&bytes) }
        return try Self.decode(bytes, what: what)
    }

    /// The file's one line, its final newline dropped: UTF-8, not empty, no other line break or control.
    /// The caller zeroes `bytes`.
    private static func decode(_ bytes: [UInt8], what: String) throws(CaseVaultError) -> String {
        guard bytes.count <= Self.maxBytes else {
            throw CaseVaultError(.invalidConfiguration, "the PostgreSQL \(what) is longer than \(Self.maxBytes) bytes")
        }
        var end = bytes.count
        if end > 0, bytes[end - 1] == UInt8(ascii: "\n") { end -= 1 }
        if end > 0, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        guard end > 0, bytes[..<end].allSatisfy({ $0 >= 0x20 && $0 != 0x7f }),
            let password = String(validating: bytes[..<end], as: UTF8.self)
        else {
            throw CaseVaultError(
                .invalidConfiguration, "the PostgreSQL \(what) must hold the password on one line, in UTF-8")
        }
        return password
    }
}

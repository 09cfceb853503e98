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
        try DataDirectory.checkPrivateFile(path)
        return try Self.decode(try PosixFile(path: path, flags: O_RDONLY).readAll(), what: "password file")
    }

    /// Reads the credential `name` from systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredentialEncrypted=`).
    package static func read(credential name: String, directory: String?) throws(CaseVaultError) -> String {
        guard let directory, !directory.isEmpty else {
            throw CaseVaultError(
                .invalidConfiguration,
                "a PostgreSQL password credential needs $CREDENTIALS_DIRECTORY: start the daemon from a unit with LoadCredentialEncrypted="
            )
        }
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
            throw CaseVaultError(
                .invalidConfiguration, "the PostgreSQL password credential's name must be a plain file name")
        }
        let path = directory + "/" + name
        guard DataDirectory.exists(path) else {
            throw CaseVaultError(
                .invalidConfiguration, "no PostgreSQL password credential of that name in $CREDENTIALS_DIRECTORY")
        }
        try DataDirectory.checkPrivateFile(path)
        return try Self.decode(try PosixFile(path: path, flags: O_RDONLY).readAll(), what: "password credential")
    }

    /// The file's one line, its final newline dropped: UTF-8, not empty, no other line break or control.
    private static func decode(_ read: [UInt8], what: String) throws(CaseVaultError) -> String {
        var bytes = read
        defer { Memory.zero(&bytes) }
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

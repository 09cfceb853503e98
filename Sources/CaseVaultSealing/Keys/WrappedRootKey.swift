public import CaseVaultCore
public import CaseVaultCrypto
internal import CaseVaultFiles

#if canImport(Glibc)
internal import Glibc
#endif

/// The `passphrase` key source (docs/SECURITY.md): the root key sealed with XChaCha20-Poly1305 under a key that
/// Argon2id derives from the passphrase. The file holds no secret in clear:
///
///     "CVWK1\n" | operations (8, big-endian) | memory bytes (8) | salt (16) | nonce ‖ sealed key ‖ tag
///
/// and its header is the associated data, so changing the cost or the salt fails as a wrong passphrase
/// does. The cost is chosen when the file is made and read back from it.
public enum WrappedRootKey {
    static let magic = Array("CVWK1\n".utf8)
    static let headerSize = 6 + 8 + 8 + PasswordHash.saltByteCount
    static let fileSize = headerSize + AEAD.overhead + RootKeyFile.byteCount

    /// Whether a wrapped root key exists at `path` (the vault has been initialised).
    public static func exists(path: String) -> Bool {
        DataDirectory.exists(path)
    }

    /// Makes a new random root key, writes it wrapped under `passphrase` at `path` (never over an existing
    /// file) and returns it.
    public static func create(path: String, passphrase: some CryptoBytes, limits: PasswordHash.Limits)
        throws(CaseVaultError) -> RootKey
    {
        guard !Self.exists(path: path) else {
            throw CaseVaultError(
                .alreadyInitialised, "the vault is already initialised: a wrapped root key exists; unseal it instead")
        }
        guard limits.meetsFloor else {
            throw CaseVaultError(
                .invalidConfiguration,
                "Argon2id's cost is below the floor (\(PasswordHash.Limits.floor.operations) passes, "
                    + "\(PasswordHash.Limits.floor.memoryBytes >> 20) MiB); raise keys.argon2_operations or keys.argon2_memory_mib"
            )
        }
        let root = RootKey.random()
        let salt = Random.bytes(count: PasswordHash.saltByteCount)
        let header = Self.magic + limits.operations.bigEndianBytes + UInt64(limits.memoryBytes).bigEndianBytes + salt
        let wrapping = try Self.derive(passphrase: passphrase, salt: salt, limits: limits)
        let sealed = root.secret.withUnsafeBytes { key in AEAD.seal(key, key: wrapping, associatedData: header) }
        try RootKeyFile.writeNew(path: path, bytes: header + sealed, removeIfNotDurable: true)
        return root
    }

    /// The root key in `path`, opened with `passphrase`. A wrong passphrase (or a changed file) throws
    /// `unseal-refused`, saying nothing more.
    public static func open(path: String, passphrase: some CryptoBytes) throws(CaseVaultError) -> RootKey {
        try DataDirectory.checkPrivateFile(path)
        let bytes = try PosixFile(path: path, flags: O_RDONLY).readAll()
        guard bytes.count == Self.fileSize, Array(bytes[0..<6]) == Self.magic else {
            throw CaseVaultError(
                .keyUnavailable,
                "the wrapped root key file \(path) is not one CaseVault wrote; restore it from your backup")
        }
        let header = Array(bytes[0..<Self.headerSize])
        let limits = PasswordHash.Limits(
            operations: UInt64(bigEndianBytes: header[6..<14]),
            memoryBytes: Int(clamping: UInt64(bigEndianBytes: header[14..<22]))
        )
        let wrapping = try Self.derive(
            passphrase: passphrase, salt: Array(header[22..<Self.headerSize]), limits: limits)
        do {
            // Opened straight into its own secure memory (the file's size was checked to be exact above).
            return RootKey(
                secret: try SecureBytes(count: RootKeyFile.byteCount) { secret in
                    try AEAD.open(bytes[Self.headerSize...], key: wrapping, associatedData: header, into: secret)
                })
        } catch CryptoError.secureAllocationFailed {
            throw CaseVaultError(.keyUnavailable, "secure memory for the root key could not be allocated")
        } catch {
            throw Self.refused()
        }
    }

    static func refused() -> CaseVaultError {
        CaseVaultError(.unsealRefused, "the passphrase does not open the root key")
    }

    private static func derive(passphrase: some CryptoBytes, salt: [UInt8], limits: PasswordHash.Limits)
        throws(CaseVaultError) -> SecureBytes
    {
        do {
            return try PasswordHash.deriveKey(passphrase: passphrase, salt: salt, limits: limits)
        } catch {
            throw CaseVaultError(
                .keyUnavailable, "Argon2id could not run with the configured cost (out of memory?)", cause: error)
        }
    }
}

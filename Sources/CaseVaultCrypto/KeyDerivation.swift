internal import CSodium

/// Subkeys from a master key with libsodium's crypto_kdf (BLAKE2b): one master key, many independent
/// keys, each named by an 8-character context and a 64-bit id.
public enum KeyDerivation {
    public static let contextByteCount = 8
    public static let masterKeyByteCount = 32

    /// Derives a `length`-byte subkey (16 to 64 bytes) for `context` (exactly 8 ASCII characters) and `id`.
    public static func deriveKey(
        from master: SecureBytes,
        context: StaticString,
        id: UInt64,
        length: Int = 32
    ) throws(CryptoError) -> SecureBytes {
        Sodium.ready()
        guard master.count == Self.masterKeyByteCount else {
            throw .invalidLength(what: "KDF master key", expected: Self.masterKeyByteCount, actual: master.count)
        }
        guard context.utf8CodeUnitCount == Self.contextByteCount else {
            throw .invalidLength(
                what: "KDF context", expected: Self.contextByteCount, actual: context.utf8CodeUnitCount)
        }
        do {
            return try SecureBytes(count: length) { subkey in
                master.withUnsafeBytes { masterBytes in
                    context.withUTF8Buffer { contextBytes in
                        contextBytes.withMemoryRebound(to: CChar.self) { contextChars in
                            _ = crypto_kdf_derive_from_key(
                                subkey.u8, length, id,
                                contextChars.baseAddress!, masterBytes.u8
                            )
                        }
                    }
                }
            }
        } catch {
            throw .secureAllocationFailed
        }
    }
}

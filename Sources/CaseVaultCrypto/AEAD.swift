internal import CSodium

/// XChaCha20-Poly1305 (IETF) authenticated encryption with associated data.
///
/// The sealed form is `nonce ‖ ciphertext ‖ tag`, with a random 24-byte nonce: random nonces are safe
/// at this size, so callers never manage counters.
public enum AEAD {
    public static let keyByteCount = 32
    public static let nonceByteCount = 24
    public static let tagByteCount = 16
    /// Bytes a sealed message adds to its plaintext.
    public static let overhead = nonceByteCount + tagByteCount

    /// Encrypts `plaintext` under `key`, binding `associatedData`; returns `nonce ‖ ciphertext ‖ tag`.
    public static func seal(
        _ plaintext: some CryptoBytes,
        key: SecureBytes,
        associatedData: some CryptoBytes
    ) -> [UInt8] {
        let nonce = Random.bytes(count: Self.nonceByteCount)
        // The key length is checked by the caller's types; a wrong one is a programming error.
        let body = try! Self.encrypt(plaintext, key: key, nonce: nonce, associatedData: associatedData)
        return nonce + body
    }

    /// Opens `nonce ‖ ciphertext ‖ tag`; throws `authenticationFailed` on any alteration, truncation,
    /// wrong key or wrong associated data. Decrypts where `sealed` lies, into the one array it returns.
    public static func open(
        _ sealed: some CryptoBytes,
        key: SecureBytes,
        associatedData: some CryptoBytes
    ) throws(CryptoError) -> [UInt8] {
        Sodium.ready()
        try Self.check(key: key)
        let opened: [UInt8]? = sealed.withUnsafeBytes { sealed in
            guard sealed.count >= Self.overhead else { return nil }
            var opened = false
            let plaintext = [UInt8](unsafeUninitializedCapacity: sealed.count - Self.overhead) { output, count in
                opened = Self.open(
                    sealed, key: key, associatedData: associatedData, into: UnsafeMutableRawBufferPointer(output))
                count = opened ? output.count : 0
            }
            return opened ? plaintext : nil
        }
        guard let opened else { throw .authenticationFailed }
        return opened
    }

    /// `open(_:key:associatedData:)` into `plaintext`, which must be exactly the plaintext's size: for
    /// secrets (data keys) that must never sit in an ordinary array. Throws `authenticationFailed` as
    /// `open` does, and for a sealed message of any other size.
    public static func open(
        _ sealed: some CryptoBytes,
        key: SecureBytes,
        associatedData: some CryptoBytes,
        into plaintext: UnsafeMutableRawBufferPointer
    ) throws(CryptoError) {
        Sodium.ready()
        try Self.check(key: key)
        let opened = sealed.withUnsafeBytes { sealed in
            sealed.count == Self.overhead + plaintext.count
                && Self.open(sealed, key: key, associatedData: associatedData, into: plaintext)
        }
        guard opened else { throw .authenticationFailed }
    }

    /// Decrypts `sealed` (of `overhead` bytes more than `output`) into `output`: whether it authenticated.
    private static func open(
        _ sealed: UnsafeRawBufferPointer,
        key: SecureBytes,
        associatedData: some CryptoBytes,
        into output: UnsafeMutableRawBufferPointer
    ) -> Bool {
        let body = UnsafeRawBufferPointer(rebasing: sealed[Self.nonceByteCount...])
        return associatedData.withUnsafeBytes { ad in
            key.withUnsafeBytes { keyBytes in
                crypto_aead_xchacha20poly1305_ietf_decrypt(
                    output.u8, nil, nil,
                    body.u8, UInt64(body.count),
                    ad.u8, UInt64(ad.count),
                    sealed.u8, keyBytes.u8
                ) == 0
            }
        }
    }

    /// Encrypts with an explicit nonce; returns `ciphertext ‖ tag`. Never reuse a nonce under one key.
    public static func encrypt(
        _ plaintext: some CryptoBytes,
        key: SecureBytes,
        nonce: [UInt8],
        associatedData: some CryptoBytes
    ) throws(CryptoError) -> [UInt8] {
        Sodium.ready()
        try Self.check(key: key, nonce: nonce)
        return plaintext.withUnsafeBytes { message in
            associatedData.withUnsafeBytes { ad in
                key.withUnsafeBytes { keyBytes in
                    var output = [UInt8](repeating: 0, count: message.count + Self.tagByteCount)
                    var outputLength: UInt64 = 0
                    _ = crypto_aead_xchacha20poly1305_ietf_encrypt(
                        &output, &outputLength,
                        message.u8, UInt64(message.count),
                        ad.u8, UInt64(ad.count),
                        nil, nonce, keyBytes.u8
                    )
                    return output
                }
            }
        }
    }

    /// Decrypts `ciphertext ‖ tag` with an explicit nonce.
    public static func decrypt(
        _ ciphertext: some CryptoBytes,
        key: SecureBytes,
        nonce: [UInt8],
        associatedData: some CryptoBytes
    ) throws(CryptoError) -> [UInt8] {
        Sodium.ready()
        try Self.check(key: key, nonce: nonce)
        let result: [UInt8]? = ciphertext.withUnsafeBytes { sealed in
            guard sealed.count >= Self.tagByteCount else { return nil }
            return associatedData.withUnsafeBytes { ad -> [UInt8]? in
                key.withUnsafeBytes { keyBytes -> [UInt8]? in
                    var output = [UInt8](repeating: 0, count: sealed.count - Self.tagByteCount)
                    var outputLength: UInt64 = 0
                    let status = crypto_aead_xchacha20poly1305_ietf_decrypt(
                        &output, &outputLength, nil,
                        sealed.u8, UInt64(sealed.count),
                        ad.u8, UInt64(ad.count),
                        nonce, keyBytes.u8
                    )
                    return status == 0 ? output : nil
                }
            }
        }
        guard let result else { throw .authenticationFailed }
        return result
    }

    private static func check(key: SecureBytes) throws(CryptoError) {
        guard key.count == Self.keyByteCount else {
            throw .invalidLength(what: "AEAD key", expected: Self.keyByteCount, actual: key.count)
        }
    }

    private static func check(key: SecureBytes, nonce: [UInt8]) throws(CryptoError) {
        try Self.check(key: key)
        guard nonce.count == Self.nonceByteCount else {
            throw .invalidLength(what: "AEAD nonce", expected: Self.nonceByteCount, actual: nonce.count)
        }
    }
}

/// Failures of the crypto layer. None of them carries key material or plaintext.
public enum CryptoError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A ciphertext, stream or signature did not authenticate: it was altered, truncated,
    /// moved onto another record, or opened with the wrong key or associated data.
    case authenticationFailed
    /// An input had the wrong length (a key, a nonce, a header or a seed).
    case invalidLength(what: String, expected: Int, actual: Int)
    /// A secretstream ended without its final tag: the data was cut short.
    case streamTruncated
    /// Argon2id could not allocate the memory it was asked for.
    case passwordHashFailed
    /// libsodium refused to allocate secure memory.
    case secureAllocationFailed

    public var description: String {
        switch self {
        case .authenticationFailed:
            return "authentication failed: the data was altered, truncated or does not belong here"
        case .invalidLength(let what, let expected, let actual):
            return "\(what) must be \(expected) bytes, got \(actual)"
        case .streamTruncated:
            return "the encrypted stream ended before its final chunk"
        case .passwordHashFailed:
            return "Argon2id failed (not enough memory for the configured limits)"
        case .secureAllocationFailed:
            return "secure memory could not be allocated (sodium_malloc)"
        }
    }
}

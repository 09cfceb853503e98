internal import CSodium

/// Chunked authenticated encryption for large data (libsodium's crypto_secretstream_xchacha20poly1305):
/// memory stays at one chunk, chunks cannot be reordered, dropped or repeated, and a stream that lacks
/// its final chunk is refused.
public enum SecretStream {
    public static let headerByteCount = Int(crypto_secretstream_xchacha20poly1305_HEADERBYTES)
    /// Bytes each chunk adds to its plaintext.
    public static let chunkOverhead = Int(crypto_secretstream_xchacha20poly1305_ABYTES)

    /// The state of one direction of a stream, kept in secure memory because it holds the stream key.
    final class State {
        let pointer: UnsafeMutablePointer<crypto_secretstream_xchacha20poly1305_state>

        init() throws(CryptoError) {
            Sodium.ready()
            let size = MemoryLayout<crypto_secretstream_xchacha20poly1305_state>.size
            guard let raw = sodium_malloc(size) else { throw .secureAllocationFailed }
            sodium_memzero(raw, size)
            self.pointer = raw.bindMemory(to: crypto_secretstream_xchacha20poly1305_state.self, capacity: 1)
        }

        deinit {
            sodium_free(self.pointer)
        }
    }

    /// Encrypts a stream chunk by chunk. Call `push(_:isFinal:)` with `isFinal: true` exactly once, last.
    public final class Encryptor {
        private let state: State
        /// The stream header: store it before the first chunk.
        public let header: [UInt8]
        private var finished = false

        public init(key: SecureBytes) throws(CryptoError) {
            guard key.count == AEAD.keyByteCount else {
                throw .invalidLength(what: "secretstream key", expected: AEAD.keyByteCount, actual: key.count)
            }
            self.state = try State()
            var header = [UInt8](repeating: 0, count: SecretStream.headerByteCount)
            let state = self.state
            key.withUnsafeBytes { keyBytes in
                _ = crypto_secretstream_xchacha20poly1305_init_push(
                    state.pointer, &header, keyBytes.u8
                )
            }
            self.header = header
        }

        /// Encrypts one chunk, bound to `associatedData`; the result is `chunk.count + chunkOverhead` bytes.
        public func push(_ chunk: some CryptoBytes, associatedData: [UInt8] = [], isFinal: Bool) -> [UInt8] {
            precondition(!self.finished, "secretstream: push after the final chunk")
            self.finished = isFinal
            let tag = UInt8(
                isFinal
                    ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                    : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
            )
            let state = self.state
            return chunk.withUnsafeBytes { message in
                var output = [UInt8](repeating: 0, count: message.count + SecretStream.chunkOverhead)
                _ = crypto_secretstream_xchacha20poly1305_push(
                    state.pointer, &output, nil,
                    message.u8, UInt64(message.count), associatedData, UInt64(associatedData.count), tag
                )
                return output
            }
        }
    }

    /// Decrypts a stream chunk by chunk. After the last chunk, `finish()` refuses a stream whose final
    /// chunk never came.
    public final class Decryptor {
        private let state: State
        /// Whether the chunk carrying the final tag has been read.
        public private(set) var isFinished = false

        public init(key: SecureBytes, header: [UInt8]) throws(CryptoError) {
            guard key.count == AEAD.keyByteCount else {
                throw .invalidLength(what: "secretstream key", expected: AEAD.keyByteCount, actual: key.count)
            }
            guard header.count == SecretStream.headerByteCount else {
                throw .invalidLength(
                    what: "secretstream header", expected: SecretStream.headerByteCount, actual: header.count)
            }
            self.state = try State()
            let state = self.state
            let status = key.withUnsafeBytes { keyBytes in
                crypto_secretstream_xchacha20poly1305_init_pull(
                    state.pointer, header, keyBytes.u8
                )
            }
            guard status == 0 else { throw .authenticationFailed }
        }

        /// Decrypts the next chunk, which must have been pushed with the same `associatedData`. A chunk after
        /// the final one, or one that does not authenticate, throws.
        public func pull(_ chunk: some CryptoBytes, associatedData: [UInt8] = []) throws(CryptoError) -> [UInt8] {
            guard !self.isFinished else { throw .authenticationFailed }
            let state = self.state
            var tag: UInt8 = 0
            let output: [UInt8]? = chunk.withUnsafeBytes { sealed in
                guard sealed.count >= SecretStream.chunkOverhead else { return nil }
                var output = [UInt8](repeating: 0, count: sealed.count - SecretStream.chunkOverhead)
                let status = crypto_secretstream_xchacha20poly1305_pull(
                    state.pointer, &output, nil, &tag,
                    sealed.u8, UInt64(sealed.count), associatedData, UInt64(associatedData.count)
                )
                return status == 0 ? output : nil
            }
            guard let output else { throw .authenticationFailed }
            if tag == UInt8(crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
                self.isFinished = true
            }
            return output
        }

        /// Throws `streamTruncated` unless the final chunk has been read.
        public func finish() throws(CryptoError) {
            guard self.isFinished else { throw .streamTruncated }
        }
    }
}

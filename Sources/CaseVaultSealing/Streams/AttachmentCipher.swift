internal import CaseVaultCore
internal import CaseVaultCrypto

/// The format of an attachment file (`attachments/<record id>`): magic `CVATT001`, the 24-byte
/// secretstream header, a 256-byte sealed message holding the media type, then 64 KiB chunks, the last one
/// tagged final. The stream key is derived from the record's data key (crypto_kdf, context `cvattach`), so
/// shredding the record's key slot erases the attachment too; every chunk is bound to the record and its
/// case by associated data.
enum AttachmentFormat {
    static let magic = Array("CVATT001".utf8)
    static let chunkBytes = 64 << 10
    static let mediaTypeBytes = 256
    private static let keyContext: StaticString = "cvattach"

    static var sealedChunkBytes: Int { Self.chunkBytes + SecretStream.chunkOverhead }
    /// What a sealed chunk adds to its plaintext.
    static var chunkOverhead: Int { SecretStream.chunkOverhead }
    /// The head's size: magic, stream header and the sealed media type; the first chunk begins here.
    static var headBytes: Int {
        Self.magic.count + SecretStream.headerByteCount + Self.mediaTypeBytes + SecretStream.chunkOverhead
    }

    static func associatedData(_ record: RecordMetadata) -> [UInt8] {
        Array("casevault-attachment-v1".utf8) + Array(record.id.rawValue.utf8) + Array(record.caseID.rawValue.utf8)
    }

    /// The plaintext size of a file of `fileSize` bytes.
    static func plaintextSize(fileSize: Int64) -> Int64? {
        let rest = fileSize - Int64(Self.headBytes)
        guard rest >= Int64(SecretStream.chunkOverhead) else { return nil }
        let chunks = (rest + Int64(Self.sealedChunkBytes) - 1) / Int64(Self.sealedChunkBytes)
        return rest - chunks * Int64(SecretStream.chunkOverhead)
    }

    static func streamKey(_ dataKey: DataKey) throws -> SecureBytes {
        try KeyDerivation.deriveKey(from: dataKey.secret, context: Self.keyContext, id: 1)
    }

    static func integrityFailure() -> CaseVaultError {
        CaseVaultError(
            .integrityFailure,
            "the attachment failed authentication: it was altered, truncated or moved from another record")
    }
}

/// Seals one attachment as it is uploaded: the head first, then each chunk. Used by one task at a time.
final class AttachmentSealer {
    private let encryptor: SecretStream.Encryptor
    private let associatedData: [UInt8]
    /// What the file begins with: magic, stream header, the sealed media type.
    let head: [UInt8]

    init(record: RecordMetadata, dataKey: DataKey, mediaType: String) throws(CaseVaultError) {
        self.associatedData = AttachmentFormat.associatedData(record)
        do {
            self.encryptor = try SecretStream.Encryptor(key: try AttachmentFormat.streamKey(dataKey))
        } catch {
            throw CaseVaultError(.storageFailure, "the attachment key could not be derived", cause: error)
        }
        var media = Array(mediaType.utf8.prefix(AttachmentFormat.mediaTypeBytes))
        media += [UInt8](repeating: 0, count: AttachmentFormat.mediaTypeBytes - media.count)
        self.head =
            AttachmentFormat.magic + self.encryptor.header
            + self.encryptor.push(media, associatedData: self.associatedData, isFinal: false)
    }

    /// `chunk` sealed; the last chunk is `isFinal`.
    func seal(_ chunk: [UInt8], isFinal: Bool) -> [UInt8] {
        self.encryptor.push(chunk, associatedData: self.associatedData, isFinal: isFinal)
    }
}

/// Opens one attachment as it is read: the head first, then each chunk in order.
final class AttachmentOpener {
    private let decryptor: SecretStream.Decryptor
    private let associatedData: [UInt8]
    /// The media type given when it was uploaded.
    let mediaType: String

    /// Opens `head` (the file's first `AttachmentFormat.headBytes`); `integrity-failure` when it does not
    /// authenticate for `record`.
    init(record: RecordMetadata, dataKey: DataKey, head: [UInt8]) throws(CaseVaultError) {
        guard head.count == AttachmentFormat.headBytes,
            Array(head.prefix(AttachmentFormat.magic.count)) == AttachmentFormat.magic
        else {
            throw AttachmentFormat.integrityFailure()
        }
        self.associatedData = AttachmentFormat.associatedData(record)
        let headerEnd = AttachmentFormat.magic.count + SecretStream.headerByteCount
        do {
            self.decryptor = try SecretStream.Decryptor(
                key: try AttachmentFormat.streamKey(dataKey),
                header: Array(head[AttachmentFormat.magic.count..<headerEnd]))
            let media = try self.decryptor.pull(Array(head[headerEnd...]), associatedData: self.associatedData)
            self.mediaType = String(decoding: media.prefix { $0 != 0 }, as: UTF8.self)
        } catch {
            throw AttachmentFormat.integrityFailure()
        }
    }

    /// Whether the final chunk has been opened.
    var isFinished: Bool { self.decryptor.isFinished }

    /// The plaintext of the next chunk; `integrity-failure` when it does not authenticate.
    func open(_ sealed: [UInt8]) throws(CaseVaultError) -> [UInt8] {
        do {
            return try self.decryptor.pull(sealed, associatedData: self.associatedData)
        } catch {
            throw AttachmentFormat.integrityFailure()
        }
    }
}

internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultSealing

/// A record as a segment keeps it since index v11: the log of record. A frame carries what the index row
/// and the key slot say of the record beside its sealed blob, so that a batch of puts is durable with one
/// device flush (the segment's) and the index row and the slot, written without a flush of their own, can be
/// rebuilt from the frames after a power cut (`RecordStore.replayUnsettledFrames`).
///
/// Layout (integers little-endian):
///
///     checksum      16  BLAKE2b-128 of the head's bytes after it and of the blob's own BLAKE2b-128
///     magic          4  "CVF1"
///     frame length   4  every byte of the frame
///     head length    4  the bytes before the blob
///     flags          1  bit 0: replayable (the put had no effect beyond its own row)
///     record id     16
///     case id       16
///     type           1 + n  length, then its name in UTF-8
///     created at     8
///     author         2 + n  length (0xFFFF: none), then UTF-8
///     supersedes     1 (+ 16)  0: none; 1: a record id follows
///     participant    2 + n  length (0xFFFF: none), then the sealed bytes
///     slot           8
///     wrapped key    `KeySlot.size`  what the slot holds; the blob follows at once
///     blob           frame length - head length
///
/// The checksum tells a whole frame from a torn or never-written one; it is no defence against a writer,
/// who could recompute it: the blob and the wrapped key carry their own authentication, bound to the
/// record's id, case, type and slot. A shred overwrites the whole frame, a rotation the wrapped key in it.
struct SegmentFrame: Equatable {
    static let checksumSize = 16
    static let magic: [UInt8] = Array("CVF1".utf8)
    /// The checksum, the magic and the two lengths: what a reader checks before it reads the rest.
    static let prefixSize = checksumSize + 4 + 4 + 4
    private static let absent: UInt16 = 0xFFFF

    var metadata: RecordMetadata
    var participant: [UInt8]?
    var slot: Int64
    var wrappedKey: [UInt8]
    /// Whether recovery may add the record from this frame alone: a put with filing effects (a new case, a
    /// state change, marks) is committed with a flushed index transaction instead, and its frame is never
    /// replayed.
    var replayable: Bool

    /// What the checksum covers of a blob: its own BLAKE2b-128, which a put computes on the caller's thread
    /// (`blobDigest`), so that the batch's leader hashes only the heads.
    static func blobDigest(_ blob: some CryptoBytes) -> [UInt8] {
        Hash.blake2b(blob, length: Self.checksumSize)
    }

    /// The checksum of a frame whose head is `bytes[..<headLength]` and whose blob has `blobDigest`.
    private static func checksum(_ bytes: [UInt8], headLength: Int, blobDigest: [UInt8]) -> [UInt8] {
        Hash.blake2b(bytes[Self.checksumSize..<headLength] + blobDigest, length: Self.checksumSize)
    }

    /// The frame's bytes, and where in them the blob begins; `blobDigest` is `blobDigest(blob)`.
    func encode(blob: [UInt8], blobDigest: [UInt8]) -> (bytes: [UInt8], headLength: Int) {
        precondition(self.wrappedKey.count == KeySlot.size, "a frame carries a whole key slot")
        let type = Array(self.metadata.type.rawValue.utf8)
        let author = self.metadata.author.map { Array($0.utf8) }
        precondition(type.count <= Int(UInt8.max), "a record type's name fits a byte")
        precondition((author?.count ?? 0) < Int(Self.absent), "an author's name fits two bytes")
        precondition((self.participant?.count ?? 0) < Int(Self.absent), "a sealed participant fits two bytes")
        var bytes = [UInt8](repeating: 0, count: Self.checksumSize)
        bytes.reserveCapacity(Self.prefixSize + 128 + type.count + (author?.count ?? 0) + KeySlot.size + blob.count)
        bytes += Self.magic
        bytes += [UInt8](repeating: 0, count: 8)  // the two lengths, set below
        bytes.append(self.replayable ? 1 : 0)
        self.metadata.id.appendBytes(to: &bytes)
        self.metadata.caseID.appendBytes(to: &bytes)
        bytes.append(UInt8(type.count))
        bytes += type
        bytes += self.metadata.createdAt.littleEndianBytes
        Self.appendOptional(author, to: &bytes)
        if let supersedes = self.metadata.supersedes {
            bytes.append(1)
            supersedes.appendBytes(to: &bytes)
        } else {
            bytes.append(0)
        }
        Self.appendOptional(self.participant, to: &bytes)
        bytes += self.slot.littleEndianBytes
        bytes += self.wrappedKey
        let headLength = bytes.count
        bytes += blob
        Self.store(UInt32(bytes.count), in: &bytes, at: Self.checksumSize + 4)
        Self.store(UInt32(headLength), in: &bytes, at: Self.checksumSize + 8)
        bytes.replaceSubrange(
            0..<Self.checksumSize, with: Self.checksum(bytes, headLength: headLength, blobDigest: blobDigest))
        return (bytes, headLength)
    }

    /// The frame length and head length a prefix announces, or nil when `prefix` begins no frame (zeros,
    /// random bytes, a blob written before v11) or announces lengths no put writes.
    static func lengths(prefix: [UInt8], maxFrameLength: Int64) -> (frame: Int, head: Int)? {
        guard prefix.count >= Self.prefixSize,
            prefix[Self.checksumSize..<Self.checksumSize + 4].elementsEqual(Self.magic)
        else { return nil }
        let frame = Int(UInt32(littleEndianBytes: prefix[Self.checksumSize + 4..<Self.checksumSize + 8]))
        let head = Int(UInt32(littleEndianBytes: prefix[Self.checksumSize + 8..<Self.checksumSize + 12]))
        guard head >= Self.prefixSize + KeySlot.size, head < frame, Int64(frame) <= maxFrameLength else { return nil }
        return (frame, head)
    }

    /// The frame in `bytes` (exactly its frame length), or nil when its checksum or any field is wrong.
    static func decode(_ bytes: [UInt8]) -> (frame: SegmentFrame, headLength: Int)? {
        guard let (frameLength, headLength) = Self.lengths(prefix: bytes, maxFrameLength: Int64(bytes.count)),
            frameLength == bytes.count,
            Self.checksum(bytes, headLength: headLength, blobDigest: Self.blobDigest(bytes[headLength...]))
                .elementsEqual(bytes[0..<Self.checksumSize])
        else { return nil }
        var reader = Reader(bytes: bytes[Self.prefixSize..<headLength])
        guard let flags = reader.take(1)?.first, flags & ~1 == 0,
            let id = reader.take(16), let caseID = reader.take(16),
            let typeLength = reader.take(1)?.first, let typeBytes = reader.take(Int(typeLength)),
            let type = RecordType(rawValue: String(decoding: typeBytes, as: UTF8.self)),
            let createdAt = reader.take(8),
            let author = reader.optional(),
            let supersedesFlag = reader.take(1)?.first, supersedesFlag <= 1,
            let supersedes = supersedesFlag == 1 ? reader.take(16).map({ Optional($0) }) : .some(nil),
            let participant = reader.optional(),
            let slot = reader.take(8), let wrappedKey = reader.take(KeySlot.size), reader.isAtEnd
        else { return nil }
        let metadata = RecordMetadata(
            id: RecordID(bytes: Array(id)),
            caseID: CaseID(bytes: Array(caseID)),
            type: type,
            createdAt: Int64(littleEndianBytes: createdAt),
            author: author.map { String(decoding: $0, as: UTF8.self) },
            supersedes: supersedes.map { RecordID(bytes: Array($0)) },
            sealedSize: frameLength - headLength
        )
        let frame = SegmentFrame(
            metadata: metadata, participant: participant.map { Array($0) }, slot: Int64(littleEndianBytes: slot),
            wrappedKey: Array(wrappedKey), replayable: flags & 1 == 1)
        return (frame, headLength)
    }

    private static func appendOptional(_ value: [UInt8]?, to bytes: inout [UInt8]) {
        guard let value else {
            bytes += Self.absent.littleEndianBytes
            return
        }
        bytes += UInt16(value.count).littleEndianBytes
        bytes += value
    }

    private static func store(_ value: UInt32, in bytes: inout [UInt8], at offset: Int) {
        bytes.replaceSubrange(offset..<offset + 4, with: value.littleEndianBytes)
    }

    /// Reads fields in turn from a frame's head; every read checks the bytes are there.
    private struct Reader {
        var bytes: ArraySlice<UInt8>

        var isAtEnd: Bool { self.bytes.isEmpty }

        mutating func take(_ count: Int) -> ArraySlice<UInt8>? {
            guard self.bytes.count >= count else { return nil }
            defer { self.bytes = self.bytes.dropFirst(count) }
            return self.bytes.prefix(count)
        }

        /// A length-prefixed field: `.some(nil)` for an absent one, nil when the bytes run out.
        mutating func optional() -> ArraySlice<UInt8>?? {
            guard let length = self.take(2).map({ UInt16(littleEndianBytes: $0) }) else { return nil }
            if length == SegmentFrame.absent { return .some(nil) }
            guard let value = self.take(Int(length)) else { return nil }
            return .some(value)
        }
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto

/// The fixed 128-byte layout of one key slot in `keyslots`:
///
/// | bytes   | field                                                   |
/// |---------|---------------------------------------------------------|
/// | 0..<4   | magic `CVS1`                                            |
/// | 4..<8   | epoch of the key-encryption key, little-endian          |
/// | 8..<24  | record id                                               |
/// | 24..<48 | nonce                                                   |
/// | 48..<96 | the data key sealed with XChaCha20-Poly1305 (32 + tag)  |
/// | 96..<112| zero                                                    |
/// | 112..<128| BLAKE2b-128 checksum of bytes 0..<112                  |
///
/// The checksum tells a torn or scrubbed slot from a live one without any key; the AEAD (whose associated
/// data binds slot number, record id and epoch) tells a moved or forged slot from a genuine one.
package enum KeySlot {
    package static let size = 128
    package static let magic: [UInt8] = Array("CVS1".utf8)
    package static let checksumOffset = 112

    package static func encode(epoch: UInt32, recordID: RecordID, sealedKey: [UInt8]) -> [UInt8] {
        precondition(sealedKey.count == AEAD.overhead + 32, "a sealed data key is nonce + 32 + tag")
        var slot = Self.magic
        slot += epoch.littleEndianBytes
        recordID.appendBytes(to: &slot)
        slot += sealedKey
        slot += [UInt8](repeating: 0, count: Self.checksumOffset - slot.count)
        slot += Hash.blake2b(slot, length: 16)
        return slot
    }

    /// A parsed slot: its fields are slices of the slot's bytes, not copies.
    package struct Decoded {
        var epoch: UInt32
        var recordID: ArraySlice<UInt8>
        var sealedKey: ArraySlice<UInt8>
    }

    /// Whether a decoded slot names `recordID`, compared in constant time.
    static func names(_ decoded: Decoded, _ recordID: RecordID) -> Bool {
        var expected: [UInt8] = []
        expected.reserveCapacity(RecordID.byteCount)
        recordID.appendBytes(to: &expected)
        return Memory.constantTimeEquals(decoded.recordID, expected)
    }

    /// The epoch a slot's key is wrapped under, without decoding the rest; 0 for a slot holding no key.
    package static func epoch(of slot: ArraySlice<UInt8>) -> UInt32 {
        guard slot.count == Self.size, slot.prefix(4).elementsEqual(Self.magic) else { return 0 }
        let start = slot.startIndex + 4
        return UInt32(littleEndianBytes: slot[start..<(start + 4)])
    }

    /// Parses a slot; `nil` when its magic or checksum is wrong (scrubbed, torn or never written).

    package static func decode(_ slot: [UInt8]) -> Decoded? {
        guard slot.count == Self.size, slot[0..<4].elementsEqual(Self.magic) else { return nil }
        let checksum = Hash.blake2b(slot[0..<Self.checksumOffset], length: 16)
        guard Memory.constantTimeEquals(checksum, slot[Self.checksumOffset...]) else { return nil }
        let epoch = UInt32(littleEndianBytes: slot[4..<8])
        return Decoded(epoch: epoch, recordID: slot[8..<24], sealedKey: slot[24..<96])
    }

    /// Whether a slot still carries a wrapped key (its magic is intact), whatever its checksum says.
    package static func mayHoldKey(_ slot: [UInt8]) -> Bool {
        slot.count == Self.size && slot[0..<4].elementsEqual(Self.magic)
    }

    /// Random bytes whose first byte can never begin the magic: what a shredded slot holds.
    package static func scrubbed() -> [UInt8] {
        var bytes = Random.bytes(count: Self.size)
        bytes[0] = 0
        return bytes
    }
}

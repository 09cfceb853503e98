/// Lowercase hexadecimal, the one spelling of bytes in ids, keys and signatures.
public enum Hex {
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        if let text = bytes.withContiguousStorageIfAvailable({ Self.encode(buffer: UnsafeRawBufferPointer($0)) }) {
            return text
        }
        return Self.encode(Array(bytes))
    }

    /// Writes the digits straight into the string's storage: every audit line spells two hashes this
    /// way, and the generic loop it replaced was a visible share of a read's time over the socket.
    private static func encode(buffer: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: buffer.count * 2) { text in
            for (index, byte) in buffer.enumerated() {
                text[2 * index] = Self.digit(byte >> 4)
                text[2 * index + 1] = Self.digit(byte & 0x0f)
            }
            return buffer.count * 2
        }
    }

    /// Writes the digits of `bytes` over `out` from `offset` on (`out` holds at least `2 × bytes.count`
    /// bytes there): an audit line's hash and MAC go in front of its JSON once that is hashed.
    public static func write(_ bytes: [UInt8], over out: inout [UInt8], at offset: Int) {
        precondition(offset >= 0 && out.count - offset >= bytes.count * 2, "no room for the digits")
        for (index, byte) in bytes.enumerated() {
            out[offset + 2 * index] = Self.digit(byte >> 4)
            out[offset + 2 * index + 1] = Self.digit(byte & 0x0f)
        }
    }

    private static func digit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }

    /// The bytes of lowercase hexadecimal `text`; `nil` for an odd length or any other character.
    public static func decode(_ text: String) -> [UInt8]? {
        if let bytes = text.utf8.withContiguousStorageIfAvailable({ Self.decode(utf8: $0) }) {
            return bytes
        }
        return Array(text.utf8).withUnsafeBufferPointer { Self.decode(utf8: $0) }
    }

    private static func decode(utf8: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard utf8.count.isMultiple(of: 2) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count / 2)
        for index in stride(from: 0, to: utf8.count, by: 2) {
            let high = Self.value(utf8[index])
            let low = Self.value(utf8[index + 1])
            guard high | low < 0x10 else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    /// The digit's value, or 0xff for any character but 0-9 and a-f (also what `Identifier` parses with).
    static func value(_ c: UInt8) -> UInt8 {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c &- UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c &- UInt8(ascii: "a") &+ 10
        default: 0xff
        }
    }
}

/// Lowercase hexadecimal, the one spelling of bytes in ids, keys and signatures.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var text = [UInt8]()
        text.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            text.append(Self.digits[Int(byte >> 4)])
            text.append(Self.digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The bytes of lowercase hexadecimal `text`; `nil` for an odd length or any other character.
    public static func decode(_ text: String) -> [UInt8]? {
        var text = text
        return text.withUTF8 { utf8 -> [UInt8]? in
            guard utf8.count.isMultiple(of: 2) else { return nil }
            func value(_ c: UInt8) -> UInt8? {
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
                default: return nil
                }
            }
            var result: [UInt8] = []
            result.reserveCapacity(utf8.count / 2)
            for index in stride(from: 0, to: utf8.count, by: 2) {
                guard let high = value(utf8[index]), let low = value(utf8[index + 1]) else { return nil }
                result.append(high << 4 | low)
            }
            return result
        }
    }
}

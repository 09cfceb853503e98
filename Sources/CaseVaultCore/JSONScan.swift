/// Finding where a JSON string's plain text stops, eight bytes at a time: every PUT's body is read three
/// times (the depth check, the parse, the content's span), and each time most of its bytes lie inside one
/// long string. A byte loop took about 1.3 ns a byte there; words of eight bytes, each tested at once for
/// every byte that ends plain text (a quotation mark, a reverse solidus, a control character), take a
/// fraction of that.
enum JSONScan {
    private static let ones: UInt64 = 0x0101_0101_0101_0101
    private static let highs: UInt64 = 0x8080_8080_8080_8080

    /// The offset of the first byte at or after `start` (and before `end`) that is a quotation mark, a
    /// reverse solidus or a control character (below 0x20): the bytes a string's plain text cannot hold.
    /// `end` when there is none.
    static func stringStop(_ bytes: UnsafePointer<UInt8>, from start: Int, to end: Int) -> Int {
        var cursor = start
        let raw = UnsafeRawPointer(bytes)
        while end - cursor >= 8 {
            let mask = Self.stops(in: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: cursor, as: UInt64.self)))
            if mask != 0 { return cursor + mask.trailingZeroBitCount / 8 }
            cursor += 8
        }
        while cursor < end {
            let byte = bytes[cursor]
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 { return cursor }
            cursor += 1
        }
        return end
    }

    /// A mask whose lowest set bit is the high bit of the first byte of `word` (in memory order) that is a
    /// quotation mark, a reverse solidus or below 0x20; 0 when no byte is. Each test sets the high bit of
    /// every byte it matches. A borrow out of a matching byte can set high bits above it too, but no byte
    /// below the first match borrows, so the lowest set bit is always a match, and the only bit read.
    private static func stops(in word: UInt64) -> UInt64 {
        let quote = word ^ (Self.ones &* UInt64(UInt8(ascii: "\"")))
        let backslash = word ^ (Self.ones &* UInt64(UInt8(ascii: "\\")))
        let zeroOrControl =
            (quote &- Self.ones) & ~quote | (backslash &- Self.ones) & ~backslash | (word &- Self.ones &* 0x20) & ~word
        return zeroOrControl & Self.highs
    }
}

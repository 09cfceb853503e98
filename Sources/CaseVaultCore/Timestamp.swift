#if canImport(Glibc)
internal import Glibc
#endif

/// Times as the API and certificates show them: RFC 3339 in UTC with milliseconds.
public enum Timestamp {
    /// Milliseconds since the epoch as `2026-11-22T10:00:00.000Z`.
    public static func rfc3339(_ milliseconds: Int64) -> String {
        var seconds = time_t(milliseconds / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(milliseconds % 1000), 3))Z"
    }
}

extension Timestamp {
    /// Milliseconds since the epoch of an RFC 3339 date-time (`JSONValue.isTimestamp`: any offset, a
    /// fraction of 1 to 9 digits, rounded up to the millisecond) or of a date alone (`2026-03-01`, midnight
    /// UTC); nil for anything else. Years 1 to 9999, as RFC 3339 allows.
    public static func milliseconds(parsing text: String) -> Int64? {
        let full = text.utf8.count == 10 ? text + "T00:00:00Z" : text
        guard JSONValue.isTimestamp(full) else { return nil }
        let bytes = Array(full.utf8)
        func number(_ start: Int, _ count: Int) -> Int {
            bytes[start..<(start + count)].reduce(0) { $0 * 10 + Int($1 - 0x30) }
        }
        var parts = tm()
        parts.tm_year = Int32(number(0, 4) - 1900)
        parts.tm_mon = Int32(number(5, 2) - 1)
        parts.tm_mday = Int32(number(8, 2))
        parts.tm_hour = Int32(number(11, 2))
        parts.tm_min = Int32(number(14, 2))
        parts.tm_sec = Int32(number(17, 2))
        var index = 19
        var millis = 0
        if bytes[index] == UInt8(ascii: ".") {
            index += 1
            var digits = 0
            var finer = false
            while (0x30...0x39).contains(bytes[index]) {
                if digits < 3 {
                    millis = millis * 10 + Int(bytes[index] - 0x30)
                } else if bytes[index] != 0x30 {
                    finer = true
                }
                digits += 1
                index += 1
            }
            for _ in digits..<max(digits, 3) { millis *= 10 }
            // Times are kept in whole milliseconds: a bound between two of them is the later one, for "from"
            // and "before" alike.
            if finer { millis += 1 }
        }
        var offsetMinutes = 0
        if bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            let sign = bytes[index] == UInt8(ascii: "-") ? -1 : 1
            offsetMinutes = sign * (number(index + 1, 2) * 60 + number(index + 4, 2))
        }
        let seconds = Int64(timegm(&parts))
        return (seconds - Int64(offsetMinutes) * 60) * 1000 + Int64(millis)
    }
}

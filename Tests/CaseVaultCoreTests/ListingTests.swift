import CaseVaultCore
import Testing

/// What the list routes read from a query string: times, and the cursors they hand out.
@Suite("Case and record lists: times and cursors")
struct ListingTests {
    @Test("a date or an RFC 3339 date-time reads as the milliseconds it names, offsets and fractions counted")
    func times() {
        #expect(Timestamp.milliseconds(parsing: "1970-01-01") == 0)
        #expect(Timestamp.milliseconds(parsing: "1970-01-01T00:00:01Z") == 1000)
        #expect(Timestamp.milliseconds(parsing: "2026-03-01") == 1_772_323_200_000)
        #expect(Timestamp.milliseconds(parsing: "2026-03-01T00:00:00.000Z") == 1_772_323_200_000)
        #expect(Timestamp.milliseconds(parsing: "2026-03-01T01:00:00+01:00") == 1_772_323_200_000)
        #expect(Timestamp.milliseconds(parsing: "2026-02-28T19:00:00-05:00") == 1_772_323_200_000)
        #expect(Timestamp.milliseconds(parsing: "2026-03-01T00:00:00.5Z") == 1_772_323_200_500)
        // Rounded up to a whole millisecond: a bound between two kept times is the later one.
        #expect(Timestamp.milliseconds(parsing: "2026-03-01T00:00:00.123456789Z") == 1_772_323_200_124)
        #expect(Timestamp.milliseconds(parsing: "2026-03-01T00:00:00.123000000Z") == 1_772_323_200_123)
        #expect(Timestamp.milliseconds(parsing: "2026-03-01T00:00:00.0005Z") == 1_772_323_200_001)
        #expect(Timestamp.milliseconds(parsing: "2024-02-29") != nil)
        // What the API writes reads back as the same instant.
        for milliseconds: Int64 in [0, 1_772_323_200_123, 4_102_444_799_999] {
            #expect(Timestamp.milliseconds(parsing: Timestamp.rfc3339(milliseconds)) == milliseconds)
        }
    }

    @Test("anything else is no time")
    func notTimes() {
        for text in [
            "", "2026", "2026-3-1", "2026-02-29", "2026-13-01", "2026-03-01T24:00:00Z", "2026-03-01 00:00:00Z",
            "2026-03-01T00:00:00", "2026-03-01T00:00:00.Z", "2026-03-01T00:00:00.1234567890Z",
            "2026-03-01T00:00:00+1:00", "2026-03-01Z", "２０２６-03-01", "2026-03-01T00:00:00Z ",
            "1772323200000",
        ] {
            #expect(Timestamp.milliseconds(parsing: text) == nil, "\(text)")
        }
    }

    @Test("a cursor reads back as itself; any other text is no cursor")
    func cursors() throws {
        let id = try CaseID(String(repeating: "ab", count: 16))
        let cursor = CaseListCursor(openedAt: 1_772_323_200_123, id: id)
        #expect(CaseListCursor(text: cursor.text) == cursor)
        for text in [
            "", ".", "1.", ".\(id.rawValue)", "-1.\(id.rawValue)", "+1.\(id.rawValue)", "1.\(id.rawValue).1",
            "1.\(id.rawValue.uppercased())", "99999999999999999999.\(id.rawValue)", "1 .\(id.rawValue)",
        ] {
            #expect(CaseListCursor(text: text) == nil, "\(text)")
        }
        let record = RecordListCursor(filedAt: 1_772_323_200_123, sequence: 42)
        #expect(RecordListCursor(text: record.text) == record)
        for text in ["", "1", "-1.1", "+1.1", "1.5.1", "1.0x10", "1.99999999999999999999", " 1.1", "1.", ".1"] {
            #expect(RecordListCursor(text: text) == nil, "\(text)")
        }
    }
}

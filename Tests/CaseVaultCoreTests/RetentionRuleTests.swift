import CaseVaultCore
import Foundation
import Testing

@Suite("Retention rules")
struct RetentionRuleTests {
    static let calendar: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()

    @Test("calendar arithmetic agrees with Foundation's Calendar on random times and periods, leap days included")
    func civilArithmeticMatchesFoundation() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            // 1950 to 2150, to the millisecond; and every so often exactly a 29 February or a month's end.
            var time = Int64.random(in: -631_152_000_000...5_680_281_600_000, using: &generator)
            if Bool.random() {
                let days = Int64.random(in: -7305...47482)
                time = days * 86_400_000 + Int64.random(in: 0..<86_400_000)
            }
            let years = Int.random(in: 0...12)
            let months = Int.random(in: 0...30)
            let days = Int.random(in: 0...400)
            let date = Date(timeIntervalSince1970: Double(time) / 1000)
            // Years and months as one count of months (clamping the day once), then days.
            let byMonths = Self.calendar.date(byAdding: .month, value: years * 12 + months, to: date)!
            let expected = Self.calendar.date(byAdding: .day, value: days, to: byMonths)!
            let expectedMilliseconds = Int64((expected.timeIntervalSince1970 * 1000).rounded())
            #expect(
                CivilTime.adding(years: years, months: months, days: days, to: time) == expectedMilliseconds,
                "\(date) + \(years)y \(months)m \(days)d"
            )
        }
    }

    @Test("no record filed after the candidate bound is ever due: the sweep's index range misses nothing")
    func candidateBoundIsSafe() {
        for _ in 0..<20000 {
            let rule = RetentionRule(
                years: Int.random(in: 0...10), months: Int.random(in: 0...14), days: Int.random(in: 0...60),
                after: Bool.random() ? .filed : .caseClosed
            )
            let now = Int64.random(in: 0...4_102_444_800_000)
            let bound = rule.latestPossibleEvent(at: now)
            // Just past the bound, within the days where month ends clamp, and far past it.
            let event =
                bound + [1, Int64.random(in: 1...(5 * 86_400_000)), Int64.random(in: 1...(400 * 86_400_000))]
                .randomElement()!
            #expect(!rule.isDue(eventTime: event, at: now), "\(rule): an event past the bound was due")
        }
        // Due-ness is not monotonic in the event time, which is why the sweep judges each candidate.
        let month = RetentionRule(months: 1, after: .filed)
        let february28 = Int64(1_772_265_600_000)  // 2026-02-28T08:00:00Z
        #expect(month.isDue(eventTime: 1_769_846_400_000, at: february28))  // 2026-01-31T08:00:00Z
        #expect(!month.isDue(eventTime: 1_769_677_200_000, at: february28))  // 2026-01-29T09:00:00Z
    }

    @Test("rules parse from the configuration's words and refuse anything else")
    func parsing() throws {
        #expect(try RetentionRule(parsing: "7 years after case_closed") == RetentionRule(years: 7, after: .caseClosed))
        #expect(try RetentionRule(parsing: "30 days after filed") == RetentionRule(days: 30, after: .filed))
        #expect(try RetentionRule(parsing: "1 month after filed") == RetentionRule(months: 1, after: .filed))
        for bad in [
            "", "7 years", "seven years after filed", "7 weeks after filed", "7 years before filed",
            "-1 days after filed",
            "7 years after closing", "7 years after filed please",
        ] {
            #expect(throws: CaseVaultError.self, "\(bad)") { try RetentionRule(parsing: bad) }
        }
        #expect(throws: CaseVaultError.self) {
            try RetentionSchedule.standard(overriddenBy: ["recording": "1 day after filed"])
        }
        #expect(throws: CaseVaultError.self) {
            try RetentionSchedule.standard(overriddenBy: ["session_note": "1 day after case_closed"])
        }
        let schedule = try RetentionSchedule.standard(overriddenBy: ["intake_form": "5 years after case_closed"])
        #expect(schedule.rules[.intakeForm] == RetentionRule(years: 5, after: .caseClosed))
        #expect(schedule.rules[.evaluation] == RetentionSchedule.standard.rules[.evaluation])
    }
}

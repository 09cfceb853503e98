/// Retention schedules (docs/API.md): how long each record type is kept, counted from an event, as records
/// schedules say it ("7 years after the case is closed").
///
/// A rule is written `"<n> <unit> after <event>"`: units `day(s)`, `month(s)`, `year(s)`; events `filed`
/// (the record's filing time) and `case_closed` (its case's closing time; never due while the case is open).
/// Calendar arithmetic is in UTC, and a month or year added to a day the target month lacks lands on that
/// month's last day (29 February + 1 year = 28 February).
public struct RetentionRule: Sendable, Equatable, CustomStringConvertible {
    public enum Event: String, Sendable, CaseIterable {
        case filed
        case caseClosed = "case_closed"
    }

    public var years: Int
    public var months: Int
    public var days: Int
    public var event: Event

    public init(years: Int = 0, months: Int = 0, days: Int = 0, after event: Event) {
        self.years = years
        self.months = months
        self.days = days
        self.event = event
    }

    /// Parses `"3 years after filed"`; the error names what is wrong, never echoing more than the grammar.
    public init(parsing text: String) throws(CaseVaultError) {
        let words = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        let grammar =
            "a retention rule reads \"<number> days|months|years after filed|case_closed\", e.g. \"7 years after case_closed\""
        guard words.count == 4, words[2] == "after", let count = Int(words[0]), count >= 0, count <= 1000 else {
            throw CaseVaultError(.invalidConfiguration, grammar)
        }
        guard let event = Event(rawValue: words[3]) else {
            throw CaseVaultError(.invalidConfiguration, grammar)
        }
        self.init(after: event)
        switch words[1] {
        case "day", "days": self.days = count
        case "month", "months": self.months = count
        case "year", "years": self.years = count
        default: throw CaseVaultError(.invalidConfiguration, grammar)
        }
    }

    public var description: String {
        var parts: [String] = []
        if self.years != 0 { parts.append("\(self.years) \(self.years == 1 ? "year" : "years")") }
        if self.months != 0 { parts.append("\(self.months) \(self.months == 1 ? "month" : "months")") }
        if self.days != 0 || parts.isEmpty { parts.append("\(self.days) \(self.days == 1 ? "day" : "days")") }
        return parts.joined(separator: " ") + " after " + self.event.rawValue
    }

    /// When a record whose event happened at `eventTime` (milliseconds since the Unix epoch) is due.
    public func due(after eventTime: Int64) -> Int64 {
        CivilTime.adding(years: self.years, months: self.months, days: self.days, to: eventTime)
    }

    /// Whether a record whose event happened at `eventTime` is due at `now`.
    public func isDue(eventTime: Int64, at now: Int64) -> Bool {
        self.due(after: eventTime) <= now
    }

    /// An event time after which no record can be due at `now`: the sweep selects candidates by this one
    /// index range, then asks `isDue` of each. (Due-ness is not monotonic in the event time: 29, 30 and 31
    /// January plus one month all land on 28 February, so a record filed on the 31st at 08:00 is due before
    /// one filed on the 29th at 09:00. But n months always span at least 28·n days, so this bound holds.)
    public func latestPossibleEvent(at now: Int64) -> Int64 {
        now - (Int64(self.years * 12 + self.months) * 28 + Int64(self.days)) * CivilTime.millisecondsPerDay
    }
}

/// The whole schedule: a rule per record type and what a legal hold keeps.
public struct RetentionSchedule: Sendable, Equatable {
    public var rules: [RecordType: RetentionRule]
    /// Whether a legal hold keeps session notes past their rule. By default it does not: the policy wants
    /// notes destroyed.
    public var holdsKeepSessionNotes: Bool

    public init(rules: [RecordType: RetentionRule], holdsKeepSessionNotes: Bool = false) {
        self.rules = rules
        self.holdsKeepSessionNotes = holdsKeepSessionNotes
    }

    /// docs/API.md's example, which is also the default: intake 3 years after filing, agreements and final
    /// agreements 7 years after close, evaluations 2 years after filing, disclosures 7 years after filing,
    /// debriefs 1 year after close, notes at most 30 days, and the case header (participants' names) with the longest of its case's.
    public static let standard = RetentionSchedule(rules: [
        .intakeForm: RetentionRule(years: 3, after: .filed),
        .agreementToMediate: RetentionRule(years: 7, after: .caseClosed),
        .sessionNote: RetentionRule(days: 30, after: .filed),
        .finalAgreement: RetentionRule(years: 7, after: .caseClosed),
        .evaluation: RetentionRule(years: 2, after: .filed),
        .disclosure: RetentionRule(years: 7, after: .filed),
        .debrief: RetentionRule(years: 1, after: .caseClosed),
        .caseHeader: RetentionRule(years: 7, after: .caseClosed),
    ])

    /// The schedule with `overrides` (type name → rule text) applied over `standard`.
    public static func standard(
        overriddenBy overrides: [String: String],
        holdsKeepSessionNotes: Bool = false
    ) throws(CaseVaultError) -> RetentionSchedule {
        var schedule = Self.standard
        schedule.holdsKeepSessionNotes = holdsKeepSessionNotes
        for (name, text) in overrides.sorted(by: { $0.key < $1.key }) {
            guard let type = RecordType(rawValue: name) else {
                let types = RecordType.allCases.map(\.rawValue).joined(separator: ", ")
                throw CaseVaultError(
                    .invalidConfiguration, "[retention] names an unknown record type; the types are: \(types)")
            }
            let rule: RetentionRule
            do {
                rule = try RetentionRule(parsing: text)
            } catch {
                throw CaseVaultError(.invalidConfiguration, "[retention] \(name): \(error.message)")
            }
            if type == .sessionNote && rule.event != .filed {
                throw CaseVaultError(
                    .invalidConfiguration,
                    "[retention] session_note is the notes' maximum age and counts from filed (closing a case already destroys its notes)"
                )
            }
            schedule.rules[type] = rule
        }
        return schedule
    }

    /// Whether a hold on its case keeps a record of `type` from disposal.
    public func holdCovers(_ type: RecordType) -> Bool {
        type != .sessionNote || self.holdsKeepSessionNotes
    }
}

/// What a sweep did, or would do in a dry run, counted by record type. Never ids or content.
public struct SweepReport: Sendable, Equatable {
    public struct Counts: Sendable, Equatable {
        /// Records disposed (or, in a dry run, that would be).
        public var disposed = 0
        /// Records whose retention ran out but whose case is under a legal hold.
        public var heldBack = 0
        /// Records found due that another shred had already taken.
        public var alreadyGone = 0

        public init() {}
    }

    public var dryRun: Bool
    /// The clock reading the sweep judged due-ness by, milliseconds since the Unix epoch.
    public var asOf: Int64
    public var byType: [RecordType: Counts] = [:]
    /// Whether every due record was dealt with (false when a `limit` stopped the sweep early).
    public var complete = true
    /// Certificates issued.
    public var certificates = 0

    public init(dryRun: Bool, asOf: Int64) {
        self.dryRun = dryRun
        self.asOf = asOf
    }

    /// The counts over every type.
    public var totals: Counts {
        self.byType.values.reduce(into: Counts()) { totals, counts in
            totals.disposed += counts.disposed
            totals.heldBack += counts.heldBack
            totals.alreadyGone += counts.alreadyGone
        }
    }

    public var disposed: Int { self.totals.disposed }
}

/// Proleptic Gregorian calendar arithmetic in UTC on milliseconds since the Unix epoch, after Howard
/// Hinnant's `days_from_civil` / `civil_from_days`: exact, allocation-free and fast enough to bisect with.
/// (Foundation's `Calendar` does the same, and is what the tests check this against.)
public enum CivilTime {
    static let millisecondsPerDay: Int64 = 86_400_000

    public static func adding(years: Int, months: Int, days: Int, to time: Int64) -> Int64 {
        let day = Self.floorDivide(time, Self.millisecondsPerDay)
        let withinDay = time - day * Self.millisecondsPerDay
        var (year, month, dayOfMonth) = Self.civil(fromDays: day)
        let monthIndex = year * 12 + (month - 1) + Int64(years) * 12 + Int64(months)
        year = Self.floorDivide(monthIndex, 12)
        month = monthIndex - year * 12 + 1
        dayOfMonth = min(dayOfMonth, Self.daysIn(month: month, year: year))
        return (Self.days(fromYear: year, month: month, day: dayOfMonth) + Int64(days)) * Self.millisecondsPerDay
            + withinDay
    }

    static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 {
        a >= 0 ? a / b : -((-a + b - 1) / b)
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    static func days(fromYear year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = Self.floorDivide(y, 400)
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civil(fromDays days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = Self.floorDivide(z, 146_097)
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

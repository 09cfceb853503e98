import CaseVaultCore
import Testing

@Suite("Aggregate statistics and cell suppression")
struct StatisticsTests {
    static let day: Int64 = 86_400_000

    /// Midnight UTC of a civil date, milliseconds since the Unix epoch.
    static func time(_ year: Int, _ month: Int, _ day: Int = 1) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return Int64(era * 146_097 + dayOfEra - 719_468) * Self.day
    }

    /// `count` cases opened on a day and closed the next (or at `closing`), with outcome `resolved`.
    static func closed(_ count: Int, _ category: String?, on opened: Int64, closing: Int64? = nil) -> [StatisticsCase] {
        let facts = StatisticsCase(
            openedAt: opened, closedAt: closing ?? opened + Self.day, category: category, draftCategory: nil,
            outcome: "resolved", satisfaction: []
        )
        return Array(repeating: facts, count: count)
    }

    static func family(_ cases: [StatisticsCase], k: Int, at time: Int64) -> Statistics.Family {
        Statistics.family(cases.filter { $0.openedAt < time }.map { $0.facts(at: time) }, k: k, now: time)
    }

    /// Random cases over 1 to 3 years from 2025: few or many, spread or crowded into one month, with rare
    /// categories, cases with no category or no outcome, drafts that change at closing, and cases never closed.
    static func randomCases(trial: Int, using generator: inout SeededGenerator) -> [StatisticsCase] {
        let years = 1 + (trial / 4) % 3
        let count = Int.random(in: [5...25, 40...120, 30...90, 150...250][trial % 4], using: &generator)
        let crowded = Self.time(2025, 1) + Int64(Int.random(in: 0..<(12 * years), using: &generator)) * 30 * Self.day
        let categories: [String?] = [
            "noise", "noise", "noise", "roommate", "roommate", "damage", "damage", "guests",
            "r1", "r2", "r3", "r4", nil, "other",
        ]
        let outcomes: [String?] = ["resolved", "resolved", "partially_resolved", "no_agreement", "withdrawn", nil]
        return (0..<count).map { _ in
            let opened =
                trial % 4 == 2 && Int.random(in: 0..<10, using: &generator) < 7
                ? crowded + Int64.random(in: 0..<(28 * Self.day), using: &generator)
                : Self.time(2025, 1) + Int64.random(in: 0..<(Int64(years) * 365 * Self.day), using: &generator)
            let closed = Int.random(in: 0..<100, using: &generator) < 95
            return StatisticsCase(
                openedAt: opened,
                closedAt: closed ? opened + Int64.random(in: 0..<(100 * Self.day), using: &generator) : nil,
                category: categories.randomElement(using: &generator)!,
                draftCategory: categories.randomElement(using: &generator)!,
                outcome: outcomes.randomElement(using: &generator)!,
                satisfaction: (0..<Int.random(in: 0...2, using: &generator)).map { _ in
                    Int.random(in: 1...5, using: &generator)
                }
            )
        }
    }

    @Test(
        "over random cases asked every month: published values are true and never 1…k−1, only complete periods are published, and no value suppressed in any table at any time can be worked out from every value published"
    )
    func familyProperty() {
        var generator = SeededGenerator(state: 14)
        var seen = (published: 0, suppressed: 0)
        for trial in 0..<24 {
            let k = [3, 5, 11][trial % 3]
            let cases = Self.randomCases(trial: trial, using: &generator)
            var reader = StatisticsReader(cases: cases, k: k)
            let first = cases.map(\.openedAt).min()!
            let last = cases.compactMap(\.closedAt).max() ?? first
            // The 11th of every month, from the first case's month to two months after the last closing.
            for month in 0..<(12 * 4) {
                let time = Self.time(2025 + month / 12, month % 12 + 1, 11)
                guard time > first - 31 * Self.day, time < last + 70 * Self.day else { continue }
                reader.read(Self.family(cases, k: k, at: time), at: time)
            }
            #expect(reader.problems.isEmpty, "trial \(trial): \(reader.problems.prefix(5))")
            let exposed = reader.derivable()
            #expect(exposed.isEmpty, "trial \(trial), k = \(k): suppressed, yet derivable: \(exposed.prefix(5))")
            seen.published += reader.published.count
            seen.suppressed += reader.suppressed.count
        }
        #expect(seen.published > 1000 && seen.suppressed > 1000, "the trials publish and suppress: \(seen)")
    }

    @Test(
        "two suppressed January counts that the month and quarter tables gave away together stay hidden in the family")
    func monthsAgainstQuarters() {
        // Suppressed table by table (k = 11), the month table hid January (4 noise, 5 roommate) with April's
        // cells, its cheapest cycle, and the quarter table, with no small count, published 2026-Q1: noise 64,
        // roommate 65; so January was 64 − 30 − 30 = 4 and 65 − 30 − 30 = 5.
        var cases: [StatisticsCase] = []
        for (month, noise, roommate) in [(1, 4, 5), (2, 30, 30), (3, 30, 30), (4, 12, 12), (5, 30, 30), (6, 30, 30)] {
            cases += Self.closed(noise, "noise", on: Self.time(2026, month, 3))
            cases += Self.closed(roommate, "roommate", on: Self.time(2026, month, 3))
        }
        let now = Self.time(2026, 7, 15)
        let family = Self.family(cases, k: 11, at: now)
        let months = family.table(.month, by: .category)
        let january = months.rows.firstIndex(of: "2026-01")!
        #expect(months.cells[january][months.columns.firstIndex(of: "noise")!] == nil)
        #expect(months.cells[january][months.columns.firstIndex(of: "roommate")!] == nil)
        #expect(family.table(.quarter, by: .category).rows == ["2026-Q1", "2026-Q2"])
        var reader = StatisticsReader(cases: cases, k: 11)
        reader.read(family, at: now)
        #expect(reader.problems.isEmpty, "\(reader.problems)")
        #expect(reader.derivable().isEmpty, "\(reader.derivable())")
    }

    @Test(
        "only complete periods are published: not the current month, quarter or year, nor a period with a case still open"
    )
    func onlyCompletePeriods() {
        var cases = Self.closed(12, "noise", on: Self.time(2026, 3, 10))
        cases += Self.closed(12, "noise", on: Self.time(2027, 4, 5))  // an earlier month of the current quarter
        cases += Self.closed(12, "noise", on: Self.time(2027, 5, 2))  // the current month
        // Opened in January, closed in the current month: January waits for the next month start.
        cases += Self.closed(12, "noise", on: Self.time(2027, 1, 10), closing: Self.time(2027, 5, 10))
        cases.append(
            StatisticsCase(
                openedAt: Self.time(2027, 2, 1), closedAt: nil, category: "noise", draftCategory: "noise", outcome: nil,
                satisfaction: []
            ))
        let may = Self.family(cases, k: 11, at: Self.time(2027, 5, 20))
        #expect(may.table(.month, by: .category).rows == ["2026-03", "2027-04"])
        #expect(may.table(.month, by: .outcome).rows == ["2026-03", "2027-04"])
        #expect(may.table(.quarter, by: .category).rows == ["2026-Q1"])
        #expect(may.table(.year, by: .outcome).rows == ["2026"])
        #expect(may.table(.year, by: .category).grandTotal == 12, "totals cover the complete years")
        let june = Self.family(cases, k: 11, at: Self.time(2027, 6, 1))
        #expect(june.table(.month, by: .category).rows == ["2026-03", "2027-01", "2027-04", "2027-05"])
        #expect(june.table(.quarter, by: .category).rows == ["2026-Q1"], "February's open case holds 2027-Q1 back")
    }

    @Test("no small count: everything is published; a lone small count is suppressed with others that hide it")
    func suppressionExamples() {
        let (january, february) = (Self.time(2026, 1, 5), Self.time(2026, 2, 5))
        var cases = Self.closed(20, "noise", on: january) + Self.closed(30, "roommate", on: january)
        cases += Self.closed(40, "noise", on: february) + Self.closed(50, "roommate", on: february)
        let now = Self.time(2027, 1, 10)
        let big = Self.family(cases, k: 11, at: now)
        for table in big.tables {
            #expect(table.cells.joined().allSatisfy { $0 != nil } && table.rowTotals.allSatisfy { $0 != nil })
            #expect(table.columnTotals.allSatisfy { $0 != nil } && table.grandTotal == 140)
        }
        let months = big.table(.month, by: .category)
        #expect(months.columns == ["noise", Statistics.otherCategory, "roommate", Statistics.unknownLabel])
        #expect(months.cells == [[20, 0, 30, 0], [40, 0, 50, 0]])
        let small = Self.closed(5, "noise", on: january) + Array(cases.dropFirst(20))
        let family = Self.family(small, k: 11, at: now)
        #expect(family.table(.month, by: .category).cells[0][0] == nil, "January's 5 noise cases")
        #expect(family.tables.map { $0.cells.joined().filter { $0 == nil }.count }.reduce(0, +) >= 4)
        var reader = StatisticsReader(cases: small, k: 11)
        reader.read(family, at: now)
        #expect(reader.problems.isEmpty && reader.derivable().isEmpty)
    }

    @Test("the family from case facts: years, rare categories merged into other, means only over k evaluated cases")
    func familyFromFacts() {
        var cases: [Statistics.CaseFacts] = []
        for n in 0..<40 {
            let opened = Self.time(2026, 1) + Int64(n % 4) * 150 * Self.day
            cases.append(
                Statistics.CaseFacts(
                    openedAt: opened, closedAt: opened + 2 * Self.day,
                    category: n < 2 ? "rare-category-name" : (n % 2 == 0 ? "roommate" : "noise"),
                    outcome: n % 3 == 0 ? "resolved" : "no_agreement", satisfaction: n < 20 ? [4, 5] : []
                )
            )
        }
        let family = Statistics.family(cases, k: 11, now: Self.time(2028, 1, 15))
        let years = family.table(.year, by: .category)
        #expect(!years.columns.contains("rare-category-name"), "a category under k is not named")
        #expect(years.columns == ["noise", Statistics.otherCategory, "roommate", Statistics.unknownLabel])
        #expect(years.rows == ["2026", "2027"])
        // 2027's 10 cases are under k, and the total over the complete years would give them away.
        #expect(years.rowTotals == [30, nil] && years.grandTotal == nil)
        // 15 evaluated cases in 2026, each month and quarter with 5 (withheld); 5 in 2027 (withheld), which
        // the overall mean would bound: it is withheld too.
        #expect(years.rowSatisfaction == [4.5, nil])
        #expect(years.satisfaction == nil)
        let quarters = family.table(.quarter, by: .outcome)
        #expect(quarters.rows.allSatisfy { $0.contains("-Q") })
        #expect(quarters.columns == Statistics.outcomes)
        for value in quarters.cells.joined() + quarters.rowTotals + quarters.columnTotals + [quarters.grandTotal] {
            if let value { #expect(value == 0 || value >= 11) }
        }
        #expect(Statistics.Period.month.label(Self.time(2026, 1) + 40 * Self.day) == "2026-02")
        #expect(Statistics.Period.quarter.label(Self.time(2026, 12, 31)) == "2026-Q4")
    }

    @Test("a category that reaches k cases gets its column in the rows already published, and other loses it there")
    func categoryNamedLater() {
        let (january, february) = (Self.time(2026, 1, 5), Self.time(2026, 2, 5))
        let cases =
            Self.closed(2, "parking", on: january) + Self.closed(10, "noise", on: january)
            + Self.closed(1, "parking", on: february) + Self.closed(10, "noise", on: february)
        var reader = StatisticsReader(cases: cases, k: 3)
        let before = Self.family(cases, k: 3, at: Self.time(2026, 2, 15))
        #expect(!before.table(.month, by: .category).columns.contains("parking"))
        let march = Self.family(cases, k: 3, at: Self.time(2026, 3, 15))
        let months = march.table(.month, by: .category)
        #expect(months.columns.contains("parking") && months.rows == ["2026-01", "2026-02"])
        #expect(months.cells[0][months.columns.firstIndex(of: Statistics.otherCategory)!] == 0)
        reader.read(before, at: Self.time(2026, 2, 15))
        reader.read(march, at: Self.time(2026, 3, 15))
        #expect(reader.problems.isEmpty && reader.derivable().isEmpty)
    }
}

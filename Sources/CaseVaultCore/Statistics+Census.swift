extension Statistics {
    /// A row of a table: a period and its index (see `Period.index(ofMonth:)`).
    struct Row: Hashable, Sendable {
        var period: Period
        var index: Int

        var year: Int { Period.year.index(ofMonth: self.period.months(self.index).lowerBound) }
    }

    enum Column: Hashable, Sendable {
        case category(String)
        case outcome(String)
        /// The row total: one value, shown in both dimensions' tables.
        case total
    }

    /// A value of the family: one cell or row total.
    struct Key: Hashable, Sendable {
        var row: Row
        var column: Column
    }

    struct Rating: Sendable {
        var cases = 0
        var sum = 0
        var count = 0

        static func + (a: Rating, b: Rating) -> Rating {
            Rating(cases: a.cases + b.cases, sum: a.sum + b.sum, count: a.count + b.count)
        }
    }

    /// The counted cases by month, and from when each row and each category's column is published. Months are
    /// counted from January of year 0; "published from month m" means from the start of month m.
    struct Census: Sendable {
        let k: Int
        /// The month `now` falls in: what is published from it or an earlier month is published now.
        let current: Int
        /// The category columns as of now, sorted: the named categories, `other` and `unknown`.
        let categories: [String]
        /// For each of `categories`, the month it has its own column from (`Int.min` for `other` and `unknown`).
        let namedFrom: [Int]
        /// Per counted month (one whose row is published): the number of cases per category and outcome.
        let counts: [Int: [[Int]]]
        let ratings: [Int: Rating]
        /// The published rows, each with the month it is published from.
        let rows: [Row: Int]

        init(_ cases: [CaseFacts], k: Int, now: Int64) {
            self.k = max(k, 1)
            self.current = Statistics.month(of: now)
            var byMonth: [Int: [CaseFacts]] = [:]
            for facts in cases where Statistics.month(of: facts.openedAt) < self.current {
                byMonth[Statistics.month(of: facts.openedAt), default: []].append(facts)
            }
            let rows = Self.publication(byMonth, current: self.current)
            self.rows = rows
            let counted = byMonth.filter { rows[Row(period: .month, index: $0.key)] != nil }
            let named = Self.naming(counted, rows: rows, k: self.k)
            self.categories = (Array(named.keys) + [Statistics.otherCategory, Statistics.unknownLabel]).sorted()
            self.namedFrom = self.categories.map { named[$0] ?? Int.min }
            (self.counts, self.ratings) = Self.tally(counted, categories: self.categories)
        }

        /// The rows published by month `current` and the month each is published from: the month after the
        /// period and after its last closing; never while a case opened in it is open.
        private static func publication(_ byMonth: [Int: [CaseFacts]], current: Int) -> [Row: Int] {
            var finalFrom: [Int: Int] = [:]
            for (month, facts) in byMonth {
                let closings = facts.compactMap(\.closedAt)
                if closings.count == facts.count {
                    finalFrom[month] = closings.reduce(month + 1) { max($0, Statistics.month(of: $1) + 1) }
                }
            }
            var rows: [Row: Int] = [:]
            for period in Period.allCases {
                for (index, months) in Dictionary(grouping: byMonth.keys, by: { period.index(ofMonth: $0) }) {
                    let from = months.reduce(period.months(index).upperBound) { max($0, finalFrom[$1] ?? Int.max) }
                    if from <= current { rows[Row(period: period, index: index)] = from }
                }
            }
            return rows
        }

        /// The categories with a column of their own, each with the month it has it from: the month by which
        /// k of its cases are in published rows.
        private static func naming(_ counted: [Int: [CaseFacts]], rows: [Row: Int], k: Int) -> [String: Int] {
            var arrivals: [String: [Int]] = [:]
            for (month, facts) in counted {
                let from = rows[Row(period: .month, index: month)] ?? Int.max
                for name in facts.compactMap(\.category)
                where name != Statistics.unknownLabel && name != Statistics.otherCategory {
                    arrivals[name, default: []].append(from)
                }
            }
            return arrivals.filter { $0.value.count >= k }.mapValues { $0.sorted()[k - 1] }
        }

        /// Per counted month, the cases per category column (as of now) and outcome, and the evaluations.
        private static func tally(
            _ counted: [Int: [CaseFacts]], categories: [String]
        ) -> (counts: [Int: [[Int]]], ratings: [Int: Rating]) {
            let columns = Dictionary(uniqueKeysWithValues: categories.enumerated().map { ($1, $0) })
            let outcomes = Dictionary(uniqueKeysWithValues: Statistics.outcomes.enumerated().map { ($1, $0) })
            let (other, unknown) = (columns[Statistics.otherCategory]!, columns[Statistics.unknownLabel]!)
            let unknownOutcome = outcomes[Statistics.unknownLabel]!
            var counts: [Int: [[Int]]] = [:]
            var ratings: [Int: Rating] = [:]
            for (month, facts) in counted {
                var table = Array(repeating: Array(repeating: 0, count: outcomes.count), count: categories.count)
                var rating = Rating()
                for facts in facts {
                    let category = facts.category.map { columns[$0] ?? other } ?? unknown
                    table[category][facts.outcome.flatMap { outcomes[$0] } ?? unknownOutcome] += 1
                    if !facts.satisfaction.isEmpty {
                        let scores = facts.satisfaction
                        rating = rating + Rating(cases: 1, sum: scores.reduce(0, +), count: scores.count)
                    }
                }
                counts[month] = table
                ratings[month] = rating
            }
            return (counts, ratings)
        }

        /// The years with a published row, each replayed on its own.
        var years: [Int] {
            Set(self.rows.keys.map(\.year)).sorted()
        }

        /// The published rows of `period`, oldest first.
        func rows(of period: Period) -> [Row] {
            self.rows.keys.filter { $0.period == period }.sorted { $0.index < $1.index }
        }

        func rating(_ row: Row) -> Rating {
            row.period.months(row.index).reduce(Rating()) { $0 + (self.ratings[$1] ?? Rating()) }
        }

        /// The published means per row, and the overall one (see `Statistics`).
        func means() -> (rows: [Row: Double], overall: Double?) {
            var means: [Row: Double] = [:]
            // How many of `row`'s published parts of `period` with evaluations have their mean withheld.
            func withheld(_ row: Row, _ period: Period) -> Int {
                Set(row.period.months(row.index).map { period.index(ofMonth: $0) })
                    .map { Row(period: period, index: $0) }
                    .filter { self.rows[$0] != nil && self.rating($0).cases > 0 && means[$0] == nil }
                    .count
            }
            for period in Period.allCases {
                for row in self.rows(of: period) {
                    let rating = self.rating(row)
                    guard rating.cases >= self.k else { continue }
                    switch period {
                    case .month: break
                    case .quarter: guard withheld(row, .month) != 1 else { continue }
                    case .year: guard withheld(row, .quarter) != 1, withheld(row, .month) != 1 else { continue }
                    }
                    means[row] = Statistics.mean(rating.sum, rating.count)
                }
            }
            let years = self.rows(of: .year)
            let all = years.reduce(Rating()) { $0 + self.rating($1) }
            let complete = years.allSatisfy { self.rating($0).cases == 0 || means[$0] != nil }
            return (means, all.cases >= self.k && complete ? Statistics.mean(all.sum, all.count) : nil)
        }

        /// One table of the family, from the decisions on every value.
        func table(
            _ period: Period, by dimension: Dimension, published: [Key: Int],
            means: (rows: [Row: Double], overall: Double?)
        ) -> Table {
            let rows = self.rows(of: period)
            let labels = dimension == .category ? self.categories : Statistics.outcomes
            let columns = labels.map { dimension == .category ? Column.category($0) : Column.outcome($0) }
            let years = self.rows(of: .year)
            // A total over the complete years, published only when every year's value it adds up is.
            func total(_ column: Column) -> Int? {
                var sum = 0
                for year in years {
                    guard let value = published[Key(row: year, column: column)] else { return nil }
                    sum += value
                }
                return sum
            }
            return Table(
                period: period, dimension: dimension, k: self.k, rows: rows.map { period.label(index: $0.index) },
                columns: labels,
                cells: rows.map { row in columns.map { published[Key(row: row, column: $0)] } },
                rowTotals: rows.map { published[Key(row: $0, column: .total)] },
                columnTotals: columns.map(total), grandTotal: total(.total),
                rowSatisfaction: rows.map { means.rows[$0] }, satisfaction: means.overall
            )
        }
    }
}

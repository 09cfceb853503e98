extension Statistics {
    /// One year's values (its months, quarters and the year, in both dimensions) decided month start by month
    /// start, as `Statistics` describes.
    ///
    /// Coordinates. The unknowns are the numbers of cases per month, category and outcome. Every value adds up,
    /// in each of its months, the unknowns of some categories over all outcomes, of one outcome over all
    /// categories, or all of them; so a sum of values weighs month m's unknown (c, o) by a(m, c) + b(m, o).
    /// That weighting is zero exactly when a(m, ·) is a constant and b(m, ·) its negative, so the C + O − 1
    /// numbers a(m, c) + b(m, o_last) and b(m, o) − b(m, o_last) (o ≠ o_last, the last outcome) stand for it,
    /// spans and all, instead of the C × O unknowns.
    struct YearReplay {
        /// A value about to be decided.
        struct Value {
            var key: Key
            var count: Int
            var vector: [UInt64]
        }

        let census: Census
        /// The year's counted months, each with where its coordinates start.
        let offsets: [Int: Int]
        let width: Int
        /// The year's published rows (months, then quarters, then the year) and the month each is published from.
        let rows: [(row: Row, from: Int)]
        /// The latest decision on each value: its count where published, nothing where suppressed.
        private(set) var published: [Key: Int] = [:]
        private var span = Span()
        /// Every value suppressed so far, reduced against `span`; none is zero, i.e. none can be worked out.
        private var hidden: [[UInt64]] = []

        init(_ census: Census, year: Int) {
            self.census = census
            let months = Period.year.months(year).filter { census.counts[$0] != nil }
            let stride = census.categories.count + Statistics.outcomes.count - 1
            self.offsets = Dictionary(uniqueKeysWithValues: months.enumerated().map { ($1, $0 * stride) })
            self.width = months.count * stride
            self.rows = Period.allCases.flatMap { period in
                census.rows(of: period).filter { $0.year == year }.map { ($0, census.rows[$0] ?? Int.max) }
            }
        }

        /// Decides every value of the year published up to now, month start by month start.
        mutating func run() {
            guard let first = self.rows.map(\.from).min() else { return }
            let namings = self.census.namedFrom.filter { $0 > first && $0 <= self.census.current }
            for step in Set(self.rows.map(\.from) + namings).sorted() {
                var values: [Value] = []
                let named = self.census.categories.indices.filter { self.census.namedFrom[$0] == step }
                if !named.isEmpty {
                    // The rows already published get the new columns, and `other` without them.
                    for (row, from) in self.rows where from < step {
                        values += named.map { self.categoryValue(row, $0, members: [$0]) }
                        values.append(self.otherValue(row, at: step))
                    }
                }
                for (row, from) in self.rows where from == step {
                    values += self.rowValues(row, at: step)
                }
                self.decide(values)
            }
        }

        // MARK: Values

        private func rowValues(_ row: Row, at step: Int) -> [Value] {
            let columns = self.census.categories.indices.filter { self.census.namedFrom[$0] <= step }
            let categories = columns.map { category in
                self.census.categories[category] == Statistics.otherCategory
                    ? self.otherValue(row, at: step) : self.categoryValue(row, category, members: [category])
            }
            return categories + Statistics.outcomes.indices.map { self.outcomeValue(row, $0) } + [self.totalValue(row)]
        }

        /// The months of `row` with counted cases, each with where its coordinates start.
        private func months(_ row: Row) -> [(month: Int, offset: Int)] {
            row.period.months(row.index).compactMap { month in self.offsets[month].map { (month, $0) } }
        }

        private func categoryValue(_ row: Row, _ category: Int, members: [Int]) -> Value {
            var vector = Array(repeating: UInt64(0), count: self.width)
            var count = 0
            for (month, offset) in self.months(row) {
                for member in members {
                    vector[offset + member] = 1
                    count += self.census.counts[month]?[member].reduce(0, +) ?? 0
                }
            }
            let key = Key(row: row, column: .category(self.census.categories[category]))
            return Value(key: key, count: count, vector: vector)
        }

        /// `other` as of month `step`: the categories without a column of their own yet, and the rest.
        private func otherValue(_ row: Row, at step: Int) -> Value {
            let other = self.census.categories.firstIndex(of: Statistics.otherCategory) ?? 0
            let members = self.census.categories.indices.filter { $0 == other || self.census.namedFrom[$0] > step }
            return self.categoryValue(row, other, members: members)
        }

        private func outcomeValue(_ row: Row, _ outcome: Int) -> Value {
            let categories = self.census.categories.count
            let last = Statistics.outcomes.count - 1
            var vector = Array(repeating: UInt64(0), count: self.width)
            var count = 0
            for (month, offset) in self.months(row) {
                if outcome < last {
                    vector[offset + categories + outcome] = 1
                } else {
                    for category in 0..<categories { vector[offset + category] = 1 }
                    for other in 0..<last { vector[offset + categories + other] = Field.minusOne }
                }
                count += self.census.counts[month]?.reduce(0) { $0 + $1[outcome] } ?? 0
            }
            let key = Key(row: row, column: .outcome(Statistics.outcomes[outcome]))
            return Value(key: key, count: count, vector: vector)
        }

        private func totalValue(_ row: Row) -> Value {
            var vector = Array(repeating: UInt64(0), count: self.width)
            var count = 0
            for (month, offset) in self.months(row) {
                for category in self.census.categories.indices { vector[offset + category] = 1 }
                count += self.census.counts[month]?.reduce(0) { $0 + $1.reduce(0, +) } ?? 0
            }
            return Value(key: Key(row: row, column: .total), count: count, vector: vector)
        }

        // MARK: Deciding

        /// Decides the values first published at one month start, every earlier decision standing: counts from
        /// 1 to k−1 are suppressed, then, while some suppressed value (new or old) is in the span of everything
        /// published, the cheapest new value its derivation needs. Suppressing all of them would do, since
        /// each involves a month or a category that no earlier value tells apart.
        private mutating func decide(_ values: [Value]) {
            guard !values.isEmpty else { return }
            let small = 1..<self.census.k
            let reduced = values.map { self.span.reduced($0.vector) }
            var shown = values.indices.filter { !small.contains(values[$0].count) }
            var withheld = values.indices.filter { small.contains(values[$0].count) }
            // Only the coordinates some remaining vector uses matter for the rest.
            let support = (0..<self.width).filter { column in
                reduced.contains { $0[column] != 0 } || self.hidden.contains { $0[column] != 0 }
            }
            let candidates = reduced.map { vector in support.map { vector[$0] } }
            var targets = self.hidden.map { vector in support.map { vector[$0] } } + withheld.map { candidates[$0] }
            var checked = 0
            var combinations = Combinations(shown.map { candidates[$0] }, width: support.count)
            while checked < targets.count {
                guard let uses = combinations.uses(targets[checked]) else {
                    checked += 1
                    continue
                }
                let used = shown.indices.filter { uses[$0] }
                let needed = used.filter { !combinations.dependent[$0] }
                func cost(_ position: Int) -> Int {
                    let count = values[shown[position]].count
                    return count == 0 ? Int.max : count
                }
                guard let pick = (needed.isEmpty ? used : needed).min(by: { cost($0) < cost($1) }) else {
                    // Not reachable (a suppressed vector is never zero); fail closed all the same.
                    withheld += shown
                    shown = []
                    break
                }
                let value = shown.remove(at: pick)
                withheld.append(value)
                targets.append(candidates[value])
                combinations = Combinations(shown.map { candidates[$0] }, width: support.count)
            }
            for index in withheld {
                self.hidden.append(reduced[index])
                self.published[values[index].key] = nil
            }
            for index in shown {
                self.published[values[index].key] = values[index].count
                guard let (row, pivot) = self.span.insert(reduced[index]) else { continue }
                for hidden in self.hidden.indices where self.hidden[hidden][pivot] != 0 {
                    Field.subtract(self.hidden[hidden][pivot], times: row, from: &self.hidden[hidden])
                }
            }
            assert(self.hidden.allSatisfy { $0.contains { $0 != 0 } }, "a suppressed value can be worked out")
        }
    }
}

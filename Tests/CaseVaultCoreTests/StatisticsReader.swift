import CaseVaultCore

/// A case as the tests know it: its final facts, and the category it shows while still open.
struct StatisticsCase {
    var openedAt: Int64
    var closedAt: Int64?
    var category: String?
    /// The category on file before the case closed (an intake form amended, or filed late).
    var draftCategory: String?
    var outcome: String?
    var satisfaction: [Int]

    /// The facts the store would give at `time`: open cases have no outcome and their draft category.
    func facts(at time: Int64) -> Statistics.CaseFacts {
        let closed = self.closedAt.map { $0 <= time } ?? false
        return Statistics.CaseFacts(
            openedAt: self.openedAt, closedAt: closed ? self.closedAt : nil,
            category: closed ? self.category : self.draftCategory, outcome: closed ? self.outcome : nil,
            satisfaction: self.satisfaction
        )
    }

    var categoryKey: String { self.category ?? Statistics.unknownLabel }
    var outcomeKey: String {
        self.outcome.flatMap { Statistics.outcomes.contains($0) ? $0 : nil } ?? Statistics.unknownLabel
    }
}

/// What a reader learns from every table of every family it was given, checked independently of the
/// implementation: each value is read as the set of the finest unknowns it adds up (the number of cases per
/// month, category as filed and outcome, zeros included, for every month with a case), and a suppressed value
/// can be worked out exactly when its vector is in the span of the published ones. The rank is taken over
/// GF(2^31 − 1), another prime than the implementation's.
struct StatisticsReader {
    let k: Int
    let cases: [StatisticsCase]
    /// The categories as filed, `unknown`, and one nobody filed: a reader cannot tell that no case of some
    /// category without a column was filed.
    private let categories: Set<String>
    private var unknowns: [String: Int] = [:]
    private(set) var published: [[Int]: Int] = [:]
    private(set) var suppressed: [[Int]: String] = [:]
    /// Published values that are wrong or under k, rows of periods not complete, and the like.
    private(set) var problems: [String] = []

    init(cases: [StatisticsCase], k: Int) {
        self.k = k
        self.cases = cases
        self.categories = Set(cases.map(\.categoryKey)).union([Statistics.unknownLabel, "(none filed)"])
        for month in Set(cases.map { Statistics.Period.month.label($0.openedAt) }) {
            for category in self.categories {
                for outcome in Statistics.outcomes {
                    let key = "\(month)|\(category)|\(outcome)"
                    if self.unknowns[key] == nil { self.unknowns[key] = self.unknowns.count }
                }
            }
        }
    }

    /// Reads every table of `family`, published at `time`.
    mutating func read(_ family: Statistics.Family, at time: Int64) {
        let years = Set(family.table(.year, by: .category).rows)
        for table in family.tables {
            // `other` takes every category without a column of its own, and `other` as filed.
            let own = Set(table.columns).subtracting([Statistics.otherCategory])
            func matches(_ column: String?) -> (StatisticsCase) -> Bool {
                guard let column else { return { _ in true } }
                if table.dimension == .outcome { return { $0.outcomeKey == column } }
                if column != Statistics.otherCategory { return { $0.categoryKey == column } }
                return { !own.contains($0.categoryKey) }
            }
            let name = "\(table.period)/\(table.dimension) at \(Statistics.Period.month.label(time))"
            for (row, label) in table.rows.enumerated() {
                let inRow: (StatisticsCase) -> Bool = { table.period.label($0.openedAt) == label }
                if label >= table.period.label(time) { self.problems.append("\(name): \(label) has not ended") }
                if self.cases.contains(where: { inRow($0) && !($0.closedAt.map { $0 <= time } ?? false) }) {
                    self.problems.append("\(name): \(label) has a case still open")
                }
                for (column, value) in zip(table.columns, table.cells[row]) {
                    self.note(value, inRow, matches(column), "\(name) \(label) \(column)")
                }
                self.note(table.rowTotals[row], inRow, matches(nil), "\(name) \(label) total")
            }
            let complete: (StatisticsCase) -> Bool = { years.contains(Statistics.Period.year.label($0.openedAt)) }
            for (column, value) in zip(table.columns, table.columnTotals) {
                self.note(value, complete, matches(column), "\(name) total \(column)")
            }
            self.note(table.grandTotal, complete, matches(nil), "\(name) total")
        }
        self.checkMeans(family, at: time)
    }

    /// Published means are true, over at least k evaluated cases, and no withheld mean is the only one
    /// withheld beside a published coarser one.
    private mutating func checkMeans(_ family: Statistics.Family, at time: Int64) {
        let name = "means at \(Statistics.Period.month.label(time))"
        var means: [Statistics.Period: [String: Double?]] = [:]
        for period in Statistics.Period.allCases {
            let table = family.table(period, by: .outcome)
            means[period] = Dictionary(uniqueKeysWithValues: zip(table.rows, table.rowSatisfaction))
        }
        func check(_ mean: Double, _ inRow: (StatisticsCase) -> Bool, _ label: String) {
            let rated = self.cases.filter { inRow($0) && !$0.satisfaction.isEmpty }
            let scores = rated.flatMap(\.satisfaction)
            let truth = (Double(scores.reduce(0, +)) / Double(scores.count) * 100).rounded() / 100
            if rated.count < self.k || mean != truth {
                self.problems.append("\(name): \(label) \(mean), truly \(truth) over \(rated.count) evaluated cases")
            }
        }
        for period in Statistics.Period.allCases {
            for case (let label, let mean?) in means[period] ?? [:] {
                check(mean, { period.label($0.openedAt) == label }, label)
                // The finer periods inside it with evaluations whose mean is withheld.
                for finer in Statistics.Period.allCases.prefix(while: { $0 != period }) {
                    let rated = self.cases.filter { period.label($0.openedAt) == label && !$0.satisfaction.isEmpty }
                    let inside = Set(rated.map { finer.label($0.openedAt) })
                    let withheld = inside.filter { (means[finer]?[$0] ?? nil) == nil }
                    if withheld.count == 1 { self.problems.append("\(name): \(label) beside withheld \(withheld)") }
                }
            }
        }
        if let overall = family.table(.year, by: .category).satisfaction {
            let years = Set(family.table(.year, by: .category).rows)
            check(overall, { years.contains(Statistics.Period.year.label($0.openedAt)) }, "overall")
            let evaluated = self.cases.filter { !$0.satisfaction.isEmpty }
            let rated = Set(evaluated.map { Statistics.Period.year.label($0.openedAt) })
            if years.contains(where: { rated.contains($0) && (means[.year]?[$0] ?? nil) == nil }) {
                self.problems.append("\(name): overall beside a withheld year")
            }
        }
    }

    private mutating func note(
        _ value: Int?, _ inRow: (StatisticsCase) -> Bool, _ inColumn: (StatisticsCase) -> Bool, _ name: String
    ) {
        let cases = self.cases.filter { inRow($0) && inColumn($0) }
        // Every unknown of the row's months whose cases the column takes; the reader does not know which are zero.
        let months = Set(self.cases.filter(inRow).map { Statistics.Period.month.label($0.openedAt) })
        var vector: [Int] = []
        for month in months {
            for category in self.categories {
                for outcome in Statistics.outcomes {
                    let probe = StatisticsCase(
                        openedAt: 0, closedAt: nil, category: category == Statistics.unknownLabel ? nil : category,
                        draftCategory: nil, outcome: outcome, satisfaction: []
                    )
                    if inColumn(probe), let index = self.unknowns["\(month)|\(category)|\(outcome)"] {
                        vector.append(index)
                    }
                }
            }
        }
        vector.sort()
        guard let value else {
            self.suppressed[vector] = name
            return
        }
        if value != cases.count { self.problems.append("\(name): published \(value), truly \(cases.count)") }
        if (1..<self.k).contains(value) { self.problems.append("\(name): published \(value), under k = \(self.k)") }
        if let earlier = self.published[vector], earlier != value {
            self.problems.append("\(name): published \(value), earlier \(earlier)")
        }
        self.published[vector] = value
    }

    /// The suppressed values the published ones determine.
    func derivable() -> [String] {
        // Unknowns that every value takes alike count as one.
        let values = Array(self.published.keys) + Array(self.suppressed.keys)
        var signatures: [Int: [Int]] = [:]
        for (index, vector) in values.enumerated() {
            for unknown in vector { signatures[unknown, default: []].append(index) }
        }
        var merged: [[Int]: Int] = [:]
        var column: [Int: Int] = [:]
        for (unknown, signature) in signatures {
            if merged[signature] == nil { merged[signature] = merged.count }
            column[unknown] = merged[signature]
        }
        let width = merged.count
        func dense(_ vector: [Int]) -> [UInt64] {
            var row = [UInt64](repeating: 0, count: width)
            for unknown in vector { row[column[unknown]!] = 1 }
            return row
        }
        var basis = Echelon(width: width)
        for vector in self.published.keys { basis.insert(dense(vector)) }
        return self.suppressed.filter { basis.contains(dense($0.key)) }.map(\.value).sorted()
    }
}

/// Rows in echelon form over GF(2^31 − 1).
struct Echelon {
    static let p: UInt64 = 2_147_483_647
    let width: Int
    private var rows: [(pivot: Int, row: [UInt64])] = []

    init(width: Int) { self.width = width }

    private func reduce(_ vector: inout [UInt64]) {
        for (pivot, row) in self.rows where vector[pivot] != 0 {
            let factor = vector[pivot]
            vector.withUnsafeMutableBufferPointer { vector in
                row.withUnsafeBufferPointer { row in
                    for index in 0..<row.count where row[index] != 0 {
                        vector[index] = (vector[index] + Self.p * Self.p - factor * row[index]) % Self.p
                    }
                }
            }
        }
    }

    mutating func insert(_ vector: [UInt64]) {
        var vector = vector
        self.reduce(&vector)
        guard let pivot = vector.firstIndex(where: { $0 != 0 }) else { return }
        var inverse: UInt64 = 1
        var base = vector[pivot]
        var exponent = Self.p - 2
        while exponent > 0 {
            if exponent & 1 == 1 { inverse = inverse * base % Self.p }
            base = base * base % Self.p
            exponent >>= 1
        }
        self.rows.append((pivot, vector.map { $0 * inverse % Self.p }))
    }

    func contains(_ vector: [UInt64]) -> Bool {
        var vector = vector
        self.reduce(&vector)
        return vector.allSatisfy { $0 == 0 }
    }
}

/// SplitMix64: the tests' data is the same on every run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

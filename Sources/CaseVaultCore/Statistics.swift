/// Aggregate statistics (DESIGN §11): counts of cases in a table of periods × dispute categories (or
/// outcomes), with row, column and grand totals, and evaluation satisfaction as means. Only aggregates
/// leave the daemon, and small cells are suppressed so that no case can be singled out.
///
/// Suppression: every count from 1 to k−1 (totals included) is suppressed (primary suppression); then
/// further cells are suppressed (complementary suppression) until no suppressed value can be worked out
/// from the published ones. In the table with its totals, each cell is one edge of a bipartite graph
/// between its row and its column (a total joins its row or column to the "total" node), and the totals
/// are the sums at the nodes; a suppressed cell's value follows from the published ones exactly when it
/// is a bridge among the suppressed edges, and not when it lies on a cycle of them. So each suppressed cell
/// that is a bridge is closed into a cycle along the cheapest path of published cells (Dijkstra, a cell
/// costing its count; zeros cost the most, since a suppressed zero narrows its partners' range).
public enum Statistics {
    /// What the statistics know of a case: never content, only the fields they count.
    public struct CaseFacts: Sendable, Equatable {
        /// When the case was opened, milliseconds since the Unix epoch.
        public var openedAt: Int64
        /// The intake form's `dispute_category`, if one is on file.
        public var category: String?
        /// `resolved`, `partially_resolved`, `no_agreement`, `withdrawn`, or `nil` while open.
        public var outcome: String?
        /// Each evaluation's `satisfaction` (1 to 5).
        public var satisfaction: [Int]

        public init(openedAt: Int64, category: String?, outcome: String?, satisfaction: [Int]) {
            self.openedAt = openedAt
            self.category = category
            self.outcome = outcome
            self.satisfaction = satisfaction
        }
    }

    public enum Period: String, Sendable, CaseIterable {
        case month, quarter, year

        /// The period a time falls in: `2026-03`, `2026-Q1`, `2026` (UTC).
        public func label(_ time: Int64) -> String {
            let (year, month, _) = CivilTime.civil(fromDays: CivilTime.floorDivide(time, CivilTime.millisecondsPerDay))
            switch self {
            case .year: return "\(year)"
            case .quarter: return "\(year)-Q\((month - 1) / 3 + 1)"
            case .month: return "\(year)-" + (month < 10 ? "0\(month)" : "\(month)")
            }
        }
    }

    public enum Dimension: String, Sendable, CaseIterable {
        case category = "dispute_category"
        case outcome
    }

    /// A published table. `nil` marks a suppressed value.
    public struct Table: Sendable, Equatable {
        public var period: Period
        public var dimension: Dimension
        public var k: Int
        public var rows: [String]
        public var columns: [String]
        public var cells: [[Int?]]
        public var rowTotals: [Int?]
        public var columnTotals: [Int?]
        public var grandTotal: Int?
        /// Mean satisfaction per row, and overall; `nil` when fewer than k cases were evaluated.
        public var rowSatisfaction: [Double?]
        public var satisfaction: Double?
    }

    /// The label of cases with no intake form (or no category), and of categories merged for being rare.
    public static let unknownCategory = "unknown"
    public static let otherCategory = "other"
    public static let openOutcome = "open"

    /// Builds and suppresses the table of `cases`. Category columns whose total is under k are merged into
    /// `other` first, so that a rare category's name is not published either.
    public static func table(_ cases: [CaseFacts], period: Period, by dimension: Dimension, k: Int) -> Table {
        func column(_ facts: CaseFacts) -> String {
            switch dimension {
            case .category: return facts.category ?? Self.unknownCategory
            case .outcome: return facts.outcome ?? Self.openOutcome
            }
        }
        var columnCounts: [String: Int] = [:]
        for facts in cases { columnCounts[column(facts), default: 0] += 1 }
        let fixedColumns: Set<String> = dimension == .outcome ? [] : [Self.unknownCategory]
        func merged(_ name: String) -> String {
            if dimension == .category, !fixedColumns.contains(name), columnCounts[name, default: 0] < k { return Self.otherCategory }
            return name
        }
        let rows = Array(Set(cases.map { period.label($0.openedAt) })).sorted()
        let columns = Array(Set(cases.map { merged(column($0)) })).sorted()
        let rowIndex = Dictionary(uniqueKeysWithValues: rows.enumerated().map { ($1, $0) })
        let columnIndex = Dictionary(uniqueKeysWithValues: columns.enumerated().map { ($1, $0) })
        var counts = Array(repeating: Array(repeating: 0, count: columns.count), count: rows.count)
        var ratings = Array(repeating: (cases: 0, sum: 0, n: 0), count: rows.count)
        for facts in cases {
            let row = rowIndex[period.label(facts.openedAt)]!
            counts[row][columnIndex[merged(column(facts))]!] += 1
            if !facts.satisfaction.isEmpty {
                ratings[row].cases += 1
                ratings[row].sum += facts.satisfaction.reduce(0, +)
                ratings[row].n += facts.satisfaction.count
            }
        }
        let published = Self.suppress(counts, k: k)
        let r = rows.count
        let c = columns.count
        var rowSatisfaction: [Double?] = ratings.map { $0.cases >= k ? Self.mean($0.sum, $0.n) : nil }
        let evaluated = ratings.reduce(0) { $0 + $1.cases }
        var satisfaction: Double? = evaluated >= k
            ? Self.mean(ratings.reduce(0) { $0 + $1.sum }, ratings.reduce(0) { $0 + $1.n }) : nil
        // A single withheld row mean beside the overall one would be bounded by them: withhold another.
        let withheld = rowSatisfaction.indices.filter { rowSatisfaction[$0] == nil && ratings[$0].cases > 0 }
        if withheld.count == 1 {
            if let smallest = rowSatisfaction.indices.filter({ rowSatisfaction[$0] != nil }).min(by: { ratings[$0].cases < ratings[$1].cases }) {
                rowSatisfaction[smallest] = nil
            } else {
                satisfaction = nil
            }
        }
        return Table(
            period: period, dimension: dimension, k: k, rows: rows, columns: columns,
            cells: (0..<r).map { i in (0..<c).map { j in published[i][j] } },
            rowTotals: (0..<r).map { published[$0][c] },
            columnTotals: (0..<c).map { published[r][$0] },
            grandTotal: published[r][c],
            rowSatisfaction: rowSatisfaction, satisfaction: satisfaction
        )
    }

    static func mean(_ sum: Int, _ n: Int) -> Double {
        (Double(sum) / Double(n) * 100).rounded() / 100
    }

    /// The table with its totals (an extra column of row totals, an extra row of column totals and the
    /// grand total at the corner), each value or `nil` where suppressed.
    public static func suppress(_ counts: [[Int]], k: Int) -> [[Int?]] {
        let r = counts.count
        let c = counts.first?.count ?? 0
        var values = Array(repeating: Array(repeating: 0, count: c + 1), count: r + 1)
        for i in 0..<r {
            for j in 0..<c {
                values[i][j] = counts[i][j]
                values[i][c] += counts[i][j]
                values[r][j] += counts[i][j]
                values[r][c] += counts[i][j]
            }
        }
        var suppressed = values.map { row in row.map { (1..<k).contains($0) } }
        while let (i, j) = Self.exposedCells(suppressed).first {
            // Close (i, j) into a cycle: the cheapest path from row i to column j through the other cells.
            guard let path = Self.cheapestPath(from: i, to: j, values: values, suppressed: suppressed, k: k), !path.isEmpty else {
                break
            }
            for (a, b) in path { suppressed[a][b] = true }
        }
        return (0...r).map { i in (0...c).map { j in suppressed[i][j] ? nil : values[i][j] } }
    }

    /// The suppressed cells whose value the published ones determine: the bridges among suppressed edges.
    /// Rows are nodes 0…r (r being the totals row), columns nodes r+1…r+1+c.
    public static func exposedCells(_ suppressed: [[Bool]]) -> [(Int, Int)] {
        let rows = suppressed.count
        let columns = suppressed.first?.count ?? 0
        var exposed: [(Int, Int)] = []
        for i in 0..<rows {
            for j in 0..<columns where suppressed[i][j] {
                if !Self.connected(from: i, to: rows + j, suppressed: suppressed, without: (i, j)) {
                    exposed.append((i, j))
                }
            }
        }
        return exposed
    }

    private static func connected(from start: Int, to goal: Int, suppressed: [[Bool]], without: (Int, Int)) -> Bool {
        let rows = suppressed.count
        let columns = suppressed.first?.count ?? 0
        var seen = Array(repeating: false, count: rows + columns)
        var stack = [start]
        seen[start] = true
        while let node = stack.popLast() {
            if node == goal { return true }
            let neighbours: [Int] = node < rows
                ? (0..<columns).filter { suppressed[node][$0] && (node, $0) != without }.map { rows + $0 }
                : (0..<rows).filter { suppressed[$0][node - rows] && ($0, node - rows) != without }
            for next in neighbours where !seen[next] {
                seen[next] = true
                stack.append(next)
            }
        }
        return false
    }

    /// The published cells to suppress so that row node `row` reaches column node `column` without the
    /// cell between them: Dijkstra, suppressed cells free, published ones costing their count (zeros most).
    private static func cheapestPath(from row: Int, to column: Int, values: [[Int]], suppressed: [[Bool]], k: Int) -> [(Int, Int)]? {
        let rows = values.count
        let columns = values.first?.count ?? 0
        let nodes = rows + columns
        let zeroCost = values.joined().reduce(0, +) + 1
        var distance = Array(repeating: Int.max, count: nodes)
        var previous = Array(repeating: -1, count: nodes)
        var done = Array(repeating: false, count: nodes)
        distance[row] = 0
        for _ in 0..<nodes {
            guard let node = (0..<nodes).filter({ !done[$0] && distance[$0] != Int.max }).min(by: { distance[$0] < distance[$1] }) else { break }
            done[node] = true
            if node == rows + column { break }
            for next in 0..<nodes where (node < rows) != (next < rows) {
                let (i, j) = node < rows ? (node, next - rows) : (next, node - rows)
                if (i, j) == (row, column) { continue }
                let cost = suppressed[i][j] ? 0 : (values[i][j] == 0 ? zeroCost : values[i][j])
                if distance[node] + cost < distance[next] {
                    distance[next] = distance[node] + cost
                    previous[next] = node
                }
            }
        }
        guard distance[rows + column] != Int.max else { return nil }
        var path: [(Int, Int)] = []
        var node = rows + column
        while previous[node] >= 0 {
            let from = previous[node]
            let (i, j) = from < rows ? (from, node - rows) : (node, from - rows)
            if !suppressed[i][j] { path.append((i, j)) }
            node = from
        }
        return path
    }
}

import CaseVaultCore
import Testing

@Suite("Aggregate statistics and cell suppression")
struct StatisticsTests {
    /// Which suppressed cells of the table-with-totals the published values determine, by linear algebra
    /// (independent of the graph argument the implementation uses): a cell is determined exactly when
    /// dropping its column from the constraint matrix, restricted to suppressed cells, lowers the rank.
    static func derivable(_ published: [[Int?]]) -> [(Int, Int)] {
        let rows = published.count
        let columns = published[0].count
        let hidden = (0..<rows).flatMap { i in (0..<columns).compactMap { j in published[i][j] == nil ? (i, j) : nil } }
        // One equation per row (its cells minus its total) and per column, over the hidden cells only.
        func matrix(_ cells: [(Int, Int)]) -> [[Int64]] {
            var equations: [[Int64]] = []
            for i in 0..<rows {
                equations.append(cells.map { cell in cell.0 != i ? 0 : (cell.1 == columns - 1 ? -1 : 1) })
            }
            for j in 0..<columns {
                equations.append(cells.map { cell in cell.1 != j ? 0 : (cell.0 == rows - 1 ? -1 : 1) })
            }
            return equations
        }
        let full = Self.rank(matrix(hidden))
        return hidden.filter { cell in
            Self.rank(matrix(hidden.filter { $0 != cell })) < full
        }
    }

    /// Rank over GF(2^31 − 1): exact here, since every minor of these 0/±1 matrices is far smaller.
    static func rank(_ input: [[Int64]]) -> Int {
        let p: Int64 = 2_147_483_647
        var m = input.map { $0.map { (($0 % p) + p) % p } }
        guard let width = m.first?.count else { return 0 }
        var rank = 0
        for column in 0..<width {
            guard let pivot = (rank..<m.count).first(where: { m[$0][column] != 0 }) else { continue }
            m.swapAt(rank, pivot)
            let inverse = Self.power(m[rank][column], p - 2, p)
            for row in 0..<m.count where row != rank && m[row][column] != 0 {
                let factor = m[row][column] * inverse % p
                for k in column..<width {
                    m[row][k] = ((m[row][k] - factor * m[rank][k]) % p + p) % p
                }
            }
            rank += 1
        }
        return rank
    }

    static func power(_ base: Int64, _ exponent: Int64, _ p: Int64) -> Int64 {
        var result: Int64 = 1
        var base = base % p
        var exponent = exponent
        while exponent > 0 {
            if exponent & 1 == 1 { result = result * base % p }
            base = base * base % p
            exponent >>= 1
        }
        return result
    }

    @Test("over random tables: no published count lies in 1…k−1, published counts are true, and no suppressed cell can be derived from the published cells and totals")
    func suppressionProperty() {
        for trial in 0..<400 {
            let k = [3, 5, 11][trial % 3]
            let rows = Int.random(in: 1...6)
            let columns = Int.random(in: 1...6)
            // Many small counts, some zeros, some large ones.
            let counts = (0..<rows).map { _ in
                (0..<columns).map { _ in [0, Int.random(in: 1..<k), Int.random(in: k...(4 * k))].randomElement()! }
            }
            let published = Statistics.suppress(counts, k: k)
            let truth = Self.withTotals(counts)
            for i in 0...rows {
                for j in 0...columns {
                    if let value = published[i][j] {
                        #expect(!(1..<k).contains(value), "trial \(trial): a count under k was published")
                        #expect(value == truth[i][j], "trial \(trial): a published count is wrong")
                    }
                }
            }
            let exposed = Self.derivable(published)
            #expect(exposed.isEmpty, "trial \(trial): \(counts) → suppressed cells \(exposed) can be derived")
        }
    }

    /// The true table with its totals, as the oracle: each row with its sum, then the row of column sums.
    static func withTotals(_ counts: [[Int]]) -> [[Int]] {
        let rows = counts.map { $0 + [$0.reduce(0, +)] }
        let totals = rows[0].indices.map { column in rows.reduce(0) { $0 + $1[column] } }
        return rows + [totals]
    }

    @Test("a table with no small cell publishes everything; a lone small cell takes three others with it")
    func suppressionExamples() {
        let big = [[20, 30], [40, 50]]
        #expect(Statistics.suppress(big, k: 11) == [[20, 30, 50], [40, 50, 90], [60, 80, 140]])
        let published = Statistics.suppress([[5, 30], [40, 50]], k: 11)
        #expect(published[0][0] == nil)
        // The lone small cell needs a partner in its row, in its column, and the cell closing the square.
        #expect(published.joined().filter { $0 == nil }.count >= 4)
        #expect(Self.derivable(published).isEmpty)
    }

    @Test("the table from case facts: periods, rare categories merged into other, means only over k cases")
    func tableFromFacts() {
        let january2026: Int64 = 1_767_225_600_000  // 2026-01-01T00:00:00Z
        let day: Int64 = 86_400_000
        var cases: [Statistics.CaseFacts] = []
        for n in 0..<40 {
            let category = n < 2 ? "rare-category-name" : (n % 2 == 0 ? "roommate" : "noise")
            cases.append(
                Statistics.CaseFacts(
                    openedAt: january2026 + Int64(n % 4) * 150 * day, category: category,
                    outcome: n % 3 == 0 ? "resolved" : nil, satisfaction: n < 20 ? [4, 5] : []
                )
            )
        }
        let table = Statistics.table(cases, period: .year, by: .category, k: 11)
        #expect(!table.columns.contains("rare-category-name"), "a category under k is not named")
        #expect(table.columns.contains(Statistics.otherCategory))
        #expect(table.rows == ["2026", "2027"])
        #expect(table.grandTotal == 40)
        #expect(table.satisfaction == 4.5)
        let quarters = Statistics.table(cases, period: .quarter, by: .outcome, k: 11)
        #expect(quarters.rows.allSatisfy { $0.contains("-Q") })
        #expect(Set(quarters.columns) == ["open", "resolved"])
        for value in quarters.cells.joined() + quarters.rowTotals + quarters.columnTotals + [quarters.grandTotal] {
            if let value { #expect(value == 0 || value >= 11) }
        }
        #expect(Statistics.Period.month.label(january2026 + 40 * day) == "2026-02")
    }
}

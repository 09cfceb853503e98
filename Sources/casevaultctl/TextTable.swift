/// Rows printed as columns as wide as their widest cell, two spaces apart: no cell is ever cut. The last
/// column is not padded, so that no line ends in spaces.
enum TextTable {
    static func lines(_ rows: [[String]]) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        let widths = (0..<columns).map { index in rows.map { $0.count > index ? $0[index].count : 0 }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
    }

    static func print(_ rows: [[String]]) {
        for line in Self.lines(rows) { Swift.print(line) }
    }
}

import ArgumentParser
import Foundation

extension CaseVaultCtl {
    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Aggregate statistics (statistician, director): cases by period and category or outcome.",
            discussion:
                "Cells counting fewer than k cases, and the cells that would give them away, are shown as \"-\". "
                + "A period is shown once it has ended and all its cases are closed; the last line totals the complete years."
        )

        enum Period: String, ExpressibleByArgument, CaseIterable {
            case month, quarter, year
        }

        enum Dimension: String, ExpressibleByArgument, CaseIterable {
            case disputeCategory = "dispute_category"
            case outcome
        }

        @Option(help: "Rows: month, quarter or year the case was opened.") var period: Period = .year
        @Option(help: "Columns: dispute_category or outcome.") var by: Dimension = .disputeCategory
        @OptionGroup var connection: Connection

        func run() async throws {
            try await runReporting { () throws(CLIError) in
                let reply = try await self.connection.client().get(
                    "/v1/stats?period=\(self.period.rawValue)&by=\(self.by.rawValue)")
                guard reply.status == 200 else { throw CLIError.from(reply) }
                let table = reply.json
                if self.connection.json {
                    output(json: true, document: table, rows: [])
                    return
                }
                let columns = table["columns"] as? [String] ?? []
                func cell(_ value: Any?) -> String {
                    if let number = value as? Int { return "\(number)" }
                    if let number = value as? Double { return String(format: "%.2f", number) }
                    return "-"
                }
                var lines = [[self.period.rawValue] + columns + ["total", "satisfaction"]]
                for row in table["rows"] as? [[String: Any]] ?? [] {
                    let counts = row["counts"] as? [Any] ?? []
                    lines.append(
                        [row["period"] as? String ?? "?"] + counts.map(cell) + [
                            cell(row["total"]), cell(row["satisfaction_mean"]),
                        ])
                }
                // The totals cover the complete years, whichever period the rows are.
                lines.append(
                    ["complete years"] + (table["column_totals"] as? [Any] ?? []).map(cell) + [
                        cell(table["total"]), cell(table["satisfaction_mean"]),
                    ])
                TextTable.print(lines)
                print(
                    "k = \(table["k"] as? Int ?? 0): counts under k, and those that would reveal them, are shown as -")
            }
        }
    }
}

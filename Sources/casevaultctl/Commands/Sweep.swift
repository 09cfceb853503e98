import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    struct Sweep: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Dispose of every record whose retention has run out and that no legal hold covers (operator).",
            discussion: """
                Each disposal is a shred with a destruction certificate. Records of a held case are counted as held \
                back; session notes are held only if the configuration says so. On a terminal, the number of due \
                records is shown first; with --json one document is printed.

                Exit codes: 0 records were disposed (with --dry-run: records are due), 2 nothing was due, \
                1 the daemon answered with an error, and the common codes of `casevaultctl --help`.
                """
        )

        @Flag(help: "Count what would be disposed; change nothing.") var dryRun = false
        @OptionGroup var connection: Connection

        func run() async throws {
            var disposed = 0
            try await runReporting { () throws(CLIError) in
                let client = try self.connection.client()
                if !self.connection.json && !self.dryRun && isatty(STDERR_FILENO) == 1 {
                    // One request, not one per step: each request is a sweep of its own, and each sweep gives
                    // every case it touches a certificate; a count first says what the wait is for.
                    let plan = try await Self.call(client, ["dry_run": true])
                    let due = (plan["totals"] as? [String: Any])?["disposed"] as? Int ?? 0
                    FileHandle.standardError.write(Data("disposing of \(due) due records…\n".utf8))
                }
                let report = try await Self.call(client, ["dry_run": self.dryRun])
                let totals = report["totals"] as? [String: Any] ?? [:]
                disposed = totals["disposed"] as? Int ?? 0
                if self.connection.json {
                    output(json: true, document: report, rows: [])
                } else {
                    Self.printTable(report, dryRun: self.dryRun)
                }
            }
            if disposed == 0 { throw ExitCode(ExitStatus.incomplete) }
        }

        static func call(_ client: DaemonClient, _ body: [String: Any]) async throws(CLIError) -> [String: Any] {
            let reply = try await client.request(.POST, "/v1/admin/sweep", json: body)
            guard reply.status == 200 else { throw CLIError.from(reply) }
            return reply.json
        }

        static func printTable(_ report: [String: Any], dryRun: Bool) {
            let byType = report["by_type"] as? [String: [String: Int]] ?? [:]
            let heading = dryRun ? "would dispose" : "disposed"
            func line(_ name: String, _ counts: [String: Int]) -> [String] {
                [name, "\(counts["disposed"] ?? 0)", "\(counts["held_back"] ?? 0)", "\(counts["already_gone"] ?? 0)"]
            }
            TextTable.print(
                [["type", heading, "held back", "already gone"]]
                    + byType.keys.sorted().map { line($0, byType[$0] ?? [:]) }
                    + [line("total", report["totals"] as? [String: Int] ?? [:])]
            )
            if !dryRun {
                print("certificates issued: \(report["certificates"] as? Int ?? 0)")
            }
            let keys = report["backup_keys_destroyed"] as? Int ?? 0
            if keys > 0 {
                print("\(dryRun ? "backup keys past retention" : "backup keys destroyed"): \(keys)")
            }
        }
    }
}

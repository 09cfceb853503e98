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
                back; session notes are held only if the configuration says so. On a terminal, progress is shown; \
                with --json one document is printed.

                Exit codes: 0 records were disposed (with --dry-run: records are due), 2 nothing was due, \
                1 the daemon answered with an error, and the common codes of `casevaultctl --help`.
                """
        )

        @Flag(help: "Count what would be disposed; change nothing.") var dryRun = false
        @OptionGroup var connection: Connection

        /// Records per request when progress is shown.
        static let step = 2000

        func run() async throws {
            var disposed = 0
            try await runReporting { () throws(CLIError) in
                let client = try self.connection.client()
                let showProgress = !self.connection.json && !self.dryRun && isatty(STDERR_FILENO) == 1
                var report: [String: Any]
                if showProgress {
                    report = try await Self.sweepShowingProgress(client)
                } else {
                    report = try await Self.call(client, ["dry_run": self.dryRun])
                }
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

        /// A dry run for the total, then sweeps of `step` records each, adding up what each did.
        static func sweepShowingProgress(_ client: DaemonClient) async throws(CLIError) -> [String: Any] {
            let plan = try await Self.call(client, ["dry_run": true])
            let due = (plan["totals"] as? [String: Any])?["disposed"] as? Int ?? 0
            var byType: [String: [String: Int]] = [:]
            var certificates = 0
            var destroyedKeys = 0
            var last: [String: Any] = plan
            var done = 0
            while true {
                last = try await Self.call(client, ["limit": Self.step])
                for (type, counts) in last["by_type"] as? [String: [String: Int]] ?? [:] {
                    var sum = byType[type] ?? ["disposed": 0, "already_gone": 0, "held_back": 0]
                    sum["disposed", default: 0] += counts["disposed"] ?? 0
                    sum["already_gone", default: 0] += counts["already_gone"] ?? 0
                    // Held records are counted afresh by every request: keep the latest count.
                    sum["held_back"] = counts["held_back"] ?? 0
                    byType[type] = sum
                }
                certificates += last["certificates"] as? Int ?? 0
                destroyedKeys += last["backup_keys_destroyed"] as? Int ?? 0
                done = byType.values.reduce(0) { $0 + ($1["disposed"] ?? 0) }
                FileHandle.standardError.write(Data("\rdisposed \(done) of \(max(due, done))".utf8))
                if last["complete"] as? Bool ?? true { break }
            }
            FileHandle.standardError.write(Data("\n".utf8))
            let totals = ["disposed", "held_back", "already_gone"].reduce(into: [String: Int]()) { totals, key in
                totals[key] = byType.values.reduce(0) { $0 + ($1[key] ?? 0) }
            }
            return [
                "dry_run": false, "as_of": last["as_of"] ?? "", "complete": true, "certificates": certificates,
                "by_type": byType, "totals": totals, "backup_keys_destroyed": destroyedKeys,
            ]
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

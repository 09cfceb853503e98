import ArgumentParser
import CaseVaultCore
import Foundation

extension CaseVaultCtl {
    struct Case: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "case",
            abstract:
                "Find cases and see one: ids, states, dates, mediators, supervisors and record counts, never names.",
            subcommands: [List.self, Show.self]
        )

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract:
                    "The cases you may list, newest first (director: all; intake: in intake; a mediator: theirs).",
                discussion: """
                    Every page is fetched (GET /v1/cases, following next_cursor) unless --limit caps the \
                    rows. Each row counts the case's live records of the types you may read.
                    """
            )

            @Flag(help: "Only the cases that name you among their mediators or supervisors.") var mine = false
            @Option(help: "Only cases in this state: intake, agreement, session or closed.") var state: String?
            @Option(help: "Only cases opened at or after this date (2026-03-01) or RFC 3339 time.")
            var openedFrom: String?
            @Option(help: "Only cases opened before this date or RFC 3339 time.") var openedBefore: String?
            @Option(help: "At most this many cases.") var limit: Int?
            @OptionGroup var connection: Connection

            func validate() throws {
                if let state = self.state, CaseState(rawValue: state) == nil {
                    throw ValidationError("--state must be intake, agreement, session or closed")
                }
                for (name, value) in [("--opened-from", self.openedFrom), ("--opened-before", self.openedBefore)] {
                    if let value, Timestamp.milliseconds(parsing: value) == nil {
                        throw ValidationError("\(name) must be a date (2026-03-01) or an RFC 3339 date-time")
                    }
                }
                if let limit = self.limit, limit < 1 {
                    throw ValidationError("--limit must be at least 1")
                }
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let client = try self.connection.client()
                    var filters: [(String, String)] = []
                    if self.mine { filters.append(("mine", "true")) }
                    if let state = self.state { filters.append(("state", state)) }
                    if let from = self.openedFrom { filters.append(("opened_from", from)) }
                    if let before = self.openedBefore { filters.append(("opened_before", before)) }
                    let wanted = self.limit ?? .max
                    filters.append(("limit", String(min(wanted, CaseQuery.limits.upperBound))))
                    var cases: [[String: Any]] = []
                    var cursor: String?
                    repeat {
                        let query = (filters + (cursor.map { [("cursor", $0)] } ?? []))
                            .map { "\($0.0)=\(Self.escaped($0.1))" }.joined(separator: "&")
                        let reply = try await client.get("/v1/cases?" + query)
                        guard reply.status == 200 else { throw CLIError.from(reply) }
                        cases += reply.json["cases"] as? [[String: Any]] ?? []
                        cursor = reply.json["next_cursor"] as? String
                    } while cursor != nil && cases.count < wanted
                    cases = Array(cases.prefix(wanted))
                    if self.connection.json {
                        output(json: true, document: ["cases": cases], rows: [])
                        return
                    }
                    var rows = [["CASE", "STATE", "OPENED", "CLOSED", "MEDIATORS", "RECORDS"]]
                    for row in cases {
                        let counts = (row["records"] as? [String: Int] ?? [:]).sorted { $0.key < $1.key }
                            .map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                        rows.append([
                            row["case_id"] as? String ?? "?", row["state"] as? String ?? "?",
                            row["created_at"] as? String ?? "?", row["closed_at"] as? String ?? "-",
                            (row["mediators"] as? [String] ?? []).joined(separator: ","), counts,
                        ])
                    }
                    TextTable.print(rows)
                }
            }

            /// A query value as a URL carries it (the values here are ours or checked, but a `+` in a time
            /// offset must not read as a space).
            static func escaped(_ value: String) -> String {
                value.addingPercentEncoding(
                    withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~:"))) ?? value
            }
        }

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract:
                    "One case: its state, mediators, dates and the live records you may read (director, its mediators)."
            )

            @Argument(help: "The case id.") var caseID: String
            @OptionGroup var connection: Connection

            func validate() throws {
                guard (try? CaseID(self.caseID)) != nil else {
                    throw ValidationError("a case id is 32 lowercase hexadecimal characters")
                }
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let reply = try await self.connection.client().get("/v1/cases/\(self.caseID)")
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    if self.connection.json {
                        output(json: true, document: reply.json, rows: [])
                        return
                    }
                    let json = reply.json
                    TextTable.print([
                        ["case", json["case_id"] as? String ?? "?"],
                        ["state", json["state"] as? String ?? "?"],
                        ["participants", (json["participants"] as? [String] ?? []).joined(separator: ", ")],
                        ["mediators", (json["mediators"] as? [String] ?? []).joined(separator: ", ")],
                        ["supervisors", (json["supervisors"] as? [String] ?? []).joined(separator: ", ")],
                        ["opened", json["created_at"] as? String ?? "?"],
                        ["closed", json["closed_at"] as? String ?? "-"],
                    ])
                    let records = json["records"] as? [[String: Any]] ?? []
                    guard !records.isEmpty else { return }
                    print("")
                    TextTable.print(
                        [["RECORD", "TYPE", "FILED", "SUPERSEDES"]]
                            + records.map { record in
                                [
                                    record["record_id"] as? String ?? "?", record["type"] as? String ?? "?",
                                    record["created_at"] as? String ?? "?", record["supersedes"] as? String ?? "-",
                                ]
                            })
                }
            }
        }
    }
}

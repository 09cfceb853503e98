import ArgumentParser
import CaseVaultCore
import Foundation

extension CaseVaultCtl {
    struct Case: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "case",
            abstract:
                "Open, find, show and close cases, and assign their mediators and supervisors; no listing shows a name.",
            subcommands: [Open.self, List.self, Show.self, Close.self, Mediators.self, Supervisors.self]
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
                    let cases = try await pages(of: "/v1/cases", filters, member: "cases", upTo: wanted, client)
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
        }

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract:
                    "One case: its state, mediators, dates and the live records you may read (director, its mediators)."
            )

            @Argument(help: "The case id.") var caseID: String
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(CaseID.self, self.caseID, "a case id")
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
                    printRecords(records)
                }
            }
        }

        struct Open: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Open a case (director, intake): its participants' names sealed in its header.",
                discussion: """
                    The participants are p1, p2, … in the order given. A command line can be read by \
                    every user of this host (ps, /proc): to keep the names off it, give them one per \
                    line with --participants-from FILE, or - for standard input.
                    """
            )

            @Option(name: .customLong("participant"), help: "A participant's name (2 to 20 of them).")
            var participants: [String] = []
            @Option(help: "Read the participants' names from this file, one per line, or - for standard input.")
            var participantsFrom: String?
            @Option(name: .customLong("mediator"), help: "A mediator to assign (a user on the roster).")
            var mediators: [String] = []
            @OptionGroup var connection: Connection

            func validate() throws {
                guard self.participants.isEmpty || self.participantsFrom == nil else {
                    throw ValidationError("give the participants with --participant or --participants-from, not both")
                }
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    var names = self.participants
                    if let from = self.participantsFrom {
                        names = String(decoding: try readInput(from), as: UTF8.self)
                            .split(whereSeparator: \.isNewline)
                            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                    }
                    guard (2...20).contains(names.count) else {
                        throw CLIError.usage("a case has 2 to 20 participants; \(names.count) were given")
                    }
                    var body: [String: Any] = ["participants": names.map { ["name": $0] }]
                    if !self.mediators.isEmpty { body["mediators"] = self.mediators }
                    let reply = try await self.connection.client().request(.POST, "/v1/cases", json: body)
                    guard reply.status == 201 else { throw CLIError.from(reply) }
                    let opened = reply.json
                    output(
                        json: self.connection.json, document: opened,
                        rows: [
                            ("case", opened["case_id"] as? String ?? "?"), ("state", opened["state"] as? String ?? "?"),
                            ("participants", (opened["participants"] as? [String] ?? []).joined(separator: ", ")),
                            ("mediators", (opened["mediators"] as? [String] ?? []).joined(separator: ", ")),
                        ])
                }
            }
        }

        struct Close: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract:
                    "Close a case without a final agreement (director, its mediators); its session notes are shredded."
            )

            @Argument(help: "The case id.") var caseID: String
            @Option(
                help: "no_agreement or withdrawn.", completion: .list(ClosingOutcome.allCases.map(\.rawValue)))
            var outcome: String
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(CaseID.self, self.caseID, "a case id")
                guard ClosingOutcome(rawValue: self.outcome) != nil else {
                    throw ValidationError(
                        "--outcome must be one of: \(ClosingOutcome.allCases.map(\.rawValue).joined(separator: ", "))")
                }
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let reply = try await self.connection.client().request(
                        .POST, "/v1/cases/\(self.caseID)/close", json: ["outcome": self.outcome])
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    let closed = reply.json
                    output(
                        json: self.connection.json, document: closed,
                        rows: [
                            ("case", closed["case_id"] as? String ?? "?"), ("state", closed["state"] as? String ?? "?"),
                            ("outcome", closed["outcome"] as? String ?? "?"),
                        ] + (closed["shredded"] as? [String] ?? []).map { ("shredded note", $0) })
                }
            }
        }

        struct Mediators: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Replace a case's mediators (director); each must be on the roster. None leaves it without."
            )

            @Argument(help: "The case id.") var caseID: String
            @Argument(help: "The mediators (user names, or uid:N).") var users: [String] = []
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(CaseID.self, self.caseID, "a case id")
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    try await assign("mediators", self.users, to: self.caseID, connection: self.connection)
                }
            }
        }

        struct Supervisors: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract:
                    "Replace a case's supervisors (director), who file and read its debriefs; each must be on the roster."
            )

            @Argument(help: "The case id.") var caseID: String
            @Argument(help: "The supervisors (user names, or uid:N).") var users: [String] = []
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(CaseID.self, self.caseID, "a case id")
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    try await assign("supervisors", self.users, to: self.caseID, connection: self.connection)
                }
            }
        }
    }
}

/// Replaces the case's `role` list (`mediators` or `supervisors`) with `users`, and prints the case's.
private func assign(_ role: String, _ users: [String], to caseID: String, connection: Connection)
    async throws(CLIError)
{
    let reply = try await connection.client().request(.PUT, "/v1/cases/\(caseID)/\(role)", json: [role: users])
    guard reply.status == 200 else { throw CLIError.from(reply) }
    output(
        json: connection.json, document: reply.json,
        rows: [("case", caseID), (role, (reply.json[role] as? [String] ?? []).joined(separator: ", "))])
}

import ArgumentParser
import CaseVaultCore
import Foundation

extension CaseVaultCtl {
    struct Hold: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Legal holds on cases (director): a hold keeps a case's records from disposal until released.",
            subcommands: [Add.self, List.self, Release.self]
        )

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Place a hold on a case, with a reason.",
                discussion: """
                    A command line can be read by every user of this host (ps, /proc): to keep the reason \
                    off it, give it with --reason-from FILE, or - for standard input.
                    """
            )

            @Argument(help: "The case id.") var caseID: String
            @Option(help: "Why the case is held (sealed in the vault; at most 1000 characters).") var reason: String?
            @Option(help: "Read the reason from this file, or - for standard input.") var reasonFrom: String?
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(CaseID.self, self.caseID, "a case id")
                guard (self.reason != nil) != (self.reasonFrom != nil) else {
                    throw ValidationError(
                        "give the reason with --reason TEXT or --reason-from FILE (- for standard input)")
                }
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    var reason = self.reason ?? ""
                    if let from = self.reasonFrom {
                        reason = String(decoding: try readInput(from), as: UTF8.self)
                            .trimmingCharacters(in: .whitespacesAndNewlines)
                    }
                    let reply = try await self.connection.client().request(
                        .POST, "/v1/holds", json: ["case_id": self.caseID, "reason": reason]
                    )
                    guard reply.status == 201 else { throw CLIError.from(reply) }
                    let hold = reply.json
                    output(
                        json: self.connection.json, document: hold,
                        rows: [
                            ("hold", hold["hold_id"] as? String ?? "?"), ("case", hold["case_id"] as? String ?? "?"),
                            ("placed", hold["placed_at"] as? String ?? "?"),
                        ]
                    )
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List the standing holds.")

            @OptionGroup var connection: Connection

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let reply = try await self.connection.client().get("/v1/holds")
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    let holds = reply.json["holds"] as? [[String: Any]] ?? []
                    if self.connection.json {
                        output(json: true, document: reply.json, rows: [])
                        return
                    }
                    for hold in holds {
                        let fields = ["hold_id", "case_id", "placed_at"].map { hold[$0] as? String ?? "?" }
                        print((fields + [hold["reason"] as? String ?? ""]).joined(separator: "  "))
                    }
                }
            }
        }

        struct Release: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Release a hold: the next sweep disposes what it kept.")

            @Argument(help: "The hold id.") var holdID: String
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(HoldID.self, self.holdID, "a hold id")
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let reply = try await self.connection.client().request(.DELETE, "/v1/holds/\(self.holdID)")
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    output(json: self.connection.json, document: reply.json, rows: [("released", self.holdID)])
                }
            }
        }
    }
}

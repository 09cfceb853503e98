import ArgumentParser
import Foundation

extension CaseVaultCtl {
    struct Roster: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The mediator roster (director): who may serve as a case's mediator or supervisor.",
            discussion: """
                Taking someone off the roster ends their access to every case at their next request, as \
                mediator and as supervisor alike.
                """,
            subcommands: [List.self, Add.self, Remove.self]
        )

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Who is on the roster.")

            @OptionGroup var connection: Connection

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let reply = try await self.connection.client().get("/v1/roster/mediators")
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    if self.connection.json {
                        output(json: true, document: reply.json, rows: [])
                        return
                    }
                    let entries = reply.json["mediators"] as? [[String: Any]] ?? []
                    TextTable.print(
                        [["USER", "UID"]]
                            + entries.map {
                                [$0["user"] as? String ?? "?", ($0["uid"] as? Int).map(String.init) ?? "?"]
                            })
                }
            }
        }

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Put a user on the roster.")

            @Argument(help: "The user (a name this system knows, or uid:N).") var user: String
            @OptionGroup var connection: Connection

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let reply = try await self.connection.client().request(
                        .PUT, "/v1/roster/mediators/\(pathSegment(self.user))")
                    guard reply.status == 201 || reply.status == 200 else { throw CLIError.from(reply) }
                    output(
                        json: self.connection.json, document: reply.json,
                        rows: [
                            (
                                reply.status == 201 ? "added" : "already on the roster",
                                reply.json["user"] as? String ?? self.user
                            )
                        ])
                }
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Take a user off the roster: their access to every case ends at their next request.")

            @Argument(help: "The user (a name this system knows, or uid:N).") var user: String
            @OptionGroup var connection: Connection

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let reply = try await self.connection.client().request(
                        .DELETE, "/v1/roster/mediators/\(pathSegment(self.user))")
                    guard reply.status == 204 else { throw CLIError.from(reply) }
                    output(json: self.connection.json, document: ["removed": self.user], rows: [("removed", self.user)])
                }
            }
        }
    }
}

import ArgumentParser

extension CaseVaultCtl {
    struct WhoAmI: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "whoami",
            abstract: "Who the daemon sees on your end of the socket: uid, groups and roles."
        )

        @OptionGroup var connection: Connection

        func run() async throws {
            try await runReporting { () throws(CLIError) in
                let client = try self.connection.client()
                let reply = try await client.get("/v1/whoami")
                guard reply.status == 200 else { throw CLIError.from(reply) }
                let roles = reply.json["roles"] as? [String] ?? []
                let groups = (reply.json["groups"] as? [Int] ?? []).map(String.init)
                output(
                    json: self.connection.json,
                    document: reply.json,
                    rows: [
                        ("uid", "\(reply.json["uid"] as? Int ?? -1)"),
                        ("gid", "\(reply.json["gid"] as? Int ?? -1)"),
                        ("groups", groups.isEmpty ? "-" : groups.joined(separator: ", ")),
                        ("roles", roles.isEmpty ? "none" : roles.joined(separator: ", ")),
                    ]
                )
            }
        }
    }
}

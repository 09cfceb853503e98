import ArgumentParser

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The daemon's health and state (the state needs the operator role)."
    )

    @OptionGroup var connection: Connection

    func run() async throws {
        try await runReporting { () throws(CLIError) in
            let client = try self.connection.client()
            let health = try await client.get("/v1/health")
            guard health.status == 200 else { throw CLIError.from(health) }
            let status = try await client.get("/v1/admin/status")
            guard status.status == 200 else { throw CLIError.from(status) }
            let sealed = (status.json["sealed"] as? Bool) ?? true
            output(
                json: self.connection.json,
                document: ["socket": client.socketPath, "health": health.json["status"] ?? "", "state": status.json["state"] ?? "", "sealed": sealed],
                rows: [
                    ("socket", client.socketPath),
                    ("health", health.json["status"] as? String ?? "?"),
                    ("state", status.json["state"] as? String ?? "?"),
                    ("sealed", sealed ? "yes" : "no"),
                ]
            )
        }
    }
}

import ArgumentParser

extension CaseVaultCtl {
    struct Pubkey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Print the vault's Ed25519 public key, which destruction certificates are signed with (director, operator)."
        )

        @OptionGroup var connection: Connection

        func run() async throws {
            try await runReporting { () throws(CLIError) in
                let reply = try await self.connection.client().get("/v1/certificates/public-key")
                guard reply.status == 200 else { throw CLIError.from(reply) }
                if self.connection.json {
                    output(json: true, document: reply.json, rows: [])
                } else {
                    print(reply.json["public_key"] as? String ?? "")
                }
            }
        }
    }
}

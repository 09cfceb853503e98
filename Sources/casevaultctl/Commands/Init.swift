import ArgumentParser
import CaseVaultCrypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Initialise a vault whose key source is passphrase (operator): make the root key, wrap it, unseal.",
            discussion: """
                The daemon makes a random root key, wraps it under the passphrase with Argon2id (the cost of \
                [keys] argon2_operations and argon2_memory_mib), and unseals. With --shares N --threshold T it \
                also splits the root key into N recovery shares of which any T recover it (`unseal --share`):
                they are printed once, here, and kept nowhere; give each to a different person. \
                The passphrase is read twice from the terminal without echo, or once from standard input with --stdin.
                """
        )

        @Option(help: "Recovery shares to make (2 to 255; 0 for none).") var shares: Int = 0
        @Option(help: "Shares needed to recover the key (2 to --shares; default 3, or --shares if fewer).")
        var threshold: Int?
        @Flag(help: "Read the passphrase from standard input instead of the terminal.") var stdin = false
        @OptionGroup var connection: Connection

        func validate() throws {
            guard self.shares == 0 || (2...255).contains(self.shares) else {
                throw ValidationError("--shares must be 0 or 2 to 255")
            }
            if let threshold {
                guard self.shares > 0, (2...self.shares).contains(threshold) else {
                    throw ValidationError("--threshold must be 2 to --shares")
                }
            }
        }

        func run() async throws {
            try await runReporting { () throws(CLIError) in
                let passphrase = try Secret.passphrase(stdin: self.stdin, prompt: "New passphrase: ")
                if !self.stdin,
                    (try Secret.fromTerminal(prompt: "Again: ") ?? nil).map({ $0.constantTimeEquals(passphrase) })
                        != true
                {
                    throw CLIError.usage("the two passphrases differ; nothing was changed")
                }
                var extra = [("shares", self.shares)]
                if self.shares > 0 { extra.append(("threshold", self.threshold ?? min(3, self.shares))) }
                let body = try Secret.body("passphrase", passphrase, extra: extra)
                let reply = try await self.connection.client().requestSecret(.POST, "/v1/admin/init", body: body)
                guard reply.status == 201 else { throw CLIError.from(reply) }
                let shares = reply.json["shares"] as? [String] ?? []
                if self.connection.json {
                    output(json: true, document: reply.json, rows: [])
                    return
                }
                print("initialised and unsealed")
                if !shares.isEmpty {
                    print(
                        "recovery shares (any \(reply.json["threshold"] as? Int ?? 0) of \(shares.count) recover the root key; shown once, kept nowhere):"
                    )
                    for share in shares { print(share) }
                }
            }
        }
    }
}

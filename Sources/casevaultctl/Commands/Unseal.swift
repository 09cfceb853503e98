import ArgumentParser
import CaseVaultCrypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    struct Unseal: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Unseal the vault (operator): with the passphrase, or with recovery shares one at a time.",
            discussion: """
                The passphrase is read from the terminal without echo, or from standard input with --stdin. With \
                --share, shares are read the same way (one a line with --stdin) until the vault unseals; each answer \
                says how many are in. A refused attempt is slowed down: the next is accepted only after a delay that \
                doubles with each refusal (up to 5 minutes). Exit 0 unsealed, 1 refused or throttled, 2 the shares \
                ran out before the vault unsealed.
                """
        )

        @Flag(help: "Give recovery shares instead of the passphrase.") var share = false
        @Flag(help: "Read from standard input instead of the terminal.") var stdin = false
        @OptionGroup var connection: Connection

        func run() async throws {
            var unsealed = true
            try await runReporting { () throws(CLIError) in
                let client = try self.connection.client()
                guard self.share else {
                    let passphrase = try Secret.passphrase(stdin: self.stdin)
                    let reply = try await client.requestSecret(
                        .POST, "/v1/admin/unseal", body: try Secret.body("passphrase", passphrase))
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    print("unsealed")
                    return
                }
                var given = 0
                while true {
                    let next =
                        self.stdin
                        ? try Secret.fromStandardInput()
                        : try Secret.fromTerminal(prompt: "Recovery share \(given + 1): ")
                    guard let line = next else {
                        unsealed = false
                        print("still sealed: the shares ran out after \(given)")
                        return
                    }
                    // Blank lines are passed over; the daemon ignores spaces within a share.
                    guard let share = line, !Secret.isBlank(share) else { continue }
                    given += 1
                    let reply = try await client.requestSecret(
                        .POST, "/v1/admin/unseal", body: try Secret.body("share", share))
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    if reply.json["sealed"] as? Bool == false {
                        print("unsealed")
                        return
                    }
                    print(
                        "share accepted: \(reply.json["shares"] as? Int ?? 0) of \(reply.json["threshold"] as? Int ?? 0)"
                    )
                }
            }
            if !unsealed { throw ExitCode(ExitStatus.incomplete) }
        }
    }
}

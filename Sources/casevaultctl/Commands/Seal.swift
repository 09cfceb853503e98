import ArgumentParser
import CaseVaultCrypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    struct Seal: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Seal the vault (operator): close the store and zero every key; only health, status and unseal answer until unsealed."
        )

        @OptionGroup var connection: Connection

        func run() async throws {
            try await runReporting { () throws(CLIError) in
                let reply = try await self.connection.client().request(.POST, "/v1/admin/seal")
                guard reply.status == 200 else { throw CLIError.from(reply) }
                print("sealed")
            }
        }
    }
}

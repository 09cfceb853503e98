import ArgumentParser
import CaseVaultConfiguration
import CaseVaultCore
import CaseVaultCrypto
import CaseVaultFiles
import CaseVaultStore
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    struct Ledger: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export the shred ledger (operator): every shredded record's id and time, for restore --ledger."
        )

        @Option(help: "The file to write.") var out: String
        @OptionGroup var connection: Connection

        func run() async throws {
            try await runReporting { () throws(CLIError) in
                let reply = try await self.connection.client().get("/v1/admin/ledger")
                guard reply.status == 200 else { throw CLIError.from(reply) }
                guard
                    FileManager.default.createFile(
                        atPath: self.out, contents: reply.body, attributes: [.posixPermissions: 0o600])
                else {
                    throw CLIError.unreadable("cannot write \(self.out)")
                }
                let count = (reply.json["records"] as? [Any])?.count ?? 0
                output(
                    json: self.connection.json, document: ["records": count, "file": self.out],
                    rows: [("shredded records", "\(count)"), ("file", self.out)])
            }
        }
    }
}

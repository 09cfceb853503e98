import ArgumentParser
import CaseVaultCrypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Rotate the key-encryption key (operator): a new epoch, every key slot rewrapped under it, the old epoch retired.",
            discussion: """
                Rewraps in requests of --step slots and shows progress on a terminal. Interrupted (a crash, a \
                signal), it is resumable: run it again and it carries on the same rotation. Exit 0 when complete.
                """
        )

        @Option(help: "Key slots per request.") var step: Int = 5000
        @OptionGroup var connection: Connection

        func validate() throws {
            guard self.step > 0 else { throw ValidationError("--step must be at least 1") }
        }

        func run() async throws {
            try await runReporting { () throws(CLIError) in
                let client = try self.connection.client()
                let terminal = isatty(2) == 1
                var rewrapped = 0
                var retired: [Int] = []
                var epoch = 0
                while true {
                    let reply = try await client.request(.POST, "/v1/admin/rotate", json: ["limit": self.step])
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    epoch = reply.json["epoch"] as? Int ?? 0
                    rewrapped += reply.json["rewrapped"] as? Int ?? 0
                    retired += reply.json["retired"] as? [Int] ?? []
                    let remaining = reply.json["remaining"] as? Int ?? 0
                    if terminal {
                        // Progress on the terminal's standard error; the result goes to standard output.
                        let end = remaining == 0 ? "\n" : ""
                        FileHandle.standardError.write(
                            Data("\repoch \(epoch): \(rewrapped) slots rewrapped, \(remaining) to go\(end)".utf8))
                    }
                    if reply.json["complete"] as? Bool == true { break }
                }
                output(
                    json: self.connection.json,
                    document: ["epoch": epoch, "rewrapped": rewrapped, "retired": retired, "complete": true],
                    rows: [
                        ("epoch", "\(epoch)"), ("rewrapped", "\(rewrapped) slots"),
                        ("retired", retired.isEmpty ? "none" : retired.map(String.init).joined(separator: ", ")),
                    ]
                )
            }
        }
    }
}

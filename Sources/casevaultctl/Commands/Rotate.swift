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
                signal), it is resumable: run it again and it carries on the same rotation. Exit 0 when complete. \
                For a vault kept in PostgreSQL it asks the daemons to turn the erase epochs now rather than at \
                half the erase window, then waits, asking every second, until every daemon has rewrapped the live \
                records and destroyed the older epochs: from then on the residue of every record shredded before \
                is unreadable, and the second certificates of those shreds follow. A daemon that is away holds \
                it back (it is named); interrupted, the rotation goes on, and running this again waits for it.
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
                    let complete = reply.json["complete"] as? Bool == true
                    // On PostgreSQL the daemons do the work at their steps: this only watches.
                    let holding = reply.json["daemons_holding"] as? [String]
                    if terminal {
                        // Progress on the terminal's standard error; the result goes to standard output.
                        let end = complete ? "\n" : ""
                        let line =
                            holding.map {
                                "\repoch \(epoch): \(remaining) records to rewrap, older epochs held by "
                                    + ($0.isEmpty ? "no daemon" : $0.joined(separator: ", ")) + "\(end)"
                            } ?? "\repoch \(epoch): \(rewrapped) slots rewrapped, \(remaining) to go\(end)"
                        FileHandle.standardError.write(Data(line.utf8))
                    }
                    if complete { break }
                    if holding != nil { try? await Task.sleep(for: .seconds(1)) }
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

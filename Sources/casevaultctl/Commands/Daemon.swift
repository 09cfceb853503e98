import ArgumentParser
import Foundation

extension CaseVaultCtl {
    struct Daemon: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The other daemons of a vault kept in PostgreSQL (operator).",
            subcommands: [Forget.self]
        )

        struct Forget: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract:
                    "Forget a daemon whose host is gone for good: its erase epoch key file counts as destroyed.",
                discussion: """
                    The erasures whose epochs the daemon held are certified as complete once every other daemon \
                    has destroyed those epochs too, and their second certificates name it as attested: they rest \
                    on your word that its key file is destroyed, with its disk or its host. Refused while the \
                    daemon serves the vault or has stepped within an eighth of the erase window, and while it \
                    alone holds an epoch that live records are wrapped under. A forgotten daemon that starts \
                    again destroys every key its file holds before it rejoins. Give --key-file-destroyed to say \
                    so; without it nothing is sent.
                    """
            )

            @Argument(help: "The daemon's name ([storage] daemon_name on its host).") var name: String
            @Flag(help: "Say that the daemon's epoch key file is destroyed (required).")
            var keyFileDestroyed = false
            @OptionGroup var connection: Connection

            func validate() throws {
                guard self.keyFileDestroyed else {
                    throw ValidationError(
                        "give --key-file-destroyed: forgetting a daemon is your word that its epoch key file is destroyed"
                    )
                }
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let reply = try await self.connection.client().request(
                        .POST, "/v1/admin/daemons/\(pathSegment(self.name))/forget",
                        json: ["key_file_destroyed": true])
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    let epochs = reply.json["epochs_marked_destroyed"] as? [Int] ?? []
                    output(
                        json: self.connection.json, document: reply.json,
                        rows: [
                            ("forgotten", reply.json["daemon"] as? String ?? self.name),
                            (
                                "epochs marked destroyed",
                                epochs.isEmpty ? "none" : epochs.map(String.init).joined(separator: ", ")
                            ),
                        ])
                }
            }
        }
    }
}

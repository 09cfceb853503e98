import ArgumentParser
import CaseVaultConfiguration
import Foundation

extension CaseVaultCtl {
    struct Doctor: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "doctor",
            abstract:
                "Check the host: the data's filesystem and what a shred guarantees on it, modes and owners, the key, swap, core dumps.",
            discussion: """
                Reads the configuration, not the socket: it runs while the daemon is stopped too. \
                Exit codes: 0 every check passed or only warned, 1 a check failed, 78 the configuration cannot be read.
                """
        )

        @Option(help: "The daemon's configuration.") var config: String = "Config/casevault.toml"
        @Flag(help: "Print one JSON document instead of a table.") var json = false

        func run() throws {
            let checks: [CaseVaultConfiguration.Doctor.Check]
            do {
                let configuration = try DaemonConfiguration.load(path: self.config)
                checks = try CaseVaultConfiguration.Doctor.checks(
                    configuration,
                    base: URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true))
            } catch {
                FileHandle.standardError.write(Data("casevaultctl: \(error.message)\n".utf8))
                throw ExitCode(ExitStatus.configuration)
            }
            let worst = checks.map(\.status).max() ?? .pass
            output(
                json: self.json,
                document: [
                    "status": worst.rawValue,
                    "checks": checks.map { ["name": $0.name, "status": $0.status.rawValue, "detail": $0.detail] },
                ],
                rows: checks.map { ($0.name, "\($0.status.rawValue.uppercased())  \($0.detail)") }
            )
            if worst == .fail { throw ExitCode(ExitStatus.failed) }
        }
    }
}

import ArgumentParser
import CaseVaultConfiguration
import Foundation

extension CaseVaultCtl {
    struct Doctor: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "doctor",
            abstract:
                "Check the host: the data's filesystem and what a shred guarantees on it, modes and owners, the key, swap, core dumps; and, for storage.backend = \"postgresql\", the database.",
            discussion: """
                Reads the configuration, not the socket: it runs while the daemon is stopped too. \
                With storage.backend = "postgresql" it connects to the database as the daemon would, so run it \
                as the daemon's user (the password file is the daemon's). \
                Exit codes: 0 every check passed or only warned, 1 a check failed, 78 the configuration cannot be read.
                """
        )

        @Option(help: "The daemon's configuration.") var config: String = "Config/casevault.toml"
        @Flag(help: "Print one JSON document instead of a table.") var json = false

        func run() async throws {
            var checks: [CaseVaultConfiguration.Doctor.Check]
            let configuration: DaemonConfiguration
            let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
            do {
                configuration = try DaemonConfiguration.load(path: self.config)
                checks = try CaseVaultConfiguration.Doctor.checks(configuration, base: base)
            } catch {
                FileHandle.standardError.write(Data("casevaultctl: \(error.message)\n".utf8))
                throw ExitCode(ExitStatus.configuration)
            }
            checks += await CaseVaultConfiguration.Doctor.databaseChecks(
                configuration, base: base, credentials: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"])
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

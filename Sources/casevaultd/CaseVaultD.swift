// casevaultd: a thin shim over CaseVaultDaemon.
import ArgumentParser
import CaseVaultConfiguration
import CaseVaultCore
import CaseVaultDaemon
import Foundation
import Logging

struct CaseVaultD: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "casevaultd",
        abstract: "The CaseVault daemon: keeps a mediation service's records sealed.",
        discussion: """
            Without --config it runs on the embedded default: data and key under .casevault/ in the current \
            directory. Exit codes: 0 stopped by SIGTERM or SIGINT; 2 bad configuration (an unknown key or value, a user or \
            group this host does not have, or a vault that casevaultctl migrate moved to the other backend: \
            casevault.service does not restart on it); 3 the store or socket could not be \
            opened, or the user database could not be read; 4 the audit log does not match what the index remembers of it \
            (cut short, replaced or deleted: casevault.service does not restart on it; casevaultctl doctor says how to go on). \
            When it cannot start, clients already waiting on the socket systemd passed are answered 503.
            """
    )

    @Option(help: "The configuration file (TOML; see Config/casevault.toml).")
    var config: String?

    @Option(help: "The least severe log level written: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Flag(help: "Take an audit log that does not match its anchor in the index, once, recording the break in the log.")
    var acceptAuditBreak = false

    func validate() throws {
        guard Logger.Level(rawValue: self.logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        // Under systemd, entries the journal understands; on a terminal or in a file, swift-log's lines.
        let journal = JournalLogHandler.standardErrorIsJournal()
        var logger = Logger(label: "casevaultd") { label -> any LogHandler in
            journal ? JournalLogHandler() : StreamLogHandler.standardError(label: label)
        }
        logger.logLevel = Logger.Level(rawValue: self.logLevel) ?? .info
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
        let configuration: DaemonConfiguration
        do {
            configuration =
                try self.config.map { path throws(CaseVaultError) in try DaemonConfiguration.load(path: path) }
                ?? .embeddedDefault
            try configuration.refuseUnservedBackend()
        } catch {
            FileHandle.standardError.write(Data("casevaultd: \(error.message)\n".utf8))
            SystemdSocket.refuseWaiting(code: error.code)
            // 2 only for what starting again cannot mend; an unreadable user database may come back.
            throw ExitCode(error.code == .invalidConfiguration ? 2 : 3)
        }
        do {
            try await Daemon.run(
                configuration: configuration, base: cwd, logger: logger, acceptAuditBreak: self.acceptAuditBreak)
        } catch {
            FileHandle.standardError.write(Data("casevaultd: \(error.message)\n".utf8))
            // 2 and 4 for what starting again cannot mend: casevault.service does not restart on them.
            throw ExitCode(error.code == .auditMismatch ? 4 : error.code == .vaultMoved ? 2 : 3)
        }
    }
}

// casevaultctl: the operator's client for casevaultd.
import ArgumentParser
import CaseVaultConfiguration
import CaseVaultCore
import Foundation

@main
struct CaseVaultCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "casevaultctl",
        abstract: "Talk to casevaultd over its Unix socket.",
        discussion: """
            The daemon knows you by your Unix user and groups (SO_PEERCRED); there is nothing to log in to.

            Exit codes:
              0   done
              1   the daemon answered with an error (its problem code and detail
                  are printed as CODE: DETAIL); or, for record file --edit and
                  disclosure file --edit, the editor failed or its file was left
                  empty or unchanged, and nothing was filed
              64  bad command line, or input that cannot be sent (content that
                  is not a JSON object; an edited file that is not UTF-8 text;
                  no directory kept in memory to edit in)
              66  an input file cannot be read
              69  the daemon cannot be reached on the socket
              73  a file to write (a download) cannot be written
              77  the daemon refused: your user holds no role that allows this
              78  the configuration file cannot be read
              128 + the signal: SIGTERM, SIGHUP or SIGINT stopped an edit or a
                  download, after what it held was removed

            Commands that say more:
              sweep               2 when nothing was due
              doctor              reads the configuration, not the socket;
                                  1 when a check fails
              certificate verify  runs offline; 1 when the certificate does not
                                  verify, 66 when the file cannot be read, 64 when
                                  the key is not 64 hexadecimal characters
              unseal              1 when refused or throttled, 2 when --share
                                  --stdin ran out of shares first
              restore             runs without the daemon; 1 when it refuses the
                                  backup, 66 when a file cannot be read
              audit verify        1 when an entry is bad (it names the first
                                  one), 66 when --offline cannot read the log
            """,
        subcommands: [
            Status.self, WhoAmI.self, Init.self, Unseal.self, Seal.self, Rotate.self, Backup.self, Ledger.self,
            Restore.self, Migrate.self, Sweep.self, Hold.self, Stats.self, Pubkey.self, Certificate.self, Audit.self,
            Doctor.self, Metrics.self, Case.self, Record.self, Attachment.self, Roster.self, Disclosure.self,
            Daemon.self,
        ]
    )
}

/// Options every command takes.
struct Connection: ParsableArguments {
    @Option(help: "The daemon's socket. Default: server.socket_path of --config.")
    var socket: String?

    @Option(help: "The configuration that names the socket.")
    var config: String = "Config/casevault.toml"

    @Flag(help: "Print one JSON document instead of a table.")
    var json = false

    func client() throws(CLIError) -> DaemonClient {
        if let socket {
            return DaemonClient(socketPath: socket)
        }
        do {
            let configuration = try DaemonConfiguration.load(path: self.config)
            let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
            return DaemonClient(socketPath: try configuration.serverConfiguration(relativeTo: base).socketPath)
        } catch {
            throw CLIError.configuration("\(error.message) (or name the socket with --socket)")
        }
    }
}

/// Runs a command body, turning its errors into a message on stderr and the documented exit code.
func runReporting(_ body: () async throws(CLIError) -> Void) async throws {
    do {
        try await body()
    } catch {
        FileHandle.standardError.write(Data("casevaultctl: \(error.message)\n".utf8))
        throw ExitCode(error.exitCode)
    }
}

/// Prints `rows` as aligned `key  value` lines, or `document` as JSON.
func output(json: Bool, document: [String: Any], rows: [(String, String)]) {
    if json {
        let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])) ?? Data("{}".utf8)
        print(String(decoding: data, as: UTF8.self))
        return
    }
    TextTable.print(rows.map { [$0.0, $0.1] })
}

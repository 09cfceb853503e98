// casevaultctl: the operator's client for casevaultd.
import ArgumentParser
import CaseVaultCore
import CaseVaultDaemon
import CaseVaultServer
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
              1   the daemon answered with an error (its problem code and detail are printed)
              64  bad command line
              69  the daemon cannot be reached on the socket
              77  the daemon refused: your user holds no role that allows this
              78  the configuration file cannot be read
            `certificate verify` runs offline and exits 0 when the certificate verifies, 1 when it does not,
            66 when the file cannot be read, 64 when the key is not 64 hexadecimal characters.
            """,
        subcommands: [Status.self, WhoAmI.self, Pubkey.self, Certificate.self]
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
    let width = rows.map(\.0.count).max() ?? 0
    for (key, value) in rows {
        print(key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value)
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The daemon's health and state (the state needs the operator role)."
    )

    @OptionGroup var connection: Connection

    func run() async throws {
        try await runReporting { () throws(CLIError) in
            let client = try self.connection.client()
            let health = try await client.get("/v1/health")
            guard health.status == 200 else { throw CLIError.from(health) }
            let status = try await client.get("/v1/admin/status")
            guard status.status == 200 else { throw CLIError.from(status) }
            let sealed = (status.json["sealed"] as? Bool) ?? true
            output(
                json: self.connection.json,
                document: ["socket": client.socketPath, "health": health.json["status"] ?? "", "state": status.json["state"] ?? "", "sealed": sealed],
                rows: [
                    ("socket", client.socketPath),
                    ("health", health.json["status"] as? String ?? "?"),
                    ("state", status.json["state"] as? String ?? "?"),
                    ("sealed", sealed ? "yes" : "no"),
                ]
            )
        }
    }
}

struct WhoAmI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whoami",
        abstract: "Who the daemon sees on your end of the socket: uid, groups and roles."
    )

    @OptionGroup var connection: Connection

    func run() async throws {
        try await runReporting { () throws(CLIError) in
            let client = try self.connection.client()
            let reply = try await client.get("/v1/whoami")
            guard reply.status == 200 else { throw CLIError.from(reply) }
            let roles = reply.json["roles"] as? [String] ?? []
            let groups = (reply.json["groups"] as? [Int] ?? []).map(String.init)
            output(
                json: self.connection.json,
                document: reply.json,
                rows: [
                    ("uid", "\(reply.json["uid"] as? Int ?? -1)"),
                    ("gid", "\(reply.json["gid"] as? Int ?? -1)"),
                    ("groups", groups.isEmpty ? "-" : groups.joined(separator: ", ")),
                    ("roles", roles.isEmpty ? "none" : roles.joined(separator: ", ")),
                ]
            )
        }
    }
}

struct Pubkey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the vault's Ed25519 public key, which destruction certificates are signed with (director, operator)."
    )

    @OptionGroup var connection: Connection

    func run() async throws {
        try await runReporting { () throws(CLIError) in
            let reply = try await self.connection.client().get("/v1/certificates/public-key")
            guard reply.status == 200 else { throw CLIError.from(reply) }
            if self.connection.json {
                output(json: true, document: reply.json, rows: [])
            } else {
                print(reply.json["public_key"] as? String ?? "")
            }
        }
    }
}

struct Certificate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Destruction certificates: fetch one from the daemon, or verify one offline.",
        subcommands: [Get.self, Verify.self]
    )

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a certificate document (director); save it to verify it later.")

        @Argument(help: "The certificate id.") var id: String
        @OptionGroup var connection: Connection

        func run() async throws {
            try await runReporting { () throws(CLIError) in
                let reply = try await self.connection.client().get("/v1/certificates/\(self.id)")
                guard reply.status == 200 else { throw CLIError.from(reply) }
                print(String(decoding: reply.body, as: UTF8.self))
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify a certificate document offline, without the daemon: exit 0 if it verifies, 1 if not."
        )

        @Argument(help: "The certificate document (as `casevaultctl certificate get` prints it).") var file: String
        @Option(help: "The vault's public key, 64 hexadecimal characters (`casevaultctl pubkey`).") var pubkey: String
        @Flag(help: "Print the verified certificate as JSON.") var json = false

        func run() throws {
            guard let key = DestructionCertificate.bytes(hex: self.pubkey.lowercased()), key.count == 32 else {
                FileHandle.standardError.write(Data("casevaultctl: --pubkey must be 64 hexadecimal characters\n".utf8))
                throw ExitCode(64)
            }
            guard let data = FileManager.default.contents(atPath: self.file) else {
                FileHandle.standardError.write(Data("casevaultctl: cannot read \(self.file)\n".utf8))
                throw ExitCode(66)
            }
            var bytes = [UInt8](data)
            while let last = bytes.last, last == 0x0a || last == 0x0d { bytes.removeLast() }
            guard let certificate = DestructionCertificate.verify(document: bytes, publicKey: key) else {
                FileHandle.standardError.write(Data("casevaultctl: the certificate does NOT verify: altered, or signed by another vault\n".utf8))
                throw ExitCode(1)
            }
            if self.json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                print(String(decoding: (try? encoder.encode(certificate)) ?? Data(), as: UTF8.self))
                return
            }
            output(
                json: false, document: [:],
                rows: [
                    ("verified", "yes"),
                    ("certificate", certificate.certificateID),
                    ("case", certificate.caseID),
                    ("issued", certificate.issuedAt),
                    ("method", certificate.method + (certificate.reason.map { " (\($0))" } ?? "")),
                    ("authorised by", "\(certificate.authorisedBy.uid.map { "uid \($0)" } ?? "the daemon") as \(certificate.authorisedBy.role)"),
                    ("records", certificate.records.map { "\($0.recordID) \($0.type)" }.joined(separator: "\n" + String(repeating: " ", count: 15))),
                ]
            )
        }
    }
}

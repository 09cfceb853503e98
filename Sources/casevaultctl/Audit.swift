import ArgumentParser
import CaseVaultAudit
import CaseVaultCore
import CaseVaultDaemon
import Foundation

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The audit log: check its hash chain and signed checkpoints.",
        subcommands: [Verify.self]
    )

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify the audit log: exit 0 when it is intact, 1 when an entry is bad (the first one is named).",
            discussion: """
                By default the daemon verifies its own log against its own audit key (operator or director).
                With --offline, this command reads the log itself, from the data directory of --config or
                from --data-dir (a copy, say), without the daemon; --pubkey then pins the key the checkpoints
                must be signed with (the public_key an online verify prints). Exit 66 when the log cannot be
                read offline.
                """
        )

        @OptionGroup var connection: Connection
        @Flag(help: "Read the log from the data directory instead of asking the daemon.") var offline = false
        @Option(help: "With --offline: the data directory (default: store.data_directory of --config).") var dataDir: String?
        @Option(help: "With --offline: the audit public key, 64 hexadecimal characters.") var pubkey: String?

        func validate() throws {
            if !self.offline, self.dataDir != nil || self.pubkey != nil {
                throw ValidationError("--data-dir and --pubkey go with --offline")
            }
            if let pubkey, Hex.decode(pubkey.lowercased())?.count != 32 {
                throw ValidationError("--pubkey must be 64 hexadecimal characters")
            }
        }

        func run() async throws {
            var report: AuditReport?
            try await runReporting { () throws(CLIError) in
                report = self.offline ? try self.verifyOffline() : try await self.verifyOnline()
            }
            guard let report else { return }
            Self.print(report, json: self.connection.json)
            if !report.ok { throw ExitCode(1) }
        }

        func verifyOnline() async throws(CLIError) -> AuditReport {
            let reply = try await self.connection.client().get("/v1/audit/verify")
            guard reply.status == 200 else { throw CLIError.from(reply) }
            guard let report = try? JSONDecoder().decode(AuditReport.self, from: Data(reply.body)) else {
                throw CLIError.problem("the daemon's audit report could not be read")
            }
            return report
        }

        func verifyOffline() throws(CLIError) -> AuditReport {
            let directory: String
            if let dataDir {
                directory = dataDir
            } else {
                do {
                    let configuration = try DaemonConfiguration.load(path: self.connection.config)
                    let base = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
                    directory = try configuration.storeConfiguration(relativeTo: base).dataDirectory.path
                } catch {
                    throw CLIError.configuration("\(error.message) (or name the data directory with --data-dir)")
                }
            }
            guard let log = FileManager.default.contents(atPath: directory + "/audit/log") else {
                throw CLIError.unreadable("cannot read \(directory)/audit/log")
            }
            let head = FileManager.default.contents(atPath: directory + "/audit/head")
            return AuditVerifier.verify(
                log: [UInt8](log), head: head.map { [UInt8]($0) }, expectedKey: self.pubkey.flatMap { Hex.decode($0.lowercased()) }
            )
        }

        static func print(_ report: AuditReport, json: Bool) {
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                Swift.print(String(decoding: (try? encoder.encode(report)) ?? Data(), as: UTF8.self))
                return
            }
            var rows: [(String, String)] = [
                ("audit log", report.ok ? "intact" : "BROKEN"),
                ("entries", report.ok ? "\(report.entries)" : "\(report.entries) good before the first bad one"),
                ("checkpoints", "\(report.checkpoints)" + (report.lastCheckpoint.map { ", the last at entry \($0)" } ?? "")),
                ("unsigned", "\(report.unsignedEntries) entries after the last checkpoint"),
                ("signing key", report.publicKey ?? "none yet"),
            ]
            if let bad = report.firstBad {
                rows.append(("first bad entry", "\(bad.seq) (line \(bad.line), byte \(bad.offset)): \(bad.reason)"))
            }
            output(json: false, document: [:], rows: rows)
        }
    }
}

import ArgumentParser
import CaseVaultCore
import Foundation

extension CaseVaultCtl {
    struct Certificate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Destruction certificates: fetch one from the daemon, or verify one offline.",
            subcommands: [Get.self, Verify.self]
        )

        struct Get: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Print a certificate document (director); save it to verify it later.")

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
            @Option(help: "The vault's public key, 64 hexadecimal characters (`casevaultctl pubkey`).") var pubkey:
                String
            @Flag(help: "Print the verified certificate as JSON.") var json = false

            func run() throws {
                guard let key = Hex.decode(self.pubkey.lowercased()), key.count == 32 else {
                    FileHandle.standardError.write(
                        Data("casevaultctl: --pubkey must be 64 hexadecimal characters\n".utf8))
                    throw ExitCode(ExitStatus.usage)
                }
                guard let data = FileManager.default.contents(atPath: self.file) else {
                    FileHandle.standardError.write(Data("casevaultctl: cannot read \(self.file)\n".utf8))
                    throw ExitCode(ExitStatus.noInput)
                }
                var bytes = [UInt8](data)
                while let last = bytes.last, last == 0x0a || last == 0x0d { bytes.removeLast() }
                guard let certificate = DestructionCertificate.verify(document: bytes, publicKey: key) else {
                    FileHandle.standardError.write(
                        Data(
                            "casevaultctl: the certificate does NOT verify: altered, or signed by another vault\n".utf8)
                    )
                    throw ExitCode(ExitStatus.failed)
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
                        (
                            "authorised by",
                            "\(certificate.authorisedBy.uid.map { "uid \($0)" } ?? "the daemon") as \(certificate.authorisedBy.role)"
                        ),
                        (
                            "records",
                            certificate.records.map { "\($0.recordID) \($0.type)" }.joined(
                                separator: "\n" + String(repeating: " ", count: 15))
                        ),
                    ]
                )
            }
        }
    }
}

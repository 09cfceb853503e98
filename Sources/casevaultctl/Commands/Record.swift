import ArgumentParser
import CaseVaultCore
import Foundation

extension CaseVaultCtl {
    struct Record: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "File a record, read one, list a case's records, shred one.",
            subcommands: [File.self, Get.self, List.self, Shred.self]
        )

        struct File: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "File a record in a case: its content from a file, standard input or your editor.",
                discussion: """
                    The content is a JSON object holding what the type requires (docs/API.md). With \
                    --edit, $VISUAL or $EDITOR (else vi) opens a template of the type's fields in a \
                    private directory kept in memory ($XDG_RUNTIME_DIR, else /dev/shm), removed with \
                    whatever the editor left there however the editor ends; lines that begin with # are \
                    left out, and a file left empty or unchanged files nothing. Who may file each type: \
                    docs/API.md.
                    """
            )

            @Argument(help: "The case id.") var caseID: String
            @Option(
                help: "The record type.",
                completion: .list(RecordType.fileable.map(\.rawValue)))
            var type: String
            @Option(help: "Read the content from this file, or - for standard input.") var from: String?
            @Flag(help: "Write the content in your editor, from a template of the type's fields.") var edit = false
            @Option(help: "The id of the record this one replaces (a corrected form).") var supersedes: String?
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(CaseID.self, self.caseID, "a case id")
                if let supersedes { try requireID(RecordID.self, supersedes, "a record id (--supersedes)") }
                _ = try fileableType(self.type)
                guard (self.from != nil) != self.edit else {
                    throw ValidationError("give the content with --from FILE (- for standard input) or --edit")
                }
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let type = try fileableTypeOrUsage(self.type)
                    let content: Any
                    if let from = self.from {
                        content = try jsonObject(try readInput(from), what: "the content")
                    } else {
                        let template =
                            RecordTemplate.text(
                                for: type, signedAt: Timestamp.rfc3339(Int64(Date().timeIntervalSince1970 * 1000)))
                            ?? ""
                        content = try jsonObject(
                            Data(try editedText(template, name: "\(type.rawValue).json").utf8), what: "the content")
                    }
                    var body: [String: Any] = ["type": type.rawValue, "content": content]
                    if let supersedes { body["supersedes"] = supersedes }
                    try await fileRecord(caseID: self.caseID, body: body, connection: self.connection)
                }
            }
        }

        struct Get: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Print a record with its content (as the record's readers allow: docs/API.md).")

            @Argument(help: "The record id.") var recordID: String
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(RecordID.self, self.recordID, "a record id")
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let reply = try await self.connection.client().get("/v1/records/\(self.recordID)")
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    let record = reply.json
                    if self.connection.json {
                        output(json: true, document: record, rows: [])
                        return
                    }
                    TextTable.print(
                        [
                            ["record", record["record_id"] as? String ?? "?"],
                            ["case", record["case_id"] as? String ?? "?"],
                            ["type", record["type"] as? String ?? "?"],
                            ["filed", record["created_at"] as? String ?? "?"],
                        ] + ((record["supersedes"] as? String).map { [["supersedes", $0]] } ?? []))
                    let content = record["content"] ?? [:]
                    let data =
                        (try? JSONSerialization.data(withJSONObject: content, options: [.prettyPrinted, .sortedKeys]))
                        ?? Data("{}".utf8)
                    print("")
                    print(String(decoding: data, as: UTF8.self))
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "A case's live records in filing order, metadata only, of the types you may read.")

            @Argument(help: "The case id.") var caseID: String
            @Option(help: "Only records of this type.", completion: .list(RecordType.fileable.map(\.rawValue)))
            var type: String?
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(CaseID.self, self.caseID, "a case id")
                if let type = self.type { _ = try fileableType(type) }
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let query = [("limit", "200")] + (self.type.map { [("type", $0)] } ?? [])
                    let records = try await pages(
                        of: "/v1/cases/\(self.caseID)/records", query, member: "records", upTo: .max,
                        try self.connection.client())
                    if self.connection.json {
                        output(json: true, document: ["case_id": self.caseID, "records": records], rows: [])
                        return
                    }
                    printRecords(records)
                }
            }
        }

        struct Shred: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Shred a record now: its key and ciphertext overwritten, a destruction certificate issued.",
                discussion:
                    "Director; a session note also its assigned mediator. A held case's records are kept (409 held)."
            )

            @Argument(help: "The record id.") var recordID: String
            @Option(
                help: "Why: filed_in_error, participant_request or policy.",
                completion: .list(ShredOrder.requestReasons.sorted()))
            var reason: String
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(RecordID.self, self.recordID, "a record id")
                guard ShredOrder.requestReasons.contains(self.reason) else {
                    throw ValidationError(
                        "--reason must be one of: \(ShredOrder.requestReasons.sorted().joined(separator: ", "))")
                }
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let reply = try await self.connection.client().request(
                        .DELETE, "/v1/records/\(self.recordID)", json: ["reason": self.reason])
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    output(
                        json: self.connection.json, document: reply.json,
                        rows: [("shredded", reply.json["record_id"] as? String ?? self.recordID)])
                }
            }
        }
    }
}

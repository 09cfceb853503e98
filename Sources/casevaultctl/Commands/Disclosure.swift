import ArgumentParser
import CaseVaultCore
import Foundation

extension CaseVaultCtl {
    struct Disclosure: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Disclosures under the policy's exceptions, routed to the office the configuration names.",
            subcommands: [File.self]
        )

        struct File: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "File a disclosure in a case (director, its mediators): a category and a summary.",
                discussion: """
                    The summary is plain text, from a file, standard input or your editor (as `record file \
                    --edit`: a private directory kept in memory, removed however the editor ends). A \
                    command line can be read by every user of this host (ps, /proc): without --category, \
                    the category is asked for in the editor instead, with the summary.
                    """
            )

            @Argument(help: "The case id.") var caseID: String
            @Option(
                help: "sexual_harassment, discrimination, intent_to_harm or mediator_defense.",
                completion: .list(RecordValidator.disclosureCategories.sorted()))
            var category: String?
            @Option(help: "Read the summary from this file, or - for standard input.") var from: String?
            @Flag(help: "Write the summary in your editor.") var edit = false
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(CaseID.self, self.caseID, "a case id")
                if let category, !RecordValidator.disclosureCategories.contains(category) {
                    throw ValidationError(
                        "--category must be one of: \(RecordValidator.disclosureCategories.sorted().joined(separator: ", "))"
                    )
                }
                guard (self.from != nil) != self.edit else {
                    throw ValidationError("give the summary with --from FILE (- for standard input) or --edit")
                }
                guard self.category != nil || self.edit else {
                    throw ValidationError("give --category, or write it in your editor with --edit")
                }
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let content: [String: Any]
                    if let from = self.from, let category = self.category {
                        let summary = String(decoding: try readInput(from), as: UTF8.self)
                        content = ["category": category, "summary": summary]
                    } else if let category = self.category {
                        let template = RecordTemplate.commented(
                            "The disclosure's summary (\(category)), in plain text below.\n"
                                + "Lines that begin with # are left out. Leave the file empty to file nothing.")
                        content = ["category": category, "summary": try editedText(template, name: "summary.txt")]
                    } else {
                        let template = RecordTemplate.text(for: .disclosure, signedAt: "") ?? ""
                        content = try jsonObject(
                            Data(try editedText(template, name: "disclosure.json").utf8), what: "the disclosure")
                    }
                    try await fileRecord(
                        caseID: self.caseID, body: ["type": RecordType.disclosure.rawValue, "content": content],
                        connection: self.connection)
                }
            }
        }
    }
}

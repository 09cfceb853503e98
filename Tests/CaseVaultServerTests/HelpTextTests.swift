import Foundation
import Testing

/// What a user reads in `casevaultctl … --help`: prose that the terminal wraps, never sentences broken
/// where the source happened to break its lines.
@Suite("casevaultctl's help")
struct HelpTextTests {
    /// The help of `command` (a path of subcommands) on a terminal wider than any paragraph.
    static func help(_ command: [String]) throws -> String {
        let (_, output) = try Peer.root.run(
            DaemonProcess.binary("casevaultctl"), command + ["--help"],
            environment: ["COLUMNS": "100000", "PATH": "/usr/bin:/bin"]
        )
        return String(decoding: output, as: UTF8.self)
    }

    /// The subcommands a help lists.
    static func subcommands(_ help: String) -> [String] {
        guard let start = help.range(of: "SUBCOMMANDS:\n") else { return [] }
        // The list ends at its first blank line (a "See 'casevaultctl help …'" note follows).
        let list = help[start.upperBound...].split(separator: "\n", omittingEmptySubsequences: false).prefix {
            !$0.isEmpty
        }
        return list.compactMap { line in
            guard line.hasPrefix("  "), !line.hasPrefix("   ") else { return nil }
            let name = line.dropFirst(2).prefix { $0 != " " }
            return name == "help" || name.isEmpty ? nil : String(name)
        }
    }

    @Test("every command's discussion is prose: no line is broken where a wider terminal would go on")
    func proseIsNotBroken() throws {
        var queue: [[String]] = [[]]
        var seen = 0
        while let command = queue.popLast(), seen < 100 {
            let help = try Self.help(command)
            #expect(help.contains("USAGE:"), "\(command)")
            seen += 1
            queue += Self.subcommands(help).map { command + [$0] }
            let text = help.components(separatedBy: "USAGE:").first ?? ""
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            for (line, next) in zip(lines, lines.dropFirst()) {
                let prose = { (text: Substring) in !text.isEmpty && !text.hasPrefix(" ") }
                // Two lines of one paragraph: the first must be a heading (ends in a colon).
                if prose(line), prose(next) {
                    #expect(
                        line.hasSuffix(":"),
                        "casevaultctl \(command.joined(separator: " ")): a line breaks mid-paragraph: \(line)")
                }
            }
        }
        #expect(seen > 20)
    }
}

/// Shell completions, as swift-argument-parser writes them for casevaultctl.
@Suite("casevaultctl's completions")
struct CompletionTests {
    /// The fixed values of --type, --reason, --outcome and --category, in the order the options list them.
    static let lists = [
        [
            "intake_form", "agreement_to_mediate", "session_note", "final_agreement", "evaluation", "disclosure",
            "debrief",
        ],
        ["filed_in_error", "participant_request", "policy"],
        ["no_agreement", "withdrawn"],
        ["discrimination", "intent_to_harm", "mediator_defense", "sexual_harassment"],
    ]

    /// A list of values as `shell`'s script offers them (not as a help text would mention them).
    static func offered(_ values: [String], in shell: String) -> String {
        switch shell {
        case "bash": return "-W " + values.map { "'\($0)'" }.joined(separator: "$'\\n'")
        case "zsh": return "=(" + values.map { "'\($0)'" }.joined(separator: " ") + ")"
        default: return "-rfka '" + values.joined(separator: " ") + "'"
        }
    }

    @Test(
        "bash, zsh and fish scripts name the case-work commands and offer the fixed values of --type, --reason, --outcome and --category",
        arguments: ["bash", "zsh", "fish"])
    func completions(_ shell: String) throws {
        let (status, output) = try Peer.root.run(
            DaemonProcess.binary("casevaultctl"), ["--generate-completion-script", shell])
        let script = String(decoding: output, as: UTF8.self)
        #expect(status == 0)
        for word in ["record", "attachment", "roster", "disclosure", "supervisors"] {
            #expect(script.contains(word), "the \(shell) script lacks \(word)")
        }
        for values in Self.lists {
            #expect(script.contains(Self.offered(values, in: shell)), "the \(shell) script does not offer \(values)")
        }
        #expect(!script.contains("case_header"), "the case header is not a type anyone files")
    }
}

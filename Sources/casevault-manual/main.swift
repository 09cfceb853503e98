// Renders a man page from a command's argument definitions: reads the JSON that swift-argument-parser
// prints for `--experimental-dump-help` on standard input, writes roff (man(7)) on standard output.
// Used by `make install`. swift-argument-parser's own generate-manual plugin does the same, but it
// rebuilds the whole package in release mode each time it runs, and its ToolInfo types are not a
// library product; this reads the few fields a man page needs.
import Foundation

struct ToolInfo: Decodable {
    var command: Command
}

struct Command: Decodable {
    var commandName: String
    var superCommands: [String]?
    var abstract: String?
    var discussion: String?
    var shouldDisplay: Bool?
    var subcommands: [Command]?
    var arguments: [Argument]?
}

struct Argument: Decodable {
    struct Name: Decodable {
        var kind: String
        var name: String
    }

    var kind: String
    var shouldDisplay: Bool
    var isOptional: Bool
    var isRepeating: Bool
    var names: [Name]?
    var valueName: String?
    var defaultValue: String?
    var abstract: String?
    var allValueStrings: [String]?
}

/// Escapes text for roff: backslashes, and a leading dot or quote that would read as a request.
func roff(_ text: String) -> String {
    text.replacingOccurrences(of: "\\", with: "\\e").split(separator: "\n", omittingEmptySubsequences: false)
        .map { line in line.hasPrefix(".") || line.hasPrefix("'") ? "\\&" + line : String(line) }
        .joined(separator: "\n")
}

func flag(_ name: Argument.Name) -> String {
    (name.kind == "short" ? "\\-" : "\\-\\-") + name.name.replacingOccurrences(of: "-", with: "\\-")
}

func render(_ argument: Argument) -> String? {
    guard argument.shouldDisplay, !(argument.names ?? []).contains(where: { $0.name == "help" }) else { return nil }
    var head: String
    if argument.kind == "positional" {
        head = "\\fI\(argument.valueName ?? "value")\\fR"
    } else {
        head = (argument.names ?? []).map { "\\fB\(flag($0))\\fR" }.joined(separator: ", ")
        if argument.kind == "option" { head += " \\fI\(argument.valueName ?? "value")\\fR" }
    }
    if argument.isRepeating { head += " ..." }
    var body = roff(argument.abstract ?? "")
    if let values = argument.allValueStrings, !values.isEmpty { body += " (one of: \(values.joined(separator: ", ")))" }
    if let value = argument.defaultValue, !value.isEmpty { body += " (default: \(roff(value)))" }
    return ".TP\n\(head)\n\(body)"
}

func section(_ command: Command, path: [String]) -> [String] {
    var lines: [String] = []
    let options = (command.arguments ?? []).compactMap(render)
    if !path.isEmpty {
        lines.append(".SS \"\(path.joined(separator: " "))\"")
        if let abstract = command.abstract { lines.append(roff(abstract)) }
        if let discussion = command.discussion, !discussion.isEmpty {
            lines += [".PP", ".nf", roff(discussion), ".fi"]
        }
    }
    lines += options
    for sub in command.subcommands ?? [] where sub.shouldDisplay ?? true && sub.commandName != "help" {
        lines += section(sub, path: (path.isEmpty ? [command.commandName] : path) + [sub.commandName])
    }
    return lines
}

let arguments = CommandLine.arguments
let sectionNumber =
    arguments.firstIndex(of: "--section").flatMap { arguments.indices.contains($0 + 1) ? arguments[$0 + 1] : nil }
    ?? "1"
let input = FileHandle.standardInput.readDataToEndOfFile()
guard let tool = try? JSONDecoder().decode(ToolInfo.self, from: input) else {
    FileHandle.standardError.write(Data("casevault-manual: standard input is not --experimental-dump-help JSON\n".utf8))
    exit(1)
}
let command = tool.command
let name = command.commandName
var page = [
    ".TH \(name.uppercased()) \(sectionNumber) \"\" \"CaseVault\" \"\(sectionNumber == "8" ? "System Administration" : "User Commands")\"",
    ".SH NAME", "\(name) \\- \(roff(command.abstract ?? ""))",
    ".SH SYNOPSIS", ".B \(name)",
    (command.subcommands ?? []).isEmpty ? "[\\fIoptions\\fR]" : "\\fIcommand\\fR [\\fIoptions\\fR]",
]
if let discussion = command.discussion, !discussion.isEmpty {
    page += [".SH DESCRIPTION", ".nf", roff(discussion), ".fi"]
}
let options = (command.arguments ?? []).compactMap(render)
if !options.isEmpty { page += [".SH OPTIONS"] + options }
let subcommands = (command.subcommands ?? []).filter { $0.shouldDisplay ?? true && $0.commandName != "help" }
if !subcommands.isEmpty {
    page.append(".SH COMMANDS")
    for sub in subcommands { page += section(sub, path: [name, sub.commandName]) }
}
page += [
    ".SH SEE ALSO",
    "casevaultd(8), casevaultctl(1); the README and docs/openapi.yaml, installed under share/doc/casevault",
]
print(page.joined(separator: "\n"))

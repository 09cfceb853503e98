import Foundation
import Testing

/// The units in systemd/, checked by systemd's own tools: `systemd-analyze verify` on each, and the
/// service's exposure score from `systemd-analyze security --offline=true`.
@Suite("systemd units")
struct SystemdUnitTests {
    static let units = DaemonConfigurationTests.repository.appendingPathComponent("systemd")
    static let binaries = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .path

    static func analyze(_ arguments: [String], in directory: String) throws -> (status: Int32, output: String) {
        try Command.run("/usr/bin/systemd-analyze", arguments, in: directory)
    }

    /// The units copied to a private folder, with the installed binaries' paths pointed at this build's.
    static func staged() throws -> (directory: String, units: [String]) {
        let directory = NSTemporaryDirectory() + "casevault-units-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var units: [String] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: Self.units.path).sorted()
        where [".service", ".timer", ".socket"].contains(where: name.hasSuffix) {
            let text = try String(contentsOf: Self.units.appendingPathComponent(name), encoding: .utf8)
                .replacingOccurrences(of: "/usr/local/bin/", with: Self.binaries + "/")
            try text.write(toFile: directory + "/" + name, atomically: true, encoding: .utf8)
            units.append(name)
        }
        return (directory, units)
    }

    @Test("every unit passes systemd-analyze verify")
    func verify() throws {
        let (directory, units) = try Self.staged()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(units.contains("casevault.service") && units.contains("casevault-sweep.timer"))
        for unit in units {
            let (status, output) = try Self.analyze(["verify", "--man=no", unit], in: directory)
            #expect(status == 0 && output.isEmpty, "\(unit): \(output)")
        }
    }

    @Test("casevault.service's exposure score is at most 1.0")
    func exposure() throws {
        let (directory, _) = try Self.staged()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (status, output) = try Self.analyze(
            ["security", "--offline=true", "--no-pager", "casevault.service"], in: directory)
        #expect(status == 0, "\(output)")
        let line = output.split(separator: "\n").first { $0.contains("Overall exposure level") } ?? ""
        let score = line.split(separator: ":").last?.split(separator: " ").first.flatMap { Double($0) }
        #expect(score != nil && score! <= 1.0, "\(line)")
    }
}

/// Runs a command to its end: its exit status and its standard output and error together.
enum Command {
    static func run(_ executable: String, _ arguments: [String], in directory: String? = nil) throws -> (
        status: Int32, output: String
    ) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}

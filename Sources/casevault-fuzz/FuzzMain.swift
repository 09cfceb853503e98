internal import CaseVaultFuzz
internal import Foundation

#if canImport(Glibc)
internal import Glibc
#endif

/// The target this process feeds: `CASEVAULT_FUZZ_TARGET`, read once. A missing or unknown name prints the
/// targets and exits with status 2.
let selectedTarget: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["CASEVAULT_FUZZ_TARGET"] ?? ""
    if let target = FuzzTargets.named(name) {
        return target
    }
    var text =
        name.isEmpty
        ? "casevault-fuzz: set CASEVAULT_FUZZ_TARGET to one of the targets:\n"
        : "casevault-fuzz: there is no fuzz target \(name); the targets are:\n"
    for target in FuzzTargets.all {
        text += "  \(target.name): \(target.summary)\n"
    }
    FuzzMain.complain(text)
    exit(2)
}()

/// libFuzzer's entry point: one input for the selected target. Always 0; a finding is a crash, a trap, a
/// hang or a leak, never a status.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    selectedTarget.run(input)
    return 0
}

/// The program built without libFuzzer: a replay of files.
enum FuzzMain {
    /// Replays the files and directories named on the command line through the selected target and
    /// exits: status 0 when every input ran, 1 when one could not be read, 2 when none was named.
    static func run() -> Never {
        exit(Self.replay(selectedTarget, Array(CommandLine.arguments.dropFirst())))
    }

    /// Feeds each file of `arguments` (each file of a directory, in name order) to `target`; arguments
    /// that begin with `-` (libFuzzer's flags) are ignored.
    static func replay(_ target: FuzzTarget, _ arguments: [String]) -> Int32 {
        let paths = arguments.filter { !$0.hasPrefix("-") }
        guard !paths.isEmpty else {
            Self.complain(
                "casevault-fuzz: linked without libFuzzer (built without --sanitize=fuzzer); scripts/fuzz.sh (make fuzz) "
                    + "builds it with it. This build replays inputs: CASEVAULT_FUZZ_TARGET=NAME casevault-fuzz FILE|DIRECTORY..."
            )
            return 2
        }
        var files: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                Self.complain("casevault-fuzz: no such file: \(path)")
                return 1
            }
            if isDirectory.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                files += names.filter { !$0.hasPrefix(".") }.sorted().map { path + "/" + $0 }
            } else {
                files.append(path)
            }
        }
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                Self.complain("casevault-fuzz: cannot read \(file)")
                return 1
            }
            target.run([UInt8](data))
        }
        print("casevault-fuzz: \(target.name): \(files.count) input(s) replayed")
        return 0
    }

    /// `message` on standard error.
    static func complain(_ message: String) {
        FileHandle.standardError.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
    }
}

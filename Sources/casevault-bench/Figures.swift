import Foundation

/// The figures `make bench` sums up at the end (`scripts/bench-summary.sh`): each measurement that has a
/// goal in issue 17's table is appended, as `name value`, to the file `CASEVAULT_BENCH_FIGURES` names,
/// which `scripts/bench-socket.sh` appends to in the same run. Without the variable nothing is written.
enum Figures {
    static func record(_ name: String, _ value: Double) {
        guard let path = ProcessInfo.processInfo.environment["CASEVAULT_BENCH_FIGURES"], !path.isEmpty else { return }
        guard let file = FileHandle(forUpdatingAtPath: path) ?? Self.create(path) else { return }
        defer { try? file.close() }
        _ = try? file.seekToEnd()
        try? file.write(contentsOf: Data(String(format: "%@ %.6f\n", name, value).utf8))
    }

    private static func create(_ path: String) -> FileHandle? {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        return FileHandle(forUpdatingAtPath: path)
    }
}

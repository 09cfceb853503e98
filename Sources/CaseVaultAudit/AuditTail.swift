public import CaseVaultCore
internal import CaseVaultFiles

#if canImport(Glibc)
internal import Glibc
#endif

/// The last entries of an audit log, oldest first, for `casevaultctl audit tail`: read backwards from the
/// end of the written bytes of `log` (the file is zero-filled after them), and on into the rotated files
/// before it when `log` holds fewer; whole lines only, so a batch being written is left out until it is
/// whole. A view of the log, not a check of it: `audit verify` checks the chain and the signatures.
public enum AuditTail {
    public static let defaultCount = 20
    public static let maxCount = 1000

    /// The last `count` entries of the log in `directory`.
    public static func read(directory: String, count: Int) throws(CaseVaultError) -> [AuditEntry] {
        let files = try AuditFiles.list(directory)
        guard !files.isEmpty else {
            throw CaseVaultError(.notFound, "no audit log in \(directory)")
        }
        var entries: [AuditEntry] = []
        for file in files.reversed() where entries.count < count {
            entries = try Self.read(logAt: directory + "/" + file.name, count: count - entries.count) + entries
        }
        return entries
    }

    static func read(logAt path: String, count: Int) throws(CaseVaultError) -> [AuditEntry] {
        let file = try PosixFile(path: path, flags: O_RDONLY)
        let size = try file.size()
        var window: Int64 = 64 << 10
        while true {
            let start = max(0, size - window)
            let bytes = try file.read(count: Int(size - start), at: start)
            let end = bytes.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? bytes.startIndex
            var lines = bytes[..<end].split(separator: UInt8(ascii: "\n")).filter { $0.first != 0 }
            // The window's first line may begin before it.
            if start > 0, !lines.isEmpty { lines.removeFirst() }
            if lines.count >= count || start == 0 {
                return try lines.suffix(count).map { line throws(CaseVaultError) in
                    guard let parsed = AuditLine.parse(line) else {
                        throw CaseVaultError(
                            .integrityFailure,
                            "an entry near the end of the audit log cannot be read; run casevaultctl audit verify"
                        )
                    }
                    return parsed.entry
                }
            }
            window *= 4
        }
    }
}

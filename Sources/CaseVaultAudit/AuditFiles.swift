public import CaseVaultCore
internal import CaseVaultFiles
internal import Foundation

#if canImport(Glibc)
internal import Glibc
#endif

/// The files of the audit log in its directory (docs/API.md: the log rotates, and the chain continues
/// across files). `log` is the file being written; each file the log rotated away from is
/// `log.<first entry's number, 20 digits>`, so that names sort as the chain runs. Every file after the
/// first begins with a signed `rotate` checkpoint that carries the hash of the entry before it and the
/// first entry the log still keeps. Files set aside after an accepted break (`log.broken-…`) or by a start
/// after a power cut (`log.torn-…`, `log.broken-…`) and a file being prepared (`log.new`) are not part of the
/// log.
public enum AuditFiles {
    public static let current = "log"
    /// The next file while a rotation prepares it: whole and flushed before it is renamed to `log`.
    static let prepared = "log.new"
    static let prefix = "log."
    static let digits = 20

    /// A file of the log: its name in the directory and, for a rotated file, its first entry's number.
    public struct File: Sendable, Equatable {
        public var name: String
        /// `nil` for `log`, the file being written.
        public var first: UInt64?
    }

    /// An end a power cut tore, set aside by open: `log.torn-<time>-after-<entry>`, and `….recorded` once
    /// an attach has recorded its break in the log.
    static let tornPrefix = "log.torn-"
    static let recordedSuffix = ".recorded"

    /// The torn ends set aside whose break is not recorded yet, oldest first, with the entry each came after.
    static func unrecordedTornEnds(_ directory: String) throws(CaseVaultError) -> [(name: String, after: UInt64)] {
        try Self.names(directory).filter { $0.hasPrefix(Self.tornPrefix) && !$0.hasSuffix(Self.recordedSuffix) }
            .sorted().map { name in
                (name, name.components(separatedBy: "-after-").last.flatMap { UInt64($0) } ?? 0)
            }
    }

    static func archiveName(first: UInt64) -> String {
        let number = String(first)
        return prefix + String(repeating: "0", count: max(0, digits - number.count)) + number
    }

    /// Every name in the audit directory.
    private static func names(_ directory: String) throws(CaseVaultError) -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw CaseVaultError(.storageFailure, "cannot list the audit directory \(directory)")
        }
    }

    /// The first entry's number a rotated file's name gives, or `nil` for any other name.
    static func archiveFirst(_ name: String) -> UInt64? {
        guard name.hasPrefix(prefix), name.utf8.count == prefix.utf8.count + digits else { return nil }
        let number = name.dropFirst(prefix.count)
        guard number.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
        return UInt64(number)
    }

    /// The log's files in the order of the chain: the rotated ones by their first entry, then `log` when it
    /// exists.
    public static func list(_ directory: String) throws(CaseVaultError) -> [File] {
        let names = try Self.names(directory)
        var files = names.compactMap { name in Self.archiveFirst(name).map { File(name: name, first: $0) } }
        files.sort { ($0.first ?? 0) < ($1.first ?? 0) }
        if names.contains(Self.current) { files.append(File(name: Self.current, first: nil)) }
        return files
    }

    /// The last whole line of `file` (zero-filled past its entries), or `nil` when it holds none.
    static func lastLine(_ file: PosixFile) throws(CaseVaultError) -> AuditLine.Parsed? {
        let size = try file.size()
        var window: Int64 = 16 << 10
        while true {
            let start = max(0, size - window)
            let bytes = try file.read(count: Int(size - start), at: start)
            if let last = bytes.lastIndex(where: { $0 != 0 }), bytes[last] == UInt8(ascii: "\n") {
                let lineStart = bytes[..<last].lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 }
                if let lineStart { return AuditLine.parse(bytes[lineStart..<last]) }
                if start == 0 { return AuditLine.parse(bytes[..<last]) }
            } else if start == 0 || bytes.contains(where: { $0 != 0 }) {
                return nil
            }
            window *= 4
        }
    }

    /// The first whole line of `file`, or `nil` when the file holds none.
    static func firstLine(_ file: PosixFile) throws(CaseVaultError) -> AuditLine.Parsed? {
        var count = 4096
        let size = try file.size()
        while true {
            let bytes = try file.read(count: Int(min(Int64(count), size)), at: 0)
            if let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) {
                return AuditLine.parse(bytes[..<newline])
            }
            if Int64(bytes.count) >= size { return nil }
            count *= 4
        }
    }
}

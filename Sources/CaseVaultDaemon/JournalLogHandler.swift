internal import Foundation
public import Logging

#if canImport(Glibc)
internal import Glibc
#endif

/// Log lines for systemd's journal: `<priority>message key=value …` on standard error, one line each,
/// without a timestamp or a level word (journald adds the time, and reads the priority from the `<N>`
/// prefix). Used when standard error is the journal stream (`JOURNAL_STREAM` names its device and inode);
/// on a terminal the daemon keeps swift-log's stream handler.
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    public init() {}

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    /// syslog(3) priorities, as journald maps them.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    public func log(event: LogEvent) {
        var fields = self.metadata
        if let provided = self.metadataProvider?.get() { fields.merge(provided) { $1 } }
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        let pairs = fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        // One line per entry: a newline inside a message would split it into two journal entries.
        let text = "\(event.message)".replacingOccurrences(of: "\n", with: " ")
        var line = Array("<\(Self.priority(event.level))>\(text)\(pairs.isEmpty ? "" : " " + pairs)\n".utf8)
        _ = line.withUnsafeMutableBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    /// Whether standard error is the journal's stream, as systemd says in JOURNAL_STREAM (`device:inode`).
    public static func standardErrorIsJournal() -> Bool {
        guard let stream = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] else { return false }
        let parts = stream.split(separator: ":")
        var info = stat()
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]),
            fstat(STDERR_FILENO, &info) == 0
        else {
            return false
        }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }
}

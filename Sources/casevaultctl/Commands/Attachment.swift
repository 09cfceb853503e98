import ArgumentParser
import CCaseVaultShims
import CaseVaultCore
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    struct Attachment: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A record's attachment (a signed PDF scan): upload it once, download it, streamed.",
            discussion: """
                Both directions stream in pieces, so casevaultctl's memory stays flat whatever the size; on \
                a terminal a progress line shows on standard error. Whoever may file the record may attach \
                to it; whoever may read it may download it.
                """,
            subcommands: [Put.self, Get.self]
        )

        struct Put: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Upload FILE as the record's attachment.")

            @Argument(help: "The record id.") var recordID: String
            @Argument(help: "The file to upload.", completion: .file()) var file: String
            @Option(help: "Its media type. Default: application/pdf for .pdf, else application/octet-stream.")
            var mediaType: String?
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(RecordID.self, self.recordID, "a record id")
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let descriptor = open(self.file, O_RDONLY | O_CLOEXEC)
                    guard descriptor >= 0 else {
                        throw CLIError.unreadable("cannot read \(self.file): \(String(cString: strerror(errno)))")
                    }
                    defer { close(descriptor) }
                    var info = stat()
                    guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
                        throw CLIError.unreadable("\(self.file) is not a plain file")
                    }
                    let mediaType =
                        self.mediaType
                        ?? (self.file.lowercased().hasSuffix(".pdf") ? "application/pdf" : "application/octet-stream")
                    let progress = TransferProgress(total: Int64(info.st_size), verb: "sent")
                    let reply = try await self.connection.client().upload(
                        .PUT, "/v1/records/\(self.recordID)/attachment", file: descriptor, length: Int64(info.st_size),
                        mediaType: mediaType, progress: { progress.update($0) })
                    progress.finish()
                    guard reply.status == 201 else { throw CLIError.from(reply) }
                    output(
                        json: self.connection.json, document: reply.json,
                        rows: [
                            ("record", reply.json["record_id"] as? String ?? self.recordID),
                            ("media type", reply.json["media_type"] as? String ?? mediaType),
                            ("bytes", String(reply.json["size"] as? Int ?? Int(info.st_size))),
                        ])
                }
            }
        }

        struct Get: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Download the record's attachment into FILE (- for standard output).",
                discussion: """
                    The bytes go to a file beside FILE and take its name only once all of them have \
                    arrived and checked out, so a download cut short leaves no partial FILE.
                    """
            )

            @Argument(help: "The record id.") var recordID: String
            @Option(help: "Where to write it, or - for standard output.", completion: .file()) var out: String
            @OptionGroup var connection: Connection

            func validate() throws {
                try requireID(RecordID.self, self.recordID, "a record id")
            }

            func run() async throws {
                try await runReporting { () throws(CLIError) in
                    let client = try self.connection.client()
                    let target = try DownloadTarget(self.out)
                    var finished = false
                    defer { if !finished { target.discard() } }
                    let progress = TransferProgress(total: nil, verb: "received")
                    var received: Int64 = 0
                    let reply = try await client.stream(.GET, "/v1/records/\(self.recordID)/attachment") { piece in
                        try target.write(piece.readableBytesView)
                        received += Int64(piece.readableBytes)
                        progress.update(received)
                    }
                    progress.finish()
                    guard reply.status == 200 else { throw CLIError.from(reply) }
                    try target.commit()
                    finished = true
                    if self.out != "-" {
                        output(
                            json: self.connection.json,
                            document: ["record_id": self.recordID, "file": self.out, "size": received],
                            rows: [("record", self.recordID), ("file", self.out), ("bytes", String(received))])
                    }
                }
            }
        }
    }
}

/// Where a download goes: standard output, or a file without a name (O_TMPFILE) in the named file's
/// directory, which takes the name once the download is whole and flushed; a download cut short, even by
/// SIGKILL, leaves nothing. Where the filesystem cannot make a file without a name, a hidden named one
/// (mode 0600) stands in. SIGTERM, SIGHUP and SIGINT remove any name the download has before it is whole
/// (the stand-in's, or the hidden name the whole file takes for the moment before its rename); only
/// SIGKILL in that moment, or at any time for a stand-in, leaves a hidden `.casevaultctl-download-` file.
final class DownloadTarget {
    let path: String?
    private(set) var descriptor: Int32
    /// The name to remove if the download stops: the stand-in's, or the hidden name before the rename.
    private let pending = PendingName()
    private var signals: StopSignals?

    init(_ path: String) throws(CLIError) {
        guard path != "-" else {
            (self.path, self.descriptor) = (nil, STDOUT_FILENO)
            return
        }
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR {
            throw CLIError.usage("--out \(path) is a directory: name the file to write in it")
        }
        self.path = path
        self.descriptor = -1
        let pending = self.pending
        self.signals = StopSignals { signal in
            if let name = pending.name.withLock({ $0 }) { unlink(name) }
            let stopped = CLIError.stopped(signal, "the part downloaded was removed")
            FileHandle.standardError.write(Data("casevaultctl: \(stopped.message)\n".utf8))
            exit(stopped.exitCode)
        }
        let directory = Self.directory(of: path)
        let unnamed = casevault_open_unnamed(directory, 0o600)
        if unnamed >= 0 {
            self.descriptor = unnamed
            return
        }
        var template = Array((directory + "/.casevaultctl-download-XXXXXX").utf8CString)
        let descriptor = mkstemp(&template)
        guard descriptor >= 0, fcntl(descriptor, F_SETFD, FD_CLOEXEC) == 0 else {
            throw CLIError.unwritable("cannot write in \(directory): \(String(cString: strerror(errno)))")
        }
        self.descriptor = descriptor
        self.pending.name.withLock { $0 = cString(template) }
    }

    static func directory(of path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        return directory.isEmpty ? "." : directory
    }

    func write(_ bytes: some Collection<UInt8>) throws {
        var remaining = Array(bytes)[...]
        while !remaining.isEmpty {
            let written = remaining.withUnsafeBytes { Glibc.write(self.descriptor, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else {
                throw CLIError.unwritable(
                    "cannot write \(self.path ?? "standard output"): \(String(cString: strerror(errno)))")
            }
            remaining = remaining.dropFirst(written)
        }
    }

    /// The download is whole: the file is flushed and takes its name (replacing a file of that name).
    func commit() throws(CLIError) {
        guard let path else { return }
        guard fsync(self.descriptor) == 0 else { throw Self.failure("cannot write \(path)") }
        if self.pending.name.withLock({ $0 }) == nil {
            // A name of its own beside the target first: linkat does not replace, rename does. The name is
            // pending before it exists, so that a signal between the two removes it.
            for attempt in 0..<8 {
                let candidate = Self.directory(of: path) + "/.casevaultctl-download-\(getpid())-\(attempt)"
                self.pending.name.withLock { $0 = candidate }
                if casevault_link_unnamed(self.descriptor, candidate) == 0 { break }
                self.pending.name.withLock { $0 = nil }
                guard errno == EEXIST else { break }
            }
        }
        guard let named = self.pending.name.withLock({ $0 }) else { throw Self.failure("cannot name \(path)") }
        guard rename(named, path) == 0 else { throw Self.failure("cannot write \(path)") }
        self.pending.name.withLock { $0 = nil }
        close(self.descriptor)
        self.descriptor = -1
        self.signals?.restore()
    }

    private static func failure(_ what: String) -> CLIError {
        CLIError.unwritable("\(what): \(String(cString: strerror(errno)))")
    }

    /// The download failed: nothing of it is left.
    func discard() {
        guard self.path != nil else { return }
        if self.descriptor >= 0 { close(self.descriptor) }
        self.descriptor = -1
        if let name = self.pending.name.withLock({ $0 }) { unlink(name) }
        self.pending.name.withLock { $0 = nil }
        self.signals?.restore()
    }
}

/// The name a download has on disk before it is whole, shared with the signal handler that removes it.
final class PendingName: Sendable {
    let name = Mutex<String?>(nil)
}

/// A transfer's progress on standard error, only when it is a terminal: at most ten updates a second.
final class TransferProgress: Sendable {
    let total: Int64?
    let verb: String
    let shown = Mutex<(time: UInt64, shown: Bool)>((0, false))
    let enabled = isatty(STDERR_FILENO) == 1

    init(total: Int64?, verb: String) {
        self.total = total
        self.verb = verb
    }

    func update(_ done: Int64) {
        guard self.enabled else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        let due = self.shown.withLock { state in
            guard now - state.time >= 100_000_000 || done == self.total else { return false }
            state = (now, true)
            return true
        }
        guard due else { return }
        var line = "\r\(Self.size(done)) \(self.verb)"
        if let total = self.total, total > 0 {
            let percent = Int(done * 100 / total)
            let bar = String(repeating: "#", count: percent / 4) + String(repeating: ".", count: 25 - percent / 4)
            line = "\r[\(bar)] \(percent)%  \(Self.size(done)) of \(Self.size(total)) \(self.verb)"
        }
        FileHandle.standardError.write(Data((line + "\u{1B}[K").utf8))
    }

    func finish() {
        guard self.enabled, self.shown.withLock({ $0.shown }) else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }

    static func size(_ bytes: Int64) -> String {
        bytes < 1 << 20 ? "\(bytes / 1024) KiB" : String(format: "%.1f MiB", Double(bytes) / Double(1 << 20))
    }
}

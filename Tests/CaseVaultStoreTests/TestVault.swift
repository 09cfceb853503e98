import CaseVaultCore
import CaseVaultSealing
import CaseVaultStore
import Foundation
import GRDB
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A fresh data directory and key file under a private temporary folder, removed at deinit.
final class TestVault {
    let root: String
    var data: String { self.root + "/data" }
    var key: String { self.root + "/keys/root.key" }

    /// A vault in a new private folder under `parent` (default: the temporary directory).
    init(under parent: String = NSTemporaryDirectory()) {
        var template = Array((parent + "/casevault-test-XXXXXX").utf8CString)
        let path = template.withUnsafeMutableBufferPointer { buffer in mkdtemp(buffer.baseAddress!) }
        precondition(path != nil, "mkdtemp failed")
        self.root = String(cString: path!)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: self.root)
    }

    func configuration(maxContentBytes: Int = 1 << 20) -> StoreConfiguration {
        StoreConfiguration(
            dataDirectory: URL(fileURLWithPath: self.data),
            rootKeyFile: URL(fileURLWithPath: self.key),
            maxContentBytes: maxContentBytes
        )
    }

    func open(maxContentBytes: Int = 1 << 20) throws(CaseVaultError) -> RecordStore {
        try RecordStore.open(self.configuration(maxContentBytes: maxContentBytes), logger: Logger(label: "test"))
    }

    /// Opens the store on `clock`, with `configure` applied to its configuration.
    func open(clock: TestClock, configure: (inout StoreConfiguration) -> Void = { _ in }) throws(CaseVaultError)
        -> RecordStore
    {
        var configuration = self.configuration()
        configuration.clock = clock.reading
        configure(&configuration)
        return try RecordStore.open(configuration, logger: Logger(label: "test"))
    }

    /// The size of the index's WAL in bytes (0 when there is none): a shred and a sweep leave it empty.
    var indexWALBytes: Int {
        (try? FileManager.default.attributesOfItem(atPath: self.data + "/index.sqlite-wal")[.size] as? Int) ?? 0
    }

    /// Every regular file under the data directory, with its bytes.
    func files() -> [String: [UInt8]] {
        var result: [String: [UInt8]] = [:]
        let enumerator = FileManager.default.enumerator(atPath: self.data)
        while let relative = enumerator?.nextObject() as? String {
            let path = self.data + "/" + relative
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
                let bytes = FileManager.default.contents(atPath: path)
            {
                result[relative] = Array(bytes)
            }
        }
        return result
    }

    /// Names of files under the data directory that contain `needle` anywhere.
    func filesContaining(_ needle: [UInt8]) -> [String] {
        self.files().filter { $0.value.contains(subsequence: needle) }.map(\.key).sorted()
    }
}

/// Holds the commit of the first put batch to reach `put.before-commit` once armed, until the next batch has
/// flushed (`put.after-flush`), 10 s at most: a store's crash point observer (`reached`), for tests of put
/// batches whose stages overlap.
final class CommitHold: Sendable {
    private enum Phase { case waiting, armed, holding, released, failed }
    private let phase: Mutex<Phase>
    private let nextFlushed = DispatchSemaphore(value: 0)
    private let overlap = Mutex(false)

    init(armed: Bool = true) {
        self.phase = Mutex(armed ? .armed : .waiting)
    }

    func arm() {
        self.phase.withLock { $0 = .armed }
    }

    /// Whether the hold has begun (it may be over).
    var hasHeld: Bool { self.phase.withLock { ![.waiting, .armed].contains($0) } }

    /// Whether the next batch flushed while the held one waited to commit.
    var overlapped: Bool { self.overlap.withLock { $0 } }

    func reached(_ point: CrashPoint) {
        let holds =
            point == .putBeforeCommit
            && self.phase.withLock { phase in
                guard phase == .armed else { return false }
                phase = .holding
                return true
            }
        if holds {
            let flushed = self.nextFlushed.wait(timeout: .now() + 10) == .success
            self.overlap.withLock { $0 = flushed }
            self.phase.withLock { $0 = .released }
        } else if point == .putAfterFlush, self.phase.withLock({ $0 == .holding }) {
            self.nextFlushed.signal()
        }
    }

    /// True once: for the held batch's commit, asked right after its hold (`StoreConfiguration.failingCommit`).
    func failsHeldCommit() -> Bool {
        self.phase.withLock { phase in
            guard phase == .released else { return false }
            phase = .failed
            return true
        }
    }
}

/// A clock the test sets: the store reads it wherever it would read the system's.
final class TestClock: Sendable {
    private let milliseconds: Mutex<Int64>

    init(_ start: Int64) {
        self.milliseconds = Mutex(start)
    }

    init(_ rfc3339: String) {
        self.milliseconds = Mutex(TestClock.parse(rfc3339))
    }

    var now: Int64 {
        get { self.milliseconds.withLock { $0 } }
        set { self.milliseconds.withLock { $0 = newValue } }
    }

    var reading: @Sendable () -> Int64 { { self.now } }

    /// An RFC 3339 time in milliseconds, read by Foundation (not by the code under test).
    static func parse(_ text: String) -> Int64 {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        guard let date = formatter.date(from: text) else { preconditionFailure("bad time in a test: \(text)") }
        return Int64((date.timeIntervalSince1970 * 1000).rounded())
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= self.count else { return needle.isEmpty }
        let first = needle[0]
        var index = 0
        while index <= self.count - needle.count {
            if self[index] == first && Array(self[index..<(index + needle.count)]) == needle {
                return true
            }
            index += 1
        }
        return false
    }
}

/// Sample content for each record type, carrying `marker` so tests can look for it on disk and in logs.
enum Samples {
    /// A session note marked `marker` filed in `caseID` through `store`'s vault, or the error it got: what a
    /// test's thread keeps for the test to look at.
    static func note(_ store: RecordStore, _ caseID: CaseID, marker: String) -> Result<RecordID, CaseVaultError> {
        Result { () throws(CaseVaultError) in
            try store.sealed.put(
                NewRecord(caseID: caseID, type: .sessionNote, content: Self.content(.sessionNote, marker: marker))
            ).id
        }
    }

    static func content(_ type: RecordType, marker: String) -> [UInt8] {
        let json: String
        switch type {
        case .intakeForm:
            json = #"{"dispute_category":"roommate","screening_notes":"\#(marker)"}"#
        case .agreementToMediate:
            json = #"""
                {"participant":"p1","signed_at":"2026-03-01T14:00:00Z","method":"written","online":true,
                 "note":"\#(marker)",
                 "acknowledgements":{"confidentiality":true,"no_recording":true,"will_not_compel_mediator":true,
                 "will_not_discuss_outside":true,"devices_off":true,"nobody_else_present":true}}
                """#
        case .sessionNote, .debrief:
            json = #"{"text":"\#(marker)"}"#
        case .finalAgreement:
            json = #"{"terms":"\#(marker)","outcome":"resolved","outcome_confidential":true,"consents":["p1","p2"]}"#
        case .evaluation:
            json = #"{"satisfaction":4,"would_recommend":true,"comment":"\#(marker)"}"#
        case .disclosure:
            json = #"{"category":"discrimination","summary":"\#(marker)"}"#
        case .caseHeader:
            json = #"{"participants":[{"name":"\#(marker)"},{"name":"B"}]}"#
        }
        return Array(json.utf8)
    }

    static func caseID() -> CaseID {
        CaseID(bytes: (0..<16).map { _ in UInt8.random(in: 0...255) })
    }
}

/// The crash-test helper built beside the test bundle.
enum Helper {
    static var path: String {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return executable.deletingLastPathComponent().appendingPathComponent("casevault-torture").path
    }

    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try Command.run(Self.path, arguments)
    }

    /// The process that runs it with `arguments`, as `user` (uid and gid, through setpriv) if given.
    static func process(_ arguments: [String], as user: (uid: UInt32, gid: UInt32)?) -> Process {
        let process = Process()
        if let user {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments =
                ["--reuid", "\(user.uid)", "--regid", "\(user.gid)", "--clear-groups", Self.path] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: Self.path)
            process.arguments = arguments
        }
        return process
    }

    /// Runs it to its end as `user`, with `input` on its standard input; its standard output.
    static func run(_ arguments: [String], as user: (uid: UInt32, gid: UInt32), input: String) throws -> String {
        let process = Self.process(arguments, as: user)
        // The input in a file, so that neither pipe can fill while the other waits.
        let inputPath = NSTemporaryDirectory() + "/casevault-input-\(UUID().uuidString)"
        try input.write(toFile: inputPath, atomically: false, encoding: .utf8)
        defer { unlink(inputPath) }
        process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: inputPath))
        return try Command.finish(process, withErrors: true).output
    }

    /// Starts it with `arguments` (as `user`, if given), its standard output read line by line, and waits for
    /// its `ready` line.
    static func start(
        _ arguments: [String], as user: (uid: UInt32, gid: UInt32)? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> (Process, LineReader) {
        let process = Self.process(arguments, as: user)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let reader = LineReader(pipe.fileHandleForReading)
        #expect(reader.next() == "ready", "\(arguments.first ?? "") did not start", sourceLocation: sourceLocation)
        return (process, reader)
    }
}

/// A program run to its end: its exit status and standard output (standard error is dropped).
enum Command {
    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardError = FileHandle.nullDevice
        return try Self.finish(process)
    }

    /// Runs `process` to its end: its exit status and its standard output (`withErrors`: and its standard
    /// error, in the same stream).
    static func finish(_ process: Process, withErrors: Bool = false) throws -> (status: Int32, output: String) {
        let pipe = Pipe()
        process.standardOutput = pipe
        if withErrors { process.standardError = pipe }
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}

/// Where a record's sealed blob lies, read from the real index file.
struct BlobRegion {
    let path: String
    let offset: Int
    let length: Int

    init(vault: TestVault, id: RecordID) throws {
        var configuration = GRDB.Configuration()
        configuration.readonly = true
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite", configuration: configuration)
        let row = try index.read { db in
            try Row.fetchOne(
                db, sql: "SELECT segment, offset, sealed_size FROM records WHERE id = ?", arguments: [id.rawValue])
        }
        try index.close()
        guard let row else { throw CaseVaultError(.notFound, "no such record in the index") }
        let segment: Int = row[0]
        self.path = vault.data + "/segments/" + String(format: "%08d", segment)
        self.offset = row[1]
        self.length = row[2]
    }

    func read() throws -> [UInt8] {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: self.path))
        return Array(bytes[self.offset..<(self.offset + self.length)])
    }

    /// Replaces the region's bytes in place (same length) through the real file.
    func write(_ bytes: [UInt8]) throws {
        precondition(bytes.count == self.length)
        let handle = try Foundation.FileHandle(forUpdating: URL(fileURLWithPath: self.path))
        try handle.seek(toOffset: UInt64(self.offset))
        try handle.write(contentsOf: bytes)
        try handle.close()
    }
}

extension TestVault {
    /// Restores the backup `file` into `target` with this vault's keys and `keys`, re-applying `ledger`
    /// (and `ledgerCopy`, when given).
    func restore(
        _ file: [UInt8], into target: String, keys: BackupKeyFile, ledger: [ShredLedgerEntry] = [],
        ledgerCopy: ShredLedgerFile? = nil
    ) throws(CaseVaultError) -> RestoreSummary {
        var configuration = self.configuration()
        configuration.dataDirectory = URL(fileURLWithPath: target)
        var at = 0
        return try RecordStore.restore(
            read: { count in
                let piece = Array(file[at..<min(file.count, at + count)])
                at += piece.count
                return piece
            },
            into: configuration, passphrase: nil, keys: keys, ledger: ledger, ledgerCopy: ledgerCopy,
            logger: Logger(label: "test")
        )
    }
}

extension RecordStore {
    /// The store under its sealing layer, as the daemon composes them: what files and opens content.
    var sealed: Vault<RecordStore> { Vault(storage: self) }
}

// A writer process for crash tests: the tests start it, kill it with SIGKILL, and check what survived.
// Not installed; built only because the store's tests depend on it.
import ArgumentParser
import CCaseVaultShims
import CaseVaultCore
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct Torture: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "casevault-torture",
        abstract: "Crash-test helper for the CaseVault store (used by make test).",
        subcommands: [
            PutLoop.self, PutOne.self, Shred.self, FinalAgreement.self, Sweep.self, Rotate.self, RefuseExecGain.self,
            Listen.self,
            Trickle.self, SocketLoad.self, SocketCheck.self,
        ]
    )
}

struct StoreOptions: ParsableArguments {
    @Option(help: "The data directory.") var data: String
    @Option(help: "The root key file.") var key: String

    func open(
        crashAt: CrashPoint? = nil, after passes: Int = 0, configure: (inout StoreConfiguration) -> Void = { _ in }
    ) throws -> RecordStore {
        var configuration = StoreConfiguration(
            dataDirectory: URL(fileURLWithPath: self.data),
            rootKeyFile: URL(fileURLWithPath: self.key)
        )
        configure(&configuration)
        if let crashAt {
            let seen = Mutex(0)
            configuration.crashPointObserver = { point in
                guard point == crashAt else { return }
                if seen.withLock({ count in
                    count += 1
                    return count
                }) > passes {
                    kill(getpid(), SIGKILL)
                }
            }
        }
        return try RecordStore.open(configuration, logger: Logger(label: "casevault-torture"))
    }
}

/// How a command dies: at a crash point (after passing it `crashAfterPasses` times), or by SIGKILL a
/// given time after the store opened.
struct CrashOptions: ParsableArguments {
    @Option(help: "The crash point to die at.") var crashAt: String?
    @Option(help: "Pass the crash point this many times before dying.") var crashAfterPasses: Int = 0
    @Option(help: "Die by SIGKILL this many microseconds after the store opened.") var dieAfterMicroseconds: Int?

    func validate() throws {
        if let crashAt, CrashPoint(rawValue: crashAt) == nil { throw ValidationError("unknown crash point") }
    }
}

extension StoreOptions {
    /// Opens the store to die as `crash` says.
    func open(_ crash: CrashOptions, configure: (inout StoreConfiguration) -> Void = { _ in }) throws -> RecordStore {
        let store = try self.open(
            crashAt: crash.crashAt.flatMap(CrashPoint.init(rawValue:)), after: crash.crashAfterPasses,
            configure: configure
        )
        if let delay = crash.dieAfterMicroseconds {
            Thread {
                usleep(UInt32(delay))
                kill(getpid(), SIGKILL)
            }.start()
        }
        return store
    }
}

/// Writes one line with a single write(2), so lines from several threads never interleave in the pipe.
func emit(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeMutableBytes { write(1, $0.baseAddress, $0.count) }
}

extension Torture {
    struct PutLoop: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "put-loop",
            abstract:
                "Put records from several threads, and shred some, until killed; print each put and shred once it returned.",
            discussion: """
                Lines: `put <id> <text>` once a put returned; with --shred-every N, after every Nth put of a \
                writer the one before it is shredded: `shredding <id>` before (after a crash it may be \
                shredded or not) and `shred <id>` once it returned (it must be shredded). With --keep-going, \
                a refused put prints `failed put <code>` and a refused shred `failed shred <id> <code>`, and \
                the writer goes on.
                """
        )
        @OptionGroup var store: StoreOptions
        @Option(help: "The case id to file under.") var caseID: String
        @Option(help: "Concurrent writer threads.") var writers: Int = 4
        @Option(help: "Stop after this many puts per writer.") var count: Int = 1_000_000
        @Option(help: "After every this many puts of a writer, shred the one before last (0: never).") var shredEvery:
            Int = 0
        @Option(help: "A tag in the records' texts, so that runs on one vault never repeat a text.") var tag: String =
            "torture"
        @Flag(help: "Go on after a refused put or shred (a failing disk), printing it.") var keepGoing = false

        func run() throws {
            let store = try self.store.open()
            let vault = Vault(storage: store)
            let caseID = try CaseID(self.caseID)
            emit("ready")
            let (count, every, tag, keepGoing) = (self.count, self.shredEvery, self.tag, self.keepGoing)
            let threads = (0..<self.writers).map { writer in
                Thread {
                    var mine: [RecordID] = []
                    for n in 0..<count {
                        let text = "\(tag)-\(writer)-\(n)"
                        let content = Array(#"{"text":"\#(text)"}"#.utf8)
                        var shredding: RecordID?
                        do throws(CaseVaultError) {
                            let stored = try vault.put(NewRecord(caseID: caseID, type: .sessionNote, content: content))
                            emit("put \(stored.id) \(text)")
                            mine.append(stored.id)
                            if every > 0, n % every == every - 1, mine.count >= 2 {
                                let victim = mine.remove(at: mine.count - 2)
                                shredding = victim
                                emit("shredding \(victim)")
                                try store.shred(victim)
                                emit("shred \(victim)")
                            }
                        } catch {
                            guard keepGoing else {
                                emit("error \(error)")
                                Glibc.exit(3)
                            }
                            emit(
                                shredding.map { "failed shred \($0) \(error.code.rawValue)" }
                                    ?? "failed put \(error.code.rawValue)")
                            usleep(5_000)
                        }
                    }
                }
            }
            for thread in threads { thread.start() }
            while true { sleep(60) }
        }
    }

    struct PutOne: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "put-one",
            abstract: "Put one record, dying by SIGKILL at a crash point."
        )
        @OptionGroup var store: StoreOptions
        @Option(help: "The case id to file under.") var caseID: String
        @Option(help: "The crash point to die at.") var crashAt: String

        func run() throws {
            guard let point = CrashPoint(rawValue: self.crashAt) else { throw ValidationError("unknown crash point") }
            let store = try self.store.open(crashAt: point)
            let content = Array(#"{"text":"uncommitted"}"#.utf8)
            let stored = try Vault(storage: store).put(
                NewRecord(caseID: try CaseID(self.caseID), type: .sessionNote, content: content))
            emit("\(stored.id)")
        }
    }

    struct FinalAgreement: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "final-agreement",
            abstract: "File a final agreement into a case in session, dying at a crash point or after a delay."
        )
        @OptionGroup var store: StoreOptions
        @Option(help: "The case id.") var caseID: String
        @OptionGroup var crash: CrashOptions

        func run() throws {
            let store = try self.store.open(self.crash)
            let content = Array(
                #"{"terms":"t","outcome":"resolved","outcome_confidential":true,"consents":["p1","p2"]}"#.utf8)
            let filed = try Vault(storage: store).file(
                NewRecord(caseID: try CaseID(self.caseID), type: .finalAgreement, content: content))
            emit("filed \(filed.record.id)")
            usleep(1_000_000)
        }
    }

    struct Shred: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Shred records, dying by SIGKILL at a crash point.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var crash: CrashOptions
        @Argument(help: "Record ids.") var ids: [String]

        func run() throws {
            let store = try self.store.open(self.crash)
            try store.shred(self.ids.map { try RecordID($0) })
            emit("shredded")
        }
    }
}

extension Torture {
    struct Sweep: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a retention sweep at a given time, dying by SIGKILL at a crash point or after a delay."
        )
        @OptionGroup var store: StoreOptions
        @Option(help: "The store's clock: milliseconds since the Unix epoch.") var now: Int64
        @Option(help: "Records per batch.") var batch: Int = 1000
        @Option(help: "Records certified per section (ten times as many waiting rows removed).")
        var certificationSection: Int = RecordStore.shredSection
        @OptionGroup var crash: CrashOptions

        func run() throws {
            let (now, batch, section) = (self.now, self.batch, self.certificationSection)
            let store = try self.store.open(self.crash) { configuration in
                configuration.clock = { now }
                configuration.sweepBatch = batch
                configuration.certificationSection = section
            }
            let report = try store.sweep()
            emit("swept \(report.disposed)")
            if self.crash.dieAfterMicroseconds != nil { usleep(1_000_000) }
        }
    }
}

extension Torture {
    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rotate the key-encryption key, dying by SIGKILL at a crash point or after a delay."
        )
        @OptionGroup var store: StoreOptions
        @Option(help: "Slots per batch.") var batch: Int = 1000
        @OptionGroup var crash: CrashOptions

        func run() throws {
            let store = try self.store.open(self.crash)
            let report = try store.rotate(batch: self.batch)
            emit("rotated \(report.epoch) \(report.rewrapped) \(report.remaining)")
            if self.crash.dieAfterMicroseconds != nil { usleep(1_000_000) }
        }
    }
}

extension Torture {
    /// Runs a command under PR_SET_MDWE, the kernel's side of systemd's MemoryDenyWriteExecute=, so that a
    /// test shows the daemon runs with it (no systemd as PID 1 is needed).
    struct RefuseExecGain: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "refuse-exec-gain",
            abstract: "Exec a command that may never map memory writable and executable (PR_SET_MDWE)."
        )
        @Argument(parsing: .captureForPassthrough, help: "The command and its arguments.") var command: [String]

        func run() throws {
            guard let path = self.command.first else { throw ValidationError("name a command") }
            guard casevault_refuse_exec_gain() == 0 else {
                FileHandle.standardError.write(Data("PR_SET_MDWE failed: errno \(errno)\n".utf8))
                Glibc.exit(5)
            }
            var argv: [UnsafeMutablePointer<CChar>?] = self.command.map { strdup($0) } + [nil]
            execv(path, &argv)
            FileHandle.standardError.write(Data("exec failed: errno \(errno)\n".utf8))
            Glibc.exit(6)
        }
    }
}

extension Torture {
    /// A stranger's socket: listens on a path, accepts one connection, and appends whatever it receives to
    /// a file, so that a test can see what a client sent to a server it should not have trusted.
    struct Listen: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Listen on a Unix socket and record what one client sends.")
        @Argument(help: "The socket's path.") var path: String
        @Option(help: "The file that receives the bytes.") var record: String

        func run() throws {
            alarm(60)
            let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard withUnixAddress(self.path, { bind(listener, $0, $1) }) == 0, Glibc.listen(listener, 4) == 0 else {
                throw ValidationError("cannot listen on \(self.path)")
            }
            _ = FileManager.default.createFile(atPath: self.record, contents: nil)
            let output = try FileHandle(forWritingTo: URL(fileURLWithPath: self.record))
            let connection = accept(listener, nil, nil)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while connection >= 0 {
                let count = read(connection, &buffer, buffer.count)
                if count <= 0 { break }
                output.write(Data(buffer[..<count]))
            }
            try output.close()
        }
    }
}

extension Torture {
    /// A slow client: sends a request's head at once, then its body a byte at a time with a pause between
    /// bytes (or the whole request at once with --whole), and prints whatever comes back until the daemon
    /// closes the connection.
    struct Trickle: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send a request to a Unix socket slowly; print the answer.")
        @Argument(help: "The socket's path.") var path: String
        @Option(help: "The request line.") var request: String = "POST /v1/cases HTTP/1.1"
        @Option(help: "The body's declared length.") var contentLength: Int = 100_000
        @Option(help: "Milliseconds between body bytes.") var intervalMs: Int = 500
        @Flag(help: "Send a whole request with no body, then read.") var whole = false

        func run() throws {
            alarm(60)
            signal(SIGPIPE, SIG_IGN)
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard withUnixAddress(self.path, { connect(fd, $0, $1) }) == 0 else {
                throw ValidationError("cannot connect to \(self.path)")
            }
            let head =
                self.whole
                ? "\(self.request)\r\nHost: casevault\r\n\r\n"
                : "\(self.request)\r\nHost: casevault\r\nContent-Type: application/json\r\nContent-Length: \(self.contentLength)\r\n\r\n"
            _ = Array(head.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            // Bytes go out until the daemon answers or closes.
            let reader = Thread {
                var buffer = [UInt8](repeating: 0, count: 4096)
                while true {
                    let count = read(fd, &buffer, buffer.count)
                    if count <= 0 { break }
                    FileHandle.standardOutput.write(Data(buffer[..<count]))
                }
                Glibc.exit(0)
            }
            reader.start()
            if self.whole {
                while true { sleep(1) }
            }
            for _ in 0..<self.contentLength {
                var byte = UInt8(ascii: " ")
                if send(fd, &byte, 1, 0) != 1 { break }
                usleep(UInt32(self.intervalMs) * 1000)
            }
            while true { sleep(1) }
        }
    }
}

/// Calls `body` (bind or connect) with the address of the Unix socket at `path`.
func withUnixAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (index, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[index] = byte }
    }
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}

Torture.main()

import CaseVaultCore
import CaseVaultStore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// powercutfs (`Tests/support/powercutfs.c`, built by `make test` into `.build/powercutfs`) mounted over a
/// real directory: everything passes through, and unmounting it throws away what was not made durable
/// (file blocks not fsynced, names whose directory was not fsynced), as a power cut would.
final class PowerCutFS {
    let root: String
    var backing: String { self.root + "/backing" }
    var mountpoint: String { self.root + "/mnt" }
    private var process: Process?
    private var reader: LineReader?

    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["CASEVAULT_POWERCUTFS"] { return path }
        // .build/<triple>/debug/casevaultPackageTests.xctest → .build/powercutfs
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return executable.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("powercutfs").path
    }

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/casevault-powercut-XXXXXX").utf8CString)
        let path = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        // As the kernel spells it in /proc/self/mounts: no double slash.
        self.root = URL(fileURLWithPath: String(cString: try #require(path))).standardizedFileURL.path
        for name in ["backing", "stash", "mnt"] {
            try FileManager.default.createDirectory(atPath: self.root + "/" + name, withIntermediateDirectories: false)
        }
    }

    /// The failures the last cut's filesystem injected (`injected OP:PATH #N ERR`; `--fail`).
    private(set) var injected: [String] = []

    /// Mounts it; with `keep`, each lost block or size survives the next cut with that probability.
    /// `options` are more of powercutfs's own (`--fail`, `--census`).
    func mount(keep: Double = 0, seed: Int = 1, options: [String] = []) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments =
            [self.backing, self.root + "/stash", self.mountpoint, "--keep=\(keep)", "--seed=\(seed)"] + options
        let pipe = Pipe()
        process.standardOutput = pipe
        // What it cannot roll back it says on standard error: kept, and read at each cut.
        _ = FileManager.default.createFile(atPath: self.root + "/powercutfs.err", contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: self.root + "/powercutfs.err"))
        try process.run()
        let reader = LineReader(pipe.fileHandleForReading)
        #expect(reader.next() == "ready")
        for _ in 0..<500 where !self.isMounted {
            usleep(10_000)
        }
        guard self.isMounted else { throw CocoaError(.fileReadUnknown) }
        (self.process, self.reader) = (process, reader)
    }

    /// A vault in a new folder on the mounted filesystem, the folder's name made durable: everything under
    /// it is the store's to make durable, the folder itself is the test's.
    func newVault(sourceLocation: SourceLocation = #_sourceLocation) -> TestVault {
        let vault = TestVault(under: self.mountpoint)
        self.flushTop(sourceLocation: sourceLocation)
        return vault
    }

    /// fsyncs the mount's top directory.
    func flushTop(sourceLocation: SourceLocation = #_sourceLocation) {
        let top = open(self.mountpoint, O_RDONLY | O_DIRECTORY)
        #expect(fsync(top) == 0, sourceLocation: sourceLocation)
        close(top)
    }

    var isMounted: Bool {
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        return mounts.split(separator: "\n").contains { $0.hasPrefix("powercutfs \(self.mountpoint) fuse") }
    }

    /// The power cut: unmounts, and returns what the filesystem threw away ("cut: B blocks, F sizes, N names
    /// undone, E errors"). A filesystem that did not end well, or could not roll everything back, fails the
    /// test: it would have simulated less than a power cut.
    @discardableResult
    func cut(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        var unmounted = false
        for _ in 0..<100 where !unmounted {
            unmounted = try Command.run("/usr/bin/fusermount3", ["-u", self.mountpoint]).status == 0
            if !unmounted { usleep(50_000) }
        }
        if !unmounted {
            // Something still holds a file open on it: detach it, so that the test ends and says so.
            Issue.record("the power-cut filesystem stayed busy for 5 s; detached lazily")
            _ = try Command.run("/usr/bin/fusermount3", ["-u", "-z", self.mountpoint])
        }
        self.process?.waitUntilExit()
        var summary = ""
        self.injected = []
        while let line = self.reader?.next() {
            if line.hasPrefix("cut:") { summary = line }
            if line.hasPrefix("injected ") { self.injected.append(String(line.dropFirst(9))) }
        }
        #expect(
            self.process?.terminationStatus == 0, "powercutfs exited with \(self.process?.terminationStatus ?? -1)",
            sourceLocation: sourceLocation)
        #expect(summary.hasSuffix(" 0 errors"), "powercutfs: \(summary)", sourceLocation: sourceLocation)
        let complaints = (try? String(contentsOfFile: self.root + "/powercutfs.err", encoding: .utf8)) ?? ""
        #expect(complaints.isEmpty, "powercutfs: \(complaints)", sourceLocation: sourceLocation)
        (self.process, self.reader) = (nil, nil)
        return summary
    }

    /// Kills the filesystem without a cut, for a test that cannot let go of it (a loop device still attached
    /// to a file on it), so that the test ends rather than waits for an unmount that never comes.
    func abandon() {
        if let process = self.process {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        _ = try? Command.run("/usr/bin/fusermount3", ["-u", "-z", self.mountpoint])
        (self.process, self.reader) = (nil, nil)
    }

    deinit {
        if self.isMounted { _ = try? self.cut() }
        try? FileManager.default.removeItem(atPath: self.root)
    }
}

@Suite("Power cuts", .serialized, .enabled(if: geteuid() == 0, "mounting FUSE needs root"))
struct PowerCutTests {
    /// How many cuts `make test` makes; `make soak` sets more.
    static let cycles = Int(ProcessInfo.processInfo.environment["CASEVAULT_POWERCUT_CYCLES"] ?? "") ?? 30
    /// Whether every second cut reorders (`--keep=0.5`), as a disk may; `CASEVAULT_POWERCUT_REORDER=0`
    /// makes every cut strict.
    static let reorder = ProcessInfo.processInfo.environment["CASEVAULT_POWERCUT_REORDER"] != "0"

    @Test("the filesystem's cut throws away what was not flushed, and only that")
    func cutThrowsAwayWhatWasNotFlushed() throws {
        let fs = try PowerCutFS()
        try fs.mount()
        let m = fs.mountpoint
        func write(_ name: String, _ text: String, flush: Bool) throws {
            let fd = open(m + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            #expect(fd >= 0)
            _ = Array(text.utf8).withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if flush { #expect(fsync(fd) == 0) }
            close(fd)
        }
        func flushDirectory() {
            let fd = open(m, O_RDONLY | O_DIRECTORY)
            #expect(fsync(fd) == 0)
            close(fd)
        }
        try write("kept", "flushed, and its name too", flush: true)
        flushDirectory()
        try write("kept", "rewritten, not flushed", flush: false)
        try write("named-only", "flushed, but its name not", flush: true)
        try write("lost", "neither", flush: false)
        let summary = try fs.cut()
        #expect(summary.hasPrefix("cut: 1 blocks, 2 sizes, 2 names undone"), "\(summary)")
        #expect((try? String(contentsOfFile: fs.backing + "/kept", encoding: .utf8)) == "flushed, and its name too")
        #expect(!FileManager.default.fileExists(atPath: fs.backing + "/named-only"))
        #expect(!FileManager.default.fileExists(atPath: fs.backing + "/lost"))
    }

    @Test(
        "power cut at random moments while 16 writers put and shred: every acknowledged put reads back, no acknowledged shred comes back"
    )
    func cutsLoseNothingAcknowledged() throws {
        // A new base seed each run, printed, so that soaks do not replay the same cuts.
        let seed = Int.random(in: 0..<1_000_000)
        let fs = try PowerCutFS()
        try fs.mount()
        let vault = fs.newVault()
        let caseID = Samples.caseID()
        var ledger = Acknowledged()
        var summaries: [String] = []
        for cycle in 0..<Self.cycles {
            let (process, reader) = try Helper.start([
                "put-loop", "--data", vault.data, "--key", vault.key, "--case-id", caseID.rawValue, "--writers", "16",
                "--shred-every", "3", "--tag", "power-\(cycle)",
            ])
            usleep(UInt32.random(in: 20_000...300_000))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            // The power cut: half the cuts lose everything unsynced, half keep a random half of it.
            summaries.append(try fs.cut())
            let latest = ledger.absorb(reader, cycle: cycle).touched

            // The cut at the end of the next cycle: every second one keeps a random part of what was lost.
            try fs.mount(keep: Self.reorder && cycle % 2 == 0 ? 0.5 : 0, seed: seed + cycle)
            // The store opens without an operator; this cycle's puts and shreds hold (all of them at the end).
            do {
                let store = try vault.open()
                try ledger.expect(only: latest, in: store, vault: vault, cycle: cycle)
                ledger.settle(store)
                store.close()
            }
        }
        do {
            let store = try vault.open()
            try ledger.expect(in: store, vault: vault, cycle: Self.cycles)
            store.close()
        }
        try fs.cut()
        #expect(
            ledger.puts > Self.cycles && ledger.shreds > Self.cycles / 2,
            "\(ledger.puts) puts and \(ledger.shreds) shreds acknowledged: the load hardly ran")
        let lost = summaries.map { $0.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0 }.reduce(0, +)
        #expect(lost > 0, "no cut threw anything away: the simulation did nothing")
        print(
            "power cuts: \(Self.cycles) cuts (seed \(seed)), \(ledger.puts) puts and \(ledger.shreds) shreds acknowledged, \(lost) unsynced blocks thrown away; 0 lost, 0 resurrected unless reported above"
        )
    }
}

/// What `casevault-torture put-loop` acknowledged over several runs on one vault, and what a store opened
/// after any cut must show of it: every acknowledged put byte-identical, every acknowledged shred gone
/// with its key slot, and a shred under way (or refused) either way, never anything else.
struct Acknowledged {
    var live: [RecordID: String] = [:]
    var shredded: Set<RecordID> = []
    /// Records whose shred began but was not acknowledged: either outcome is right.
    var undecided: [RecordID: String] = [:]
    var puts = 0
    var shreds = 0
    /// `failed put <code>` and `failed shred <id> <code>` lines (with --keep-going).
    var refusals: [String] = []
    /// How many times each `did <action>` line came (socket-load's operator).
    var actions: [String: Int] = [:]

    /// Reads one run's lines to their end. Returns the ids the run put, shredded or began to shred, and
    /// `retried`: those whose shred failed while a later shred was acknowledged (which finishes it).
    @discardableResult
    mutating func absorb(_ reader: LineReader, cycle: Int) -> (touched: Set<RecordID>, retried: Set<RecordID>) {
        var putsNow: [(RecordID, String)] = []
        var shredsNow: [RecordID] = []
        var begun: [RecordID] = []
        var failedShreds: Set<RecordID> = []
        var retried: Set<RecordID> = []
        while let line = reader.next() {
            let parts = line.split(separator: " ")
            if parts.first == "error" { Issue.record("cycle \(cycle): the writer reported \(line)") }
            if parts.first == "did", parts.count == 2 {
                self.actions[String(parts[1]), default: 0] += 1
                continue
            }
            if parts.first == "failed" {
                self.refusals.append(line)
                // A refused shred is one under way: it may have been marked, and recovery finishes it.
                if parts.count == 4, parts[1] == "shred", let id = try? RecordID(String(parts[2])) {
                    begun.append(id)
                    failedShreds.insert(id)
                }
                continue
            }
            // A torn last line: its operation returned, but the kill cut the line; it counts as not acknowledged.
            guard parts.count >= 2, let id = try? RecordID(String(parts[1])) else { continue }
            if parts[0] == "put", parts.count == 3 { putsNow.append((id, String(parts[2]))) }
            if parts[0] == "shred", parts.count == 2 {
                shredsNow.append(id)
                retried.formUnion(failedShreds)
                failedShreds = []
            }
            if parts[0] == "shredding", parts.count == 2 { begun.append(id) }
        }
        for (id, text) in putsNow { self.live[id] = text }
        for id in begun where !shredsNow.contains(id) {
            if let text = self.live.removeValue(forKey: id) { self.undecided[id] = text }
        }
        for id in shredsNow {
            self.live[id] = nil
            self.undecided[id] = nil
            self.shredded.insert(id)
        }
        self.puts += putsNow.count
        self.shreds += shredsNow.count
        return (Set(putsNow.map(\.0)).union(shredsNow).union(begun), retried)
    }

    /// A shred that was under way is settled once the store has opened: what it reads is what must hold
    /// from here on.
    mutating func settle(_ store: RecordStore) {
        for (id, text) in self.undecided {
            if (try? store.sealed.get(id)) != nil { self.live[id] = text } else { self.shredded.insert(id) }
        }
        self.undecided = [:]
    }

    /// Checks the records of `only` (all, when nil) in `store`.
    func expect(only: Set<RecordID>? = nil, in store: RecordStore, vault: TestVault, cycle: Int) throws {
        let keep = { (id: RecordID) in only?.contains(id) ?? true }
        try PowerCutTests.expect(
            live: self.live.filter { keep($0.key) }, shredded: self.shredded.filter(keep),
            undecided: self.undecided.filter { keep($0.key) }, in: store, vault: vault, cycle: cycle
        )
    }
}

extension PowerCutTests {
    static func expect(
        live: [RecordID: String], shredded: Set<RecordID>, undecided: [RecordID: String], in store: RecordStore,
        vault: TestVault, cycle: Int
    ) throws {
        // A shred that was under way: the record reads back whole, or is shredded; never anything else.
        for (id, text) in undecided {
            do {
                let record = try store.sealed.get(id)
                #expect(
                    record.content == Array(#"{"text":"\#(text)"}"#.utf8),
                    "cycle \(cycle): \(id) came back with other content")
            } catch {
                #expect(error.code == .shredded, "cycle \(cycle): \(id), whose shred was under way: \(error)")
            }
        }
        for (id, text) in live {
            do {
                let record = try store.sealed.get(id)
                #expect(
                    record.content == Array(#"{"text":"\#(text)"}"#.utf8),
                    "cycle \(cycle): \(id) came back with other content")
            } catch {
                Issue.record("cycle \(cycle): acknowledged put \(id) is lost: \(error)")
            }
        }
        let slots = vault.files()["keyslots"] ?? []
        for id in shredded {
            do {
                _ = try store.sealed.get(id)
                Issue.record("cycle \(cycle): shredded record \(id) reads back")
            } catch {
                #expect(error.code == .shredded || error.code == .notFound, "cycle \(cycle): \(id): \(error)")
            }
            #expect(
                SlotFinder.slot(of: id, in: slots) == nil,
                "cycle \(cycle): the key slot of shredded \(id) is still in keyslots")
        }
    }
}

// `make bench`: durable put, get and shred throughput of the sealed store against the machine's ceiling
// (plain SQLite, synchronous=FULL, 100 rows a transaction, no encryption). Prints figures; asserts nothing.
import ArgumentParser
import CaseVaultCore
import CaseVaultCrypto
import CaseVaultFiles
import CaseVaultSealing
import CaseVaultStore
import Foundation
import GRDB
import Logging

#if canImport(Glibc)
import Glibc
#endif

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "casevault-bench",
        abstract: "Throughput of the CaseVault store, 4 KiB records, against plain SQLite's durable ceiling."
    )

    @Option(help: "Seconds each measurement runs.") var seconds: Double = 3
    @Option(help: "Record content size in bytes.") var size: Int = 4096
    @Option(help: "Directory for the temporary vaults (same filesystem as production data, ideally).")
    var directory: String = NSTemporaryDirectory()
    @Option(help: "Expired records the disposal sweep benchmark removes.") var sweepRecords = 100_000
    @Option(help: "Records in the vault where the sweep finds nothing to do.") var idleRecords = 1_000_000
    @Option(help: "Threads putting records while the sweep runs, each put timed (0: the sweep alone).")
    var sweepWriters = 4
    @Option(help: "Records a sweep disposes per batch (retention.sweep_batch).") var sweepBatch = StoreConfiguration
        .defaultSweepBatch
    @Flag(help: "Only the sweep figures.") var sweepOnly = false
    @Flag(help: "Only the audit log figures.") var auditOnly = false
    @Flag(help: "Only the in-process filing figures.") var filingOnly = false
    @Flag(help: "Only the key figures (unseal time, rotation).") var keysOnly = false
    @Flag(help: "Only the puts and in-process gets, for profiling the read path.") var readsOnly = false
    @Option(help: "Key slots the rotation benchmark rewraps.") var rotationSlots = 100_000

    func run() throws {
        // The bench prints figures only: the store's warnings and errors still reach standard error, its
        // info lines and notices (one per case opened) do not.
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        let root = try self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        print("CaseVault store benchmark: \(self.size)-byte records, \(self.seconds) s per figure, in \(root)")
        if self.sweepOnly {
            try self.sweepFigures(root: root)
            return
        }
        if self.auditOnly {
            try self.auditFigures(root: root)
            return
        }
        if self.filingOnly {
            self.bodyFigure()
            try self.filingFigures(root: root)
            return
        }
        if self.keysOnly {
            try self.keyFigures(root: root)
            try self.rotationFigure(root: root)
            return
        }

        self.parseFigures()
        let ceilingWritten = Self.bytesWritten()
        let (ceiling, ceilingRows) = try self.sqliteCeiling(path: root + "/ceiling.sqlite")
        let bytesPerRow = Double(Self.bytesWritten() - ceilingWritten) / Double(max(ceilingRows, 1))
        print(
            String(
                format:
                    "ceiling  plain SQLite, synchronous=FULL, 100 rows/txn   %10.0f rows/s  (%.1f KiB written each)",
                ceiling, bytesPerRow / 1024))
        Figures.record("sqlite_ceiling", ceiling)
        Figures.record("sqlite_ceiling_bytes_per_row", bytesPerRow)
        let flush = try self.flushMicroseconds(path: root + "/flush.bin")
        print(String(format: "ceiling  one device flush (4 KiB overwritten, fdatasync)  %8.0f us", flush))
        Figures.record("flush_us", flush)

        let store = try Self.openStore(root: root, name: "data", key: "root")
        let vault = Vault(storage: store)
        let caseID = CaseID(bytes: Array(repeating: 1, count: 16))
        let text = String(repeating: "x", count: self.size - 11)
        let content = Array(#"{"text":"\#(text)"}"#.utf8)
        let ids = Collected()

        for writers in [1, 16] {
            let phasesBefore = store.batchPhases
            let before = store.groupCommitCounts
            let written = Self.bytesWritten()
            let (start, cpuBefore) = (Date(), Self.cpuSeconds())
            let rate = self.measure(threads: writers) { _ in
                let stored = try! vault.put(NewRecord(caseID: caseID, type: .sessionNote, content: content))
                ids.append(stored.id)
            }
            let cpu = (Self.cpuSeconds() - cpuBefore) / max(rate * Date().timeIntervalSince(start), 1) * 1e6
            let after = store.groupCommitCounts
            let perBatch = Double(after.puts - before.puts) / Double(max(1, after.batches - before.batches))
            let bytesPerPut = Double(Self.bytesWritten() - written) / Double(max(1, after.puts - before.puts))
            print(
                String(
                    format:
                        "put      durable, %2d concurrent writer(s)              %10.0f records/s  (%.0f%% of ceiling, %.1f puts/flush, %.0f us of CPU and %.1f KiB written each)",
                    writers, rate, 100 * rate / ceiling, perBatch, cpu, bytesPerPut / 1024))
            Figures.record("put_in_process_\(writers)", rate)
            Figures.record("put_in_process_\(writers)_per_batch", perBatch)
            Figures.record("put_in_process_\(writers)_cpu_us", cpu)
            Figures.record("put_in_process_\(writers)_bytes_per_put", bytesPerPut)
            // Where the leaders' time went, batch by batch (the store's own clock of its phases).
            let phases = store.batchPhases.since(phasesBefore)
            let batches = Double(max(1, phases.batches))
            let phaseMicroseconds = BatchPhases.phases.map { Double(phases[keyPath: $0.field]) / batches / 1000 }
            print(
                String(
                    format:
                        "         where the time goes, a batch's leader: slots %.0f us, keys and frames %.0f, writes %.0f, device flush %.0f, index commit %.0f and waiting for a checkpoint %.0f (%.0f us a batch)",
                    phaseMicroseconds[0], phaseMicroseconds[1], phaseMicroseconds[2], phaseMicroseconds[3],
                    phaseMicroseconds[4], phaseMicroseconds[5], phaseMicroseconds.reduce(0, +)))
            for (name, value) in zip(BatchPhases.phases.map(\.name), phaseMicroseconds) {
                Figures.record("put_in_process_\(writers)_\(name)_us", value)
            }
        }

        let all = ids.all
        for readers in [1, 2] {
            let (start, cpuBefore) = (Date(), Self.cpuSeconds())
            let rate = self.measure(threads: readers) { n in
                _ = try! vault.get(all[n % all.count])
            }
            // CPU per get moves less than the rate when other load on the host takes the cores.
            let gets = rate * Date().timeIntervalSince(start)
            let cpu = (Self.cpuSeconds() - cpuBefore) / max(gets, 1) * 1e6
            print(
                String(
                    format:
                        "get      in process, %d thread(s)                     %10.0f records/s  (%.1f us of CPU each)",
                    readers, rate, cpu))
            Figures.record("get_in_process_\(readers)", rate)
            Figures.record("get_in_process_\(readers)_cpu_us", cpu)
        }
        let opens = self.openCeiling(threads: 2)
        print(String(format: "ceiling  opens alone (key slot + 4 KiB), 2 threads      %10.0f records/s", opens))
        Figures.record("open_ceiling_2", opens)
        let reads = try self.readCeiling(threads: 2, records: all.count, root: root)
        print(String(format: "ceiling  reads and opens alone (pread slot + blob), 2 threads %5.0f records/s", reads))
        Figures.record("read_ceiling_2", reads)
        if self.readsOnly {
            store.close()
            return
        }

        let half = all.count / 2
        let single = self.measure(threads: 1, limit: half) { n in
            try! store.shred(all[n])
        }
        print(String(format: "shred    one record per call                          %10.0f records/s", single))
        let remaining = Array(all[half...])
        let batched =
            self.measure(threads: 1, limit: remaining.count / 100) { n in
                try! store.shred(Array(remaining[(n * 100)..<((n + 1) * 100)]))
            } * 100
        print(String(format: "shred    100 records per call                         %10.0f records/s", batched))
        store.close()
        try self.auditFigures(root: root)
        try self.filingFigures(root: root)
        try self.keyFigures(root: root)
        try self.rotationFigure(root: root)
        try self.sweepFigures(root: root)
    }

    /// A data key wrapped under a key of its own, as a key slot holds it, and `size` bytes sealed under the
    /// data key, as a blob holds them: what the get ceilings open.
    struct SealedSample: Sendable {
        let wrappingKey = SecureBytes.random(count: AEAD.keyByteCount)
        let slot: [UInt8]
        let blob: [UInt8]

        init(size: Int) {
            let dataKey = SecureBytes.random(count: AEAD.keyByteCount)
            self.slot = AEAD.seal(dataKey, key: self.wrappingKey, associatedData: [UInt8](repeating: 1, count: 24))
            self.blob = AEAD.seal(
                [UInt8](repeating: 120, count: size), key: dataKey, associatedData: [UInt8](repeating: 2, count: 64))
        }

        /// The two opens of a get: the data key out of `slot`, into secure memory, then `blob` under it (each
        /// associated data built anew, as a get builds its own).
        func open(slot: [UInt8], blob: [UInt8]) {
            let key = try! SecureBytes(count: AEAD.keyByteCount, ephemeral: true) { secret in
                try AEAD.open(
                    slot, key: self.wrappingKey, associatedData: [UInt8](repeating: 1, count: 24), into: secret)
            }
            _ = try! AEAD.open(blob, key: key, associatedData: [UInt8](repeating: 2, count: 64))
        }
    }

    /// What a get cannot beat: the two AEAD opens it makes (the data key from its slot, then the record),
    /// on `threads` threads, with nothing read from disk.
    func openCeiling(threads: Int) -> Double {
        let sample = SealedSample(size: self.size)
        return self.measure(threads: threads) { _ in sample.open(slot: sample.slot, blob: sample.blob) }
    }

    /// What a get with its record's place already known cannot beat (the issue's "authorize, pread,
    /// decrypt"): a pread of the key slot and one of the sealed blob, from files of `records` slots and blobs
    /// in the page cache (as many as the store holds, so the same memory to read from), in the order the
    /// gets above take them, and the two opens of `openCeiling`. No index, no lookup, no authorization.
    func readCeiling(threads: Int, records: Int, root: String) throws -> Double {
        let sample = SealedSample(size: self.size)
        let (slot, blob) = (sample.slot, sample.blob)
        let count = max(1, records)
        let slots = try PosixFile(path: root + "/ceiling.slots", flags: O_RDWR | O_CREAT, mode: 0o600)
        let blobs = try PosixFile(path: root + "/ceiling.blobs", flags: O_RDWR | O_CREAT, mode: 0o600)
        defer {
            unlink(root + "/ceiling.slots")
            unlink(root + "/ceiling.blobs")
        }
        // One record at a time, as the store writes its frames: the page cache holds them as it holds the
        // store's. Flushed, as the store's are, so that no write-back runs while they are read.
        for index in 0..<count {
            try slots.write(slot, at: Int64(index * slot.count))
            try blobs.write(blob, at: Int64(index * blob.count))
        }
        try slots.flushData()
        try blobs.flushData()
        return self.measure(threads: threads) { n in
            let index = n % count
            sample.open(
                slot: try! slots.read(count: slot.count, at: Int64(index * slot.count)),
                blob: try! blobs.read(count: blob.count, at: Int64(index * blob.count)))
        }
    }

    /// User and system CPU time of the whole process so far, in seconds.
    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// Bytes this process has caused to be sent to the storage layer (`write_bytes` of /proc/self/io: the
    /// data written, the journals' and WAL's copies and checkpoints included); 0 where the kernel does not
    /// say.
    static func bytesWritten() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/io", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("write_bytes:") {
            return Int(line.dropFirst("write_bytes:".count).trimmingCharacters(in: .whitespaces)) ?? 0
        }
        return 0
    }

    /// Runs `body` on `threads` threads for `seconds` (or `limit` calls in all); returns calls per second.
    func measure(threads: Int, limit: Int = .max, _ body: @escaping @Sendable (Int) -> Void) -> Double {
        let counter = Collected.Counter()
        let deadline = Date().addingTimeInterval(self.seconds)
        let start = Date()
        let workers = (0..<threads).map { _ in
            Thread {
                while Date() < deadline {
                    let n = counter.next()
                    guard n < limit else { break }
                    body(n)
                }
            }
        }
        for thread in workers { thread.start() }
        while workers.contains(where: { !$0.isFinished }) { usleep(1000) }
        return Double(min(counter.value, limit)) / Date().timeIntervalSince(start)
    }

    /// What one device flush costs on this disk: a 4 KiB block of a file that already has it overwritten and
    /// `fdatasync`ed (no size or extent to commit, as a put batch's segment and key slots are), the mean of 300.
    /// A put batch makes one (its segment's); a batch that settles, three (segment, key slots, the index's WAL).
    func flushMicroseconds(path: String) throws -> Double {
        let file = try PosixFile(path: path, flags: O_RDWR | O_CREAT, mode: 0o600)
        defer { unlink(path) }
        try file.write([UInt8](repeating: 0, count: 64 * 4096), at: 0)
        try file.flushData()
        let block = Random.bytes(count: 4096)
        let start = Date()
        for index in 0..<300 {
            try file.write(block, at: Int64(index % 64) * 4096)
            try file.flushData()
        }
        return Date().timeIntervalSince(start) / 300 * 1e6
    }

    /// Rows per second, and the rows written.
    func sqliteCeiling(path: String) throws -> (Double, Int) {
        var configuration = Configuration()
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        try queue.writeWithoutTransaction { db in
            _ = try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL")
            try db.execute(sql: "CREATE TABLE rows (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        }
        let body = Data(repeating: 7, count: self.size)
        let deadline = Date().addingTimeInterval(self.seconds)
        let start = Date()
        var rows = 0
        while Date() < deadline {
            try queue.write { db in
                for _ in 0..<100 {
                    try db.execute(sql: "INSERT INTO rows (body) VALUES (?)", arguments: [body])
                }
            }
            rows += 100
        }
        return (Double(rows) / Date().timeIntervalSince(start), rows)
    }

    /// A store of its own under `root` for one set of figures: its data in `root/name`, its root key in
    /// `root/keys/<key, or name>.key`.
    static func openStore(root: String, name: String, key: String? = nil) throws -> RecordStore {
        try RecordStore.open(
            StoreConfiguration(
                dataDirectory: URL(fileURLWithPath: root + "/" + name),
                rootKeyFile: URL(fileURLWithPath: root + "/keys/\(key ?? name).key")
            ),
            logger: Logger(label: "bench")
        )
    }

    func makeRoot() throws -> String {
        var template = Array((self.directory + "/casevault-bench-XXXXXX").utf8CString)
        guard let path = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ValidationError("cannot create a temporary directory in \(self.directory)")
        }
        return String(cString: path)
    }
}

final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var ids: [RecordID] = []

    func append(_ id: RecordID) {
        self.lock.lock()
        self.ids.append(id)
        self.lock.unlock()
    }

    var all: [RecordID] {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.ids
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0

        func next() -> Int {
            self.lock.lock()
            defer { self.lock.unlock() }
            self.count += 1
            return self.count - 1
        }

        var value: Int {
            self.lock.lock()
            defer { self.lock.unlock() }
            return self.count
        }
    }
}

Bench.main()

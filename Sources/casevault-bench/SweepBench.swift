import CaseVaultCore
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Logging

/// The retention sweep's goals: disposing of 100,000 expired 4 KiB records in under 3 s while puts wait
/// no more than 100 ms behind it (`--sweep-writers` put meanwhile, each put timed), and finding nothing
/// to do in a vault of 1,000,000 records in under 0.2 s. The vaults are filled through the
/// real store (durable puts, 16 writers) at a clock set in the past, then swept at a clock set later.
extension Bench {
    func sweepFigures(root: String) throws {
        let filedAt: Int64 = 1_767_225_600_000  // 2026-01-01T00:00:00Z
        let year: Int64 = 365 * 86_400_000

        // Steps are timed only in a sweep with no writer: with writers, each span holds their puts too.
        let expiredSteps = StepTimes()
        let expired = try self.fill(
            root: root + "/expired", records: self.sweepRecords, size: self.size, filedAt: filedAt,
            steps: self.sweepWriters == 0 ? expiredSteps : nil)
        expired.clock.set(filedAt + 3 * year)  // evaluations are kept 2 years after filing
        // While the sweep runs, writers put new records (not due) and time each put: the sweep shares
        // the store's writer with them.
        let writers = PutsDuring(vault: Vault(storage: expired.store), size: self.size)
        writers.start(threads: self.sweepWriters)
        let batchesBefore = expired.store.groupCommitCounts.batches
        var started = Date()
        var cpuStarted = Self.cpuSeconds()
        var writtenBefore = Self.bytesWritten()
        expiredSteps.start()
        let report = try expired.store.sweep()
        var elapsed = Date().timeIntervalSince(started)
        // What the process sent to the disk meanwhile: the ciphertext's overwrite, the key slots, the index's
        // WAL and checkpoints, and the writers' puts.
        var written = Double(Self.bytesWritten() - writtenBefore) / 1_048_576
        var cpu = Self.cpuSeconds() - cpuStarted
        let batchesBetween = expired.store.groupCommitCounts.batches - batchesBefore
        let latencies = writers.stop()
        print(
            String(
                format:
                    "sweep    disposes %d expired %d-byte records            %10.2f s  (%.0f records/s; vault %d records, %@; %d certificates; %.0f MiB written)",
                report.disposed, self.size, elapsed, Double(report.disposed) / elapsed, self.sweepRecords,
                Self.size(of: root + "/expired/data"), report.certificates, written))
        let sorted = latencies.sorted()
        func percentile(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1000
        }
        Figures.record(self.sweepWriters > 0 ? "sweep_seconds" : "sweep_alone_seconds", elapsed)
        Figures.record(self.sweepWriters > 0 ? "sweep_written_mib" : "sweep_alone_written_mib", written)
        if self.sweepWriters == 0 {
            print("         where the time goes: \(expiredSteps.summary(total: elapsed, cpu: cpu, record: true))")
        }
        if self.sweepWriters > 0 {
            print(
                String(
                    format: "sweep    puts meanwhile, %d writers: %d puts, p50 %.1f ms, p99 %.1f ms, max %.1f ms",
                    self.sweepWriters, sorted.count, percentile(0.5), percentile(0.99), (sorted.last ?? 0) * 1000))
            Figures.record("sweep_put_p99_ms", percentile(0.99))
            Figures.record("sweep_put_max_ms", (sorted.last ?? 0) * 1000)
            Figures.record("sweep_put_batches", Double(batchesBetween))
        }
        expired.store.close()
        try? FileManager.default.removeItem(atPath: root + "/expired")

        // Where the sweep's time goes: the same sweep with no writer, so that the part spent letting puts
        // in between its sections shows as the difference.
        if self.sweepWriters > 0 {
            let steps = StepTimes()
            let alone = try self.fill(
                root: root + "/alone", records: self.sweepRecords, size: self.size, filedAt: filedAt, steps: steps)
            alone.clock.set(filedAt + 3 * year)
            let floor = try self.sweepIndexFloor(
                copying: root + "/alone/data/index.sqlite", into: root + "/sweep-floor.sqlite", batch: self.sweepBatch,
                shreddedAt: filedAt + 3 * year)
            print(
                String(
                    format: "ceiling  the sweep's marking and removal alone, SQLite on a copy of the index  %6.2f s",
                    floor.total))
            print(
                "         where its time goes: "
                    + floor.parts.map { String(format: "%@ %.2f s", $0.key, $0.value) }.joined(separator: ", "))
            Figures.record("sweep_index_floor_seconds", floor.total)
            started = Date()
            cpuStarted = Self.cpuSeconds()
            steps.start()
            writtenBefore = Self.bytesWritten()
            let aloneReport = try alone.store.sweep()
            elapsed = Date().timeIntervalSince(started)
            cpu = Self.cpuSeconds() - cpuStarted
            written = Double(Self.bytesWritten() - writtenBefore) / 1_048_576
            print("         where the time goes: \(steps.summary(total: elapsed, cpu: cpu, record: true))")
            print(
                String(
                    format:
                        "sweep    the same with no writer                           %10.2f s  (%d put batches came between the sections above; %.0f MiB written)",
                    elapsed, batchesBetween, written))
            precondition(aloneReport.disposed == report.disposed, "the two sweeps disposed of different counts")
            Figures.record("sweep_alone_seconds", elapsed)
            Figures.record("sweep_alone_written_mib", written)
            alone.store.close()
            try? FileManager.default.removeItem(atPath: root + "/alone")
        }

        let idle = try self.fill(root: root + "/idle", records: self.idleRecords, size: 64, filedAt: filedAt)
        idle.clock.set(filedAt + 86_400_000)
        var times: [Double] = []
        for _ in 0..<5 {
            started = Date()
            let nothing = try idle.store.sweep()
            elapsed = Date().timeIntervalSince(started)
            precondition(nothing.disposed == 0, "the idle vault had something due")
            times.append(elapsed)
        }
        print(
            String(
                format:
                    "sweep    finds nothing due, first / median of 5            %6.3f / %.3f s  (vault %d records, %@)",
                times[0], times.sorted()[2], self.idleRecords, Self.size(of: root + "/idle/data")))
        idle.store.close()
    }

    /// Writers that put records in a loop until stopped, timing each put.
    final class PutsDuring: @unchecked Sendable {
        private let lock = NSLock()
        private var latencies: [Double] = []
        private var running = true
        private var threads: [Thread] = []
        private let vault: Vault<RecordStore>
        private let content: [UInt8]

        init(vault: Vault<RecordStore>, size: Int) {
            self.vault = vault
            self.content = Array(#"{"text":"\#(String(repeating: "y", count: max(0, size - 11)))"}"#.utf8)
        }

        func start(threads: Int) {
            let caseID = try! self.vault.openCase(
                header: Array(#"{"participants":[{"name":"A"},{"name":"B"}]}"#.utf8), mediators: [], author: nil
            ).id
            self.threads = (0..<threads).map { _ in
                Thread {
                    while self.isRunning {
                        let started = Date()
                        _ = try! self.vault.put(NewRecord(caseID: caseID, type: .sessionNote, content: self.content))
                        let elapsed = Date().timeIntervalSince(started)
                        self.lock.lock()
                        self.latencies.append(elapsed)
                        self.lock.unlock()
                    }
                }
            }
            for thread in self.threads { thread.start() }
        }

        private var isRunning: Bool {
            self.lock.lock()
            defer { self.lock.unlock() }
            return self.running
        }

        /// Stops the writers and returns each put's time in seconds.
        func stop() -> [Double] {
            self.lock.lock()
            self.running = false
            self.lock.unlock()
            while self.threads.contains(where: { !$0.isFinished }) { usleep(1_000) }
            self.lock.lock()
            defer { self.lock.unlock() }
            return self.latencies
        }
    }

    /// Wall time of a sweep's steps, from the store's crash points: each span between two of the shred
    /// protocol's points is counted to the step that ends at the second (puts' points, and the ends of
    /// sections within a step, are not looked at).
    final class StepTimes: @unchecked Sendable {
        private let lock = NSLock()
        private var last: (wall: Date, cpu: Double)?
        private var totals: [CrashPoint: (wall: Double, cpu: Double)] = [:]

        func start() {
            self.lock.lock()
            self.last = (Date(), Bench.cpuSeconds())
            self.lock.unlock()
        }

        func reached(_ point: CrashPoint) {
            guard point.rawValue.hasPrefix("shred.") && point != .shredAfterSection || point == .sweepAfterBatch else {
                return
            }
            // (The span that ends at a batch's end, after its removal, is the between-batches part of the rest.)
            self.lock.lock()
            defer { self.lock.unlock() }
            guard let last = self.last else { return }
            let now = (wall: Date(), cpu: Bench.cpuSeconds())
            let total = self.totals[point] ?? (0, 0)
            self.totals[point] = (total.wall + now.wall.timeIntervalSince(last.wall), total.cpu + now.cpu - last.cpu)
            self.last = now
        }

        /// The steps' times as a line, each with the process's CPU in it (with no writer, the sweep's own), and
        /// as `sweep_alone_<step>_seconds` figures when `record` is set. `cpu` is the process's CPU over the
        /// whole sweep.
        func summary(total: Double, cpu: Double, record: Bool) -> String {
            self.lock.lock()
            defer { self.lock.unlock() }
            // The first marking span holds the listing of what is due; each one, the retry of shreds a failure left.
            let named: [(CrashPoint, String, String)] = [
                (.shredAfterMark, "mark", "listing and marking"),
                (.shredAfterSlotOverwrite, "slots", "key slots overwritten and flushed"),
                (.shredAfterCiphertextOverwrite, "ciphertext", "ciphertext overwritten and flushed"),
                (.shredAfterIndexRemoval, "removal", "removal from the index"),
            ]
            // The rest: certifying at the end, and the moments between batches.
            let rest = max(0, total - named.reduce(0) { $0 + (self.totals[$1.0]?.wall ?? 0) })
            let restCPU = max(0, cpu - named.reduce(0) { $0 + (self.totals[$1.0]?.cpu ?? 0) })
            var parts: [String] = []
            for (point, figure, name) in named {
                let spent = self.totals[point] ?? (0, 0)
                parts.append(String(format: "%@ %.2f s (CPU %.2f s)", name, spent.wall, spent.cpu))
                if record { Figures.record("sweep_alone_\(figure)_seconds", spent.wall) }
            }
            if record { Figures.record("sweep_alone_rest_seconds", rest) }
            return parts.joined(separator: ", ")
                + String(format: ", certifying at the end %.2f s (CPU %.2f s)", rest, restCPU)
        }
    }

    final class Clock: @unchecked Sendable {
        private let lock = NSLock()
        private var milliseconds: Int64

        init(_ start: Int64) { self.milliseconds = start }

        func set(_ value: Int64) {
            self.lock.lock()
            self.milliseconds = value
            self.lock.unlock()
        }

        var now: Int64 {
            self.lock.lock()
            defer { self.lock.unlock() }
            return self.milliseconds
        }
    }

    /// A vault of `records` evaluations of `size` bytes in cases of 100, filed at `filedAt`.
    /// `steps`, when given, times the shred protocol's steps of the sweeps that follow.
    func fill(root: String, records: Int, size: Int, filedAt: Int64, steps: StepTimes? = nil) throws -> (
        store: RecordStore, clock: Clock
    ) {
        let clock = Clock(filedAt)
        var configuration = StoreConfiguration(
            dataDirectory: URL(fileURLWithPath: root + "/data"),
            rootKeyFile: URL(fileURLWithPath: root + "/keys/root.key")
        )
        configuration.clock = { clock.now }
        if let steps { configuration.crashPointObserver = { point in steps.reached(point) } }
        configuration.sweepBatch = self.sweepBatch
        let store = try RecordStore.open(configuration, logger: Logger(label: "bench"))
        let vault = Vault(storage: store)
        let header = Array(#"{"participants":[{"name":"A"},{"name":"B"}]}"#.utf8)
        let cases = try (0..<max(1, records / 100)).map { _ in
            try vault.openCase(header: header, mediators: [], author: nil).id
        }
        let padding = String(repeating: "x", count: max(0, size - 50))
        let content = Array(#"{"satisfaction":4,"would_recommend":true,"c":"\#(padding)"}"#.utf8)
        let started = Date()
        let counter = Collected.Counter()
        let workers = (0..<16).map { _ in
            Thread {
                while true {
                    let n = counter.next()
                    guard n < records else { break }
                    _ = try! vault.put(NewRecord(caseID: cases[n % cases.count], type: .evaluation, content: content))
                }
            }
        }
        for thread in workers { thread.start() }
        while workers.contains(where: { !$0.isFinished }) { usleep(10_000) }
        print(String(format: "         (filled %d records in %.0f s)", records, Date().timeIntervalSince(started)))
        return (store, clock)
    }

    static func size(of directory: String) -> String {
        var bytes: Int64 = 0
        let enumerator = FileManager.default.enumerator(atPath: directory)
        while let name = enumerator?.nextObject() as? String {
            let attributes = try? FileManager.default.attributesOfItem(atPath: directory + "/" + name)
            bytes += (attributes?[.size] as? NSNumber)?.int64Value ?? 0
        }
        return String(format: "%.0f MiB on disk", Double(bytes) / 1_048_576)
    }
}

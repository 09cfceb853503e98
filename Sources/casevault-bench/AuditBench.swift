import CaseVaultAudit
import CaseVaultConfiguration
import CaseVaultCore
import CaseVaultSealing
import CaseVaultStore
import Dispatch
import Foundation
import Synchronization

extension Bench {
    /// Durable puts with and without the audit log, as the server makes them: with the log, each put waits
    /// for its `request` entry to be written, queues its `result` entry after, and waits for the request
    /// entry's flush before it counts (the goal: at least 90% of the rate without it).
    func auditFigures(root: String) throws {
        let store = try Self.openStore(root: root, name: "audited")
        let vault = Vault(storage: store)
        defer { store.close() }
        let (audit, _) = try AuditLog.open(directory: store.auditDirectory, clock: StoreConfiguration.systemClock)
        try audit.attach(to: store)
        defer { audit.close() }
        print(
            "audit    entries ride on the store's flushes: \(audit.isRiding ? "yes" : "no (not ext4 or xfs, or another device)")"
        )
        let caseID = CaseID(bytes: Array(repeating: 2, count: 16))
        let text = String(repeating: "x", count: self.size - 11)
        let content = Array(#"{"text":"\#(text)"}"#.utf8)
        let put: @Sendable () async -> Void = {
            _ = try! await vault.awaitPut(NewRecord(caseID: caseID, type: .sessionNote, content: content))
        }
        // A request entry as a route writes it before it acts.
        let requestEntry: @Sendable (UInt64, String, String, [String: String]) -> AuditEntry = {
            number, role, action, ids in
            var entry = AuditEntry(kind: .request, time: StoreConfiguration.systemClock())
            entry.request = number
            entry.uid = 1000
            entry.roles = [role]
            entry.action = action
            entry.ids = ids
            return entry
        }
        // As the server runs them: each request a task, which waits for its put suspended (the store's
        // awaited commit, as a socket PUT's filing does, here without a case's lock or a filing's decision:
        // the puts all go to one case); with the log, the request entry written before the put and its flush
        // awaited before the answer.
        let request: @Sendable (Bool, Bool) async -> Void = { withAudit, withPut in
            var receipt: AuditLog.Receipt?
            var number: UInt64 = 0
            if withAudit {
                number = audit.nextRequestNumber()
                let entry = requestEntry(
                    number, "mediator", "POST /v1/cases/{case_id}/records", ["case_id": caseID.rawValue])
                receipt = try? await audit.append(entry)
            }
            if withPut {
                await put()
            }
            if withAudit {
                var result = AuditEntry(kind: .result, time: StoreConfiguration.systemClock())
                result.request = number
                result.status = 201
                audit.record(result)
                if let receipt { try? await audit.awaitDurable(receipt) }
            }
        }
        // A read's entries as the server writes them with `durable_reads` off: the request entry written
        // before the route acts, with no flush begun for it, the result entry queued after, and the flush of
        // both asked for within the default read window, neither awaited. Its CPU (every thread's, the
        // window's flushes included) is part of what one GET over the socket costs at least.
        let window = Duration.milliseconds(ServerConfiguration.defaultReadFlushMilliseconds)
        let read: @Sendable () async -> Void = {
            let number = audit.nextRequestNumber()
            let entry = requestEntry(number, "director", "GET /v1/records/{record_id}", ["record_id": caseID.rawValue])
            let receipt = try? await audit.append(entry, flushingSoon: false)
            var result = AuditEntry(kind: .result, time: StoreConfiguration.systemClock())
            result.request = number
            result.status = 200
            audit.record(result)
            if let receipt { audit.flushWithin(receipt, window) }
        }
        let (reads, readCost) = self.measureTasksWithCPU(1) { await read() }
        print(
            String(
                format:
                    "audit     1 client: a read's two entries %6.0f reads/s  (%.1f us of CPU each, its flushes included)",
                reads, readCost))
        Figures.record("audit_read_cpu_us", readCost)
        // The disk's speed drifts over a run: plain and audited puts are measured in turn, three times
        // each, and the medians compared; the pairs' own ratios show how far one run can stray.
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        for writers in [1, 16] {
            let alone = self.measureTasks(writers) { await request(true, false) }
            var plains: [PutRun] = []
            var boths: [PutRun] = []
            let before = audit.flushCounts
            for _ in 0..<3 {
                plains.append(self.measurePutRun(store, writers) { await request(false, true) })
                boths.append(self.measurePutRun(store, writers) { await request(true, true) })
            }
            let after = audit.flushCounts
            let (plain, both) = (median(plains.map(\.rate)), median(boths.map(\.rate)))
            let (plainCPU, bothCPU) = (median(plains.map(\.cpu)), median(boths.map(\.cpu)))
            let pairs = zip(boths, plains).map { $0.rate / $1.rate }.sorted()
            print(
                String(
                    format:
                        "audit    %2d client(s): durable puts %6.0f/s; audited requests alone %6.0f/s; audited puts %6.0f/s (%.0f%% of puts, %.0f%% to %.0f%% pair by pair; goal >= 90%%); log flushes: %d own, %d rides",
                    writers, plain, alone, both, 100 * both / plain, 100 * pairs[0], 100 * pairs[pairs.count - 1],
                    after.own - before.own, after.rides - before.rides)
            )
            print(
                String(
                    format: "audit    %2d client(s): CPU per put %.1f us plain, %.1f us audited", writers, plainCPU,
                    bothCPU))
            // Puts wait for their batch: the rate follows how long a batch's leader takes and how many puts
            // it carries, more than the CPU of the entries.
            let (plainBatch, bothBatch) = (
                median(plains.map(\.batchMicroseconds)), median(boths.map(\.batchMicroseconds))
            )
            let (plainFlush, bothFlush) = (
                median(plains.map(\.flushMicroseconds)), median(boths.map(\.flushMicroseconds))
            )
            let (plainPuts, bothPuts) = (median(plains.map(\.putsPerBatch)), median(boths.map(\.putsPerBatch)))
            print(
                String(
                    format:
                        "audit    %2d client(s): a batch's leader takes %.0f us plain, %.0f us audited (its device flush %.0f and %.0f us, the log's pages riding on it), for %.1f and %.1f puts",
                    writers, plainBatch, bothBatch, plainFlush, bothFlush, plainPuts, bothPuts))
            Figures.record("audited_put_ratio_\(writers)", both / plain)
            Figures.record("audited_put_ratio_\(writers)_min", pairs[0])
            Figures.record("audited_put_ratio_\(writers)_max", pairs[pairs.count - 1])
            Figures.record("audited_put_\(writers)_plain_cpu_us", plainCPU)
            Figures.record("audited_put_\(writers)_cpu_us", bothCPU)
            Figures.record("audited_put_\(writers)_plain_batch_us", plainBatch)
            Figures.record("audited_put_\(writers)_batch_us", bothBatch)
            Figures.record("audited_put_\(writers)_plain_flush_us", plainFlush)
            Figures.record("audited_put_\(writers)_flush_us", bothFlush)
            Figures.record("audited_put_\(writers)_plain_per_batch", plainPuts)
            Figures.record("audited_put_\(writers)_per_batch", bothPuts)
        }
    }

    /// A run of puts: calls per second, the process's CPU per call (us), and its batches: the time their
    /// leaders took (the store's own clock of its phases, `BatchPhases`), the device flush's part of it, and
    /// the puts each carried.
    struct PutRun {
        let rate: Double
        let cpu: Double
        let batchMicroseconds: Double
        let flushMicroseconds: Double
        let putsPerBatch: Double
    }

    /// `measureTasksWithCPU` for puts into `store`, with the batches they made meanwhile (`PutRun`).
    func measurePutRun(_ store: RecordStore, _ clients: Int, _ body: @escaping @Sendable () async -> Void) -> PutRun {
        let (phasesBefore, countsBefore) = (store.batchPhases, store.groupCommitCounts)
        let (rate, cpu) = self.measureTasksWithCPU(clients, body)
        let phases = store.batchPhases.since(phasesBefore)
        let counts = store.groupCommitCounts
        let batches = Double(max(1, phases.batches))
        let total = BatchPhases.phases.reduce(UInt64(0)) { $0 + phases[keyPath: $1.field] }
        return PutRun(
            rate: rate, cpu: cpu, batchMicroseconds: Double(total) / batches / 1000,
            flushMicroseconds: Double(phases.flushNanoseconds) / batches / 1000,
            putsPerBatch: Double(counts.puts - countsBefore.puts)
                / Double(max(1, counts.batches - countsBefore.batches)))
    }

    /// `measureTasks`, and the process's CPU per call meanwhile in microseconds (every thread's: the store's
    /// and the audit log's flushes included).
    func measureTasksWithCPU(_ clients: Int, _ body: @escaping @Sendable () async -> Void) -> (
        rate: Double, cpu: Double
    ) {
        let (start, cpu) = (Date(), Self.cpuSeconds())
        let rate = self.measureTasks(clients, body)
        return (rate, (Self.cpuSeconds() - cpu) / max(rate * Date().timeIntervalSince(start), 1) * 1e6)
    }

    /// Runs `clients` tasks, each calling `body` in a loop for `seconds`; returns calls per second.
    func measureTasks(_ clients: Int, _ body: @escaping @Sendable () async -> Void) -> Double {
        let seconds = self.seconds
        let count = Collected.Counter()
        let start = ContinuousClock.now
        Self.wait {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<clients {
                    group.addTask {
                        while ContinuousClock.now - start < .seconds(seconds) {
                            await body()
                            _ = count.next()
                        }
                    }
                }
            }
        }
        let elapsed = ContinuousClock.now - start
        return Double(count.value)
            / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    /// Runs `body` from a plain thread and waits for it.
    static func wait(_ body: @escaping @Sendable () async throws -> Void) {
        let done = DispatchSemaphore(value: 0)
        Task {
            try? await body()
            done.signal()
        }
        done.wait()
    }
}

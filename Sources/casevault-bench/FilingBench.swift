import CaseVaultCore
import CaseVaultSealing
import CaseVaultStore
import Foundation

extension Bench {
    /// Filings in process: what a socket PUT does once Hummingbird has read its body and before the audit
    /// writes its entries. The body is read as the route reads it (the depth check at the server's default
    /// limit, the parse, the type, the content taken from the bytes sent; not the check of unknown fields,
    /// the copy out of the request's buffer and its wipes, which are the server's), then `Vault.awaitFile`
    /// runs: the case's lock, the case and the roster read in one index trip, the decision (here the
    /// daemon's, where the route asks the authorization table), validation of the parse, sealing, the put.
    /// Three workloads of 16 tasks each, in one store, in turn, three times, and the medians printed with
    /// each one's CPU (every thread's, flushes included) and bytes sent to the disk per put:
    /// - puts of an intake form's content into one case (`Vault.awaitPut`: validated, the content parsed,
    ///   but no lock and no case read), into one case as the in-process put figure puts (that figure puts
    ///   session notes from 16 threads);
    /// - the same puts round 200 cases of this store, as `scripts/bench-socket.sh` files round 200: each
    ///   batch's rows then likely land on as many pages of the case index as it has puts;
    /// - filings round those cases, as the socket PUT files them.
    /// `scripts/bench-summary.sh` counts the filing in the least a PUT over the socket could cost.
    func filingFigures(root: String) throws {
        let store = try Self.openStore(root: root, name: "filings")
        let vault = Vault(storage: store)
        defer { store.close() }
        let header = Array(#"{"participants": [{"name": "a"}, {"name": "b"}]}"#.utf8)
        let cases = try (0..<200).map { _ in try vault.openCase(header: header, mediators: [], author: nil).id }
        let body = self.putBody
        let content = Array(Self.readBody(body).bytes)
        let turn = Collected.Counter()
        let put: @Sendable (CaseID) async -> Void = { caseID in
            _ = try! await vault.awaitPut(NewRecord(caseID: caseID, type: .intakeForm, content: content))
        }
        let workloads: [(name: String, figure: String, run: @Sendable () async -> Void)] = [
            ("puts into one case", "filing_put_one_case", { await put(cases[0]) }),
            ("puts round 200 cases", "filing_put_200_cases", { await put(cases[turn.next() % cases.count]) }),
            (
                "filings round 200 cases", "filing_200_cases",
                {
                    let (type, object, unique) = Self.readBody(body)
                    var record = NewRecord(caseID: cases[turn.next() % cases.count], type: type, content: Array(unique))
                    record.parsed = object
                    _ = try! await vault.awaitFile(record, rosterUID: nil) { _, _ throws(CaseVaultError) in .daemon }
                }
            ),
        ]
        var runs = Array(repeating: [(rate: Double, cpu: Double, bytes: Double)](), count: workloads.count)
        for _ in 0..<3 {
            for (index, workload) in workloads.enumerated() {
                let (written, puts) = (Self.bytesWritten(), store.groupCommitCounts.puts)
                let (rate, cpu) = self.measureTasksWithCPU(16, workload.run)
                let bytes = Double(Self.bytesWritten() - written) / Double(max(1, store.groupCommitCounts.puts - puts))
                runs[index].append((rate, cpu, bytes))
            }
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        for (workload, measured) in zip(workloads, runs) {
            let (rate, cpu, bytes) = (
                median(measured.map(\.rate)), median(measured.map(\.cpu)), median(measured.map(\.bytes))
            )
            print(
                String(
                    format: "filing   in process, 16 tasks, %@ %6.0f/s  (%.0f us of CPU and %.1f KiB written each)",
                    workload.name.padding(toLength: 24, withPad: " ", startingAt: 0), rate, cpu, bytes / 1024))
            Figures.record(workload.figure, rate)
            Figures.record("\(workload.figure)_cpu_us", cpu)
            Figures.record("\(workload.figure)_bytes_per_put", bytes)
        }
    }
}

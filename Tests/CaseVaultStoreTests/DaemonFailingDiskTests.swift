import CaseVaultCore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real casevaultd on a failing disk. powercutfs (`--fail`) makes one call at one site fail with EIO or
/// ENOSPC, and a failed fsync loses what it should have made durable. The sites are those an undisturbed run
/// reaches (`--census`): the daemon's start and stop, and `casevault-torture socket-load` over its socket
/// (cases, agreements, notes, shreds, final agreements and closes, evaluations; an operator's sweeps,
/// rotations, backups and audit verifications). Each gets its turn; then the power is cut, the daemon starts
/// again on what the disk kept, with no operator, and every promise is checked through the socket.
@Suite(
    "Failing disks under the daemon", .serialized,
    .enabled(if: geteuid() == 0, "mounting FUSE and acting as another uid need root"))
struct DaemonFailingDiskTests {
    /// The codes a refusal caused by a failing disk may carry (`cut-short`: a backup stream that ended early).
    static let refusals: Set<String> = ["storage-failure", "audit-unavailable", "cut-short"]

    /// The load of one run: 8 clients with 2 cases each, and one round of the operator's four actions.
    static let load = ["--clients", "8", "--cases", "2", "--rounds", "1", "--first", "0"]

    @Test(
        "an I/O error or a full disk at each site the daemon reaches: nothing unflushed is acknowledged, no shred is reported done that was not, the daemon serves on or stops saying why, and starts again alone"
    )
    func everySiteFailsUnderTheDaemon() throws {
        // The census is of a run on a vault that exists.
        guard let made = try Self.daemonVault() else { return }
        let (fs, vault, daemon) = made
        defer { daemon.kill() }

        var ledger = Acknowledged()
        let census = fs.root + "/census"
        try fs.mount(options: ["--census=\(census)"])
        let undisturbed = try self.work(daemon, tag: "census", cycle: -1, ledger: &ledger)
        #expect(undisturbed.refusals.isEmpty && undisturbed.finished, "the undisturbed run: \(undisturbed.text)")
        #expect(daemon.stop() == 0, "the undisturbed run did not stop cleanly:\n\(daemon.log)")
        try fs.cut()
        let sites = Self.patterns(try FailingDiskTests.readCensus(census, vault: vault))
        for action in ["sweep", "rotate", "backup", "audit-verify"] {
            #expect(ledger.actions[action, default: 0] > 0, "the undisturbed run did no \(action)")
        }

        var report: [String] = []
        var cycle = 0
        var outcomes: [String: Int] = [:]
        // CASEVAULT_FAULT_SITES=text runs only the sites that contain it (to chase one).
        let only = ProcessInfo.processInfo.environment["CASEVAULT_FAULT_SITES"]
        for (site, count) in sites.sorted(by: { $0.key < $1.key }) where only.map(site.contains) ?? true {
            for error in site.hasPrefix("rename:") || site.hasPrefix("fsyncdir:") ? ["EIO"] : ["EIO", "ENOSPC"] {
                // Well inside the run: a site reached once (at the start) fails at once.
                let nth = max(1, count / 4)
                try fs.mount(options: ["--fail=\(FailingDiskTests.onDisk(site, vault: vault))@\(nth)=\(error)"])
                var run = try self.work(daemon, tag: "fail\(cycle)", cycle: cycle, ledger: &ledger)
                // The stop reaches the sites only a stop reaches (the audit head's last checkpoint); then the
                // power cut, and the disk loses what was not flushed and what the failed flush lost.
                if run.servedOn {
                    let mark = daemon.log.utf8.count
                    let status = daemon.stop()
                    if status != 0 { (run.stopped, run.reason) = (status, Self.reason(in: daemon.log, after: mark)) }
                }
                daemon.kill()
                try fs.cut()
                let injected = fs.injected
                let what = "\(site) #\(nth) \(error)"
                #expect(!injected.isEmpty, "\(what) was never reached")
                if !run.started || !run.servedOn || run.stopped != 0 {
                    #expect(
                        !run.reason.isEmpty,
                        "after \(what) the daemon stopped without saying why:\n\(daemon.log.suffix(2000))")
                }
                try fs.mount()
                guard try daemon.start() else {
                    Issue.record(
                        "after \(what) the daemon did not start again without an operator:\n\(daemon.log.suffix(3000))")
                    try fs.cut()
                    break
                }
                let check = try SocketCheckRun(
                    socket: daemon.socket, ledger: ledger, only: run.touched, uid: DaemonPowerCutTests.uid,
                    gid: DaemonPowerCutTests.gid
                )
                for problem in check.problems { Issue.record("after \(what): \(problem)") }
                #expect(check.auditOK, "after \(what) the audit log does not verify:\n\(daemon.log.suffix(3000))")
                ledger.settle(kept: check.kept, shredded: check.shredded)
                let missing = ledger.shredded.subtracting(check.certified)
                #expect(missing.count == 0, "after \(what): \(missing.count) acknowledged shreds have no certificate")
                let certifiedLive = check.certified.filter { ledger.live[$0] != nil }
                #expect(
                    certifiedLive.count == 0,
                    "after \(what): records that read back have a shred certificate, e.g. \(certifiedLive.first?.rawValue ?? "")"
                )
                // A failing disk is answered as such (or the audit as unavailable), never as damage.
                let odd = Set(
                    run.refusals.filter { !Self.refusals.contains(String($0.split(separator: " ").last ?? "")) })
                #expect(odd.isEmpty, "after \(what): refused as \(odd.sorted())\n\(daemon.log.suffix(3000))")
                #expect(
                    daemon.stop() == 0, "after \(what) the daemon did not stop cleanly:\n\(daemon.log.suffix(2000))")
                try fs.cut()
                let outcome = injected.isEmpty ? "not reached" : run.text
                outcomes[run.started ? (run.servedOn ? "served on" : "stopped") : "did not start", default: 0] += 1
                report.append("\(what): \(outcome)")
                cycle += 1
            }
        }
        // At the end, every record ever acknowledged, not only those of the last run.
        try fs.mount()
        if try daemon.start() {
            let check = try SocketCheckRun(
                socket: daemon.socket, ledger: ledger, only: nil, uid: DaemonPowerCutTests.uid,
                gid: DaemonPowerCutTests.gid)
            for problem in check.problems { Issue.record("at the end: \(problem)") }
            #expect(check.auditOK, "at the end the audit log does not verify")
            #expect(daemon.stop() == 0)
        } else {
            Issue.record("at the end the daemon did not start:\n\(daemon.log.suffix(3000))")
        }
        try fs.cut()
        let summary = outcomes.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        print(
            "failing disks under the daemon: \(report.count) failures at \(sites.count) sites (\(summary)); \(ledger.puts) records and "
                + "\(ledger.shreds) shreds acknowledged, \(ledger.refusals.count) refused; 0 lost, 0 resurrected unless reported above"
        )
        for line in report { print("  " + line) }
    }

    @Test(
        "the index's flushes fail under the daemon: it refuses, stops with a failure saying why, and its next start serves every record it acknowledged"
    )
    func stopsWhenTheIndexLosesCommits() throws {
        guard let made = try Self.daemonVault() else { return }
        let (fs, vault, daemon) = made
        defer { daemon.kill() }
        // Every flush of the index's WAL fails while the switch file exists, and loses what it should have
        // made durable (powercutfs, as Linux after a writeback error).
        let failing = fs.root + "/failing"
        let wal = FailingDiskTests.onDisk("fdatasync:/<vault>/data/index.sqlite-wal", vault: vault)
        try fs.mount(options: ["--fail=\(wal)@1=EIO+", "--fail-while=\(failing)"])
        var ledger = Acknowledged()
        // The disk fails once the load has opened a few cases (and filed records in them).
        let log = daemon.logPath
        let switched = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            for _ in 0..<(600 * VaultDaemon.slowdown) {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                if text.components(separatedBy: "case opened").count > 5 { break }
                usleep(50_000)
            }
            usleep(200_000)
            _ = FileManager.default.createFile(atPath: failing, contents: nil)
            switched.signal()
        }
        let run = try self.work(daemon, tag: "index", cycle: 0, ledger: &ledger)
        switched.wait()
        unlink(failing)
        #expect(ledger.puts > 0, "nothing was acknowledged before the disk failed")
        #expect(run.started && !run.servedOn, "the daemon served on after the index lost commits: \(run.text)")
        // The daemon exits on its own (SIGTERM only if it has not): a failure, which systemd restarts.
        for _ in 0..<(300 * VaultDaemon.slowdown) where daemon.isRunning { usleep(100_000) }
        #expect(!daemon.isRunning, "the daemon still runs after the index lost commits")
        let status = daemon.stop()
        #expect(status == 3, "exit status \(status):\n\(daemon.log.suffix(2000))")
        #expect(
            daemon.log.contains("critical casevaultd: [CaseVaultDaemon] the disk refused a write of the index"),
            "the daemon did not say why it stopped:\n\(daemon.log.suffix(2000))")
        try fs.cut()
        #expect(!fs.injected.isEmpty, "the failure was not injected")
        try fs.mount()
        guard try daemon.start() else {
            Issue.record("the daemon did not start again:\n\(daemon.log.suffix(3000))")
            try fs.cut()
            return
        }
        let check = try SocketCheckRun(
            socket: daemon.socket, ledger: ledger, only: nil, uid: DaemonPowerCutTests.uid,
            gid: DaemonPowerCutTests.gid)
        for problem in check.problems { Issue.record("after the restart: \(problem)") }
        #expect(check.auditOK, "the audit log does not verify:\n\(daemon.log.suffix(3000))")
        #expect(daemon.stop() == 0)
        try fs.cut()
    }

    /// A vault the daemon made on a new powercutfs mount, the daemon stopped and the filesystem cut after
    /// it (unmounted); nil, with the issue recorded, when the daemon did not make it.
    static func daemonVault() throws -> (fs: PowerCutFS, vault: TestVault, daemon: VaultDaemon)? {
        let fs = try PowerCutFS()
        try fs.mount()
        chmod(fs.root, 0o755)
        let vault = fs.newVault()
        let daemon = try VaultDaemon(folder: fs.root, vault: vault)
        guard try daemon.start() else {
            Issue.record("the daemon did not make its vault:\n\(daemon.log)")
            daemon.kill()
            return nil
        }
        #expect(daemon.stop() == 0)
        try fs.cut()
        return (fs, vault, daemon)
    }

    /// What one run of the load did.
    struct Run {
        var started = true
        var servedOn = true
        var finished = false
        /// The exit status of the stop that followed the load (0 for a clean one).
        var stopped: Int32 = 0
        /// The daemon's own words, when it stopped or did not start.
        var reason = ""
        var refusals: [String] = []
        var touched: Set<RecordID> = []

        var text: String {
            guard self.started else { return "did not start: \(self.reason)" }
            let refused = Dictionary(grouping: self.refusals, by: { $0 }).sorted { $0.key < $1.key }.map {
                "\($0.value.count)× \($0.key)"
            }
            let said = refused.isEmpty ? "nothing refused" : "refused " + refused.joined(separator: ", ")
            guard self.servedOn else { return said + "; stopped: \(self.reason)" }
            return said + ", served on" + (self.stopped == 0 ? "" : "; the stop exited \(self.stopped): \(self.reason)")
        }
    }

    /// Starts the daemon and runs the load to its end (or the daemon's), then leaves the daemon as it is.
    func work(_ daemon: VaultDaemon, tag: String, cycle: Int, ledger: inout Acknowledged) throws -> Run {
        var run = Run()
        let mark = daemon.log.utf8.count
        guard try daemon.start() else {
            (run.started, run.servedOn) = (false, false)
            run.reason = Self.reason(in: daemon.log, after: mark)
            return run
        }
        // Evaluations still live from earlier runs: the first sweep disposes of them, and says so.
        let evaluations = daemon.folder + "/evaluations"
        try (ledger.live.filter { $0.value.contains("-e") }.map(\.key.rawValue).joined(separator: "\n") + "\n").write(
            toFile: evaluations, atomically: true, encoding: .utf8)
        chmod(evaluations, 0o644)
        let driver = Helper.process(
            ["socket-load", "--socket", daemon.socket, "--tag", tag, "--evaluations", evaluations, "--keep-going"]
                + Self.load,
            as: (DaemonPowerCutTests.uid, DaemonPowerCutTests.gid)
        )
        let pipe = Pipe()
        driver.standardOutput = pipe
        driver.standardError = FileHandle.nullDevice
        try driver.run()
        // A load that hangs is killed, and fails the test below.
        let pid = driver.processIdentifier
        DispatchQueue.global().asyncAfter(deadline: .now() + 120 * Double(VaultDaemon.slowdown)) { [driver] in
            if driver.isRunning { kill(pid, SIGKILL) }
        }
        let before = ledger.refusals.count
        run.touched = ledger.absorb(LineReader(pipe.fileHandleForReading), cycle: cycle).touched
        driver.waitUntilExit()
        // `failed <what> [<id>] <code>`, without the id.
        run.refusals = ledger.refusals[before...].map { line in
            line.split(separator: " ").dropFirst().filter { (try? RecordID(String($0))) == nil }.joined(separator: " ")
        }
        run.finished = driver.terminationReason == .exit && driver.terminationStatus == 0
        run.servedOn = daemon.isRunning && ((try? SocketClientProbe(path: daemon.socket))?.healthy ?? false)
        if !run.servedOn {
            run.reason = Self.reason(in: daemon.log, after: mark)
        } else {
            #expect(
                run.finished,
                "cycle \(cycle): the load did not finish while the daemon served on (exit \(driver.terminationStatus))")
        }
        return run
    }

    /// The census with each backup's index snapshot (`backup-<id>.sqlite`, a new name per backup) as one
    /// site, `backup-*`: powercutfs matches it to each snapshot, counting each one's calls.
    static func patterns(_ sites: [String: Int]) -> [String: Int] {
        var merged: [String: Int] = [:]
        for (site, count) in sites {
            let pattern = site.replacingOccurrences(
                of: #"/backup-[0-9a-f#]+\."#, with: "/backup-*.", options: .regularExpression)
            merged[pattern, default: 0] += count
        }
        return merged
    }

    /// The daemon's last error or critical line written after `mark`, or "".
    static func reason(in log: String, after mark: Int) -> String {
        let lines = String(decoding: Array(log.utf8).dropFirst(mark), as: UTF8.self).split(separator: "\n")
        let said = lines.last { $0.contains("error") || $0.contains("critical") }
        return said.map { String($0.suffix(300)) } ?? ""
    }
}

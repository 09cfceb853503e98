import CaseVaultCore
import CaseVaultStore
import Foundation
import Synchronization
import Testing

@Suite("Checkpoints of the index off its writer")
struct CheckpointTests {
    @Test(
        "while four writers put without pause, the index's WAL stays within 32 checkpoint thresholds (its checkpoints run beside the writer, which copies what they leave when they lag), and every put reads back after a reopen"
    )
    func walStaysBounded() throws {
        let vault = TestVault()
        let threshold: Int32 = 64
        let seen = Mutex((records: [RecordID: [UInt8]](), largestWAL: 0))
        do {
            let store = try vault.open(clock: TestClock(1_700_000_000_000)) { configuration in
                configuration.indexCheckpointFrames = threshold
                // Each checkpoint beside the writer ends 10 ms after its copy, so that it never catches up
                // with the puts, as on a busy disk.
                configuration.checkpointObserver = { usleep(10_000) }
            }
            let caseID = Samples.caseID()
            let walPath = vault.data + "/index.sqlite-wal"
            let done = DispatchSemaphore(value: 0)
            for writer in 0..<4 {
                Thread {
                    defer { done.signal() }
                    for n in 0..<300 {
                        let content = Samples.content(.sessionNote, marker: "w\(writer) n\(n)")
                        guard
                            let id = try? store.sealed.put(
                                NewRecord(caseID: caseID, type: .sessionNote, content: content)
                            ).id
                        else { continue }
                        let wal = (try? FileManager.default.attributesOfItem(atPath: walPath)[.size] as? Int) ?? 0
                        seen.withLock { seen in
                            seen.records[id] = content
                            seen.largestWAL = max(seen.largestWAL, wal)
                        }
                    }
                }.start()
            }
            for _ in 0..<4 { done.wait() }
            store.close()
        }
        let (records, largest) = seen.withLock { ($0.records, $0.largestWAL) }
        #expect(records.count == 1200, "puts failed: \(1200 - records.count)")
        // A frame is a page (4 KiB) and its header (24 bytes). Without the writer copying what the checkpoints
        // beside it left, the WAL was never started again and held every commit's frames.
        let bound = 32 * Int(threshold) * (4096 + 24)
        #expect(largest <= bound, "the WAL reached \(largest) bytes, past \(bound)")
        let store = try vault.open()
        for (id, content) in records {
            #expect((try? store.sealed.get(id).content) == content, "put \(id) lost")
        }
        store.close()
    }

    @Test(
        "while a checkpoint of the index is held in flight, puts without a flush of their own commit and answer, and a commit with a flush (a mediator added to the roster) is answered only once the checkpoint has ended"
    )
    func flushedCommitWaitsForCheckpoint() throws {
        let vault = TestVault()
        let hold = HeldCheckpoint()
        let store = try vault.open(clock: TestClock(1_700_000_000_000)) { configuration in
            configuration.indexCheckpointFrames = 16
            configuration.checkpointObserver = { hold.reached() }
        }
        let caseID = Samples.caseID()
        // The first put settles (a flushed commit); those after it do not, until 16 MiB of frames.
        _ = try Samples.note(store, caseID, marker: "first").get()
        hold.arm()
        var n = 0
        while !hold.isHolding && n < 2000 {
            _ = try Samples.note(store, caseID, marker: "before \(n)").get()
            n += 1
        }
        #expect(hold.isHolding, "no checkpoint ran after \(n) puts")
        // Held between its copy and its end: puts go on beside it (before, SQLite's checkpoint ran on the
        // writer, inside the commit of the put that began it).
        let beside = DispatchSemaphore(value: 0)
        Thread {
            for m in 0..<5 { _ = Samples.note(store, caseID, marker: "beside \(m)") }
            beside.signal()
        }.start()
        let putsWentOn = beside.wait(timeout: .now() + 30) == .success
        #expect(putsWentOn, "puts waited for the checkpoint in flight")
        if !putsWentOn {
            hold.release()
            beside.wait()
        }
        let answered = Mutex(false)
        let done = DispatchSemaphore(value: 0)
        Thread {
            _ = try? store.addToRoster(1234)
            answered.withLock { $0 = true }
            done.signal()
        }.start()
        usleep(300_000)
        #expect(!answered.withLock { $0 }, "the flushed commit was answered while the checkpoint was in flight")
        hold.release()
        done.wait()
        #expect(try store.isOnRoster(1234))
        store.close()
    }
}

/// Holds the first checkpoint that reaches it after `arm`, until `release`.
final class HeldCheckpoint: Sendable {
    private let state = Mutex((armed: false, holding: false))
    private let released = DispatchSemaphore(value: 0)

    func arm() { self.state.withLock { $0.armed = true } }

    var isHolding: Bool { self.state.withLock { $0.holding } }

    func reached() {
        let hold = self.state.withLock { state in
            guard state.armed else { return false }
            (state.armed, state.holding) = (false, true)
            return true
        }
        if hold { self.released.wait() }
    }

    func release() { self.released.signal() }
}

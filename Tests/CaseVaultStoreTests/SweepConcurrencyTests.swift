import CaseVaultCore
import CaseVaultStore
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("A sweep among puts and shreds")
struct SweepConcurrencyTests {
    /// What happened while the sweep ran, seen from its crash points (each inside one of its writer sections).
    final class Events: Sendable {
        struct State {
            var marked = false
            var putID: RecordID?
            var putFailure: String?
            var shredDone = false
            var shredFailure: CaseVaultError?
            var seenAtLastSection: (putDone: Bool, shredDone: Bool)?
            /// The thread the sweep runs on, and a shred step another thread reached before its batch ended.
            var sweepThread: ObjectIdentifier?
            var foreignStep: CrashPoint?
        }

        let state = Mutex(State())
    }

    @Test(
        "a put queued while a sweep marks its batch commits before the batch ends and reads back after it; a shred asked for meanwhile waits for the batch"
    )
    func putsGoOnDuringASweep() throws {
        let vault = TestVault()
        let clock = TestClock("2026-01-01T00:00:00Z")
        let events = Events()
        let holder = Mutex<RecordStore?>(nil)
        let other = Mutex<(caseID: CaseID, victim: RecordID)?>(nil)
        let slowdown = UInt32(VaultDaemon.slowdown)
        let store = try vault.open(clock: clock) { configuration in
            configuration.sweepBatch = 10 * RecordStore.shredSection
            configuration.crashPointObserver = { point in
                guard let store = holder.withLock({ $0 }), let (caseID, victim) = other.withLock({ $0 }) else { return }
                let thread = ObjectIdentifier(Thread.current)
                events.state.withLock { state in
                    if let sweep = state.sweepThread, sweep != thread, state.seenAtLastSection == nil,
                        point.rawValue.hasPrefix("shred.")
                    {
                        state.foreignStep = state.foreignStep ?? point
                    }
                }
                switch point {
                case .shredAfterMark where !events.state.withLock({ $0.marked }):
                    events.state.withLock { state in
                        state.marked = true
                        state.sweepThread = thread
                    }
                    // Queued while the sweep holds the writer role for its mark.
                    Thread.detachNewThread {
                        do {
                            let put = try RetentionTests.file(store, .intakeForm, in: caseID, marker: "filed-meanwhile")
                            events.state.withLock { $0.putID = put.id }
                        } catch {
                            events.state.withLock { $0.putFailure = "\(error)" }
                        }
                    }
                    Thread.detachNewThread {
                        do throws(CaseVaultError) {
                            try store.shred(victim)
                        } catch {
                            events.state.withLock { $0.shredFailure = error }
                        }
                        events.state.withLock { $0.shredDone = true }
                    }
                    usleep(300_000 * slowdown)
                case .shredAfterIndexRemoval where events.state.withLock({ $0.sweepThread == thread }):
                    events.state.withLock { state in
                        if state.seenAtLastSection == nil {
                            state.seenAtLastSection = (state.putID != nil, state.shredDone)
                        }
                    }
                default:
                    break
                }
            }
        }
        defer { store.close() }

        // Three cases of evaluations, due two years after filing: their removal takes two sections of whole
        // cases, so each case still gets one certificate.
        let perCase = RecordStore.shredSection / 2
        var due: [RecordID] = []
        for _ in 0..<3 {
            let summary = try RetentionTests.openCase(store)
            for _ in 0..<perCase {
                due.append(try RetentionTests.file(store, .evaluation, in: summary.id).id)
            }
        }
        let kept = try RetentionTests.openCase(store)
        let victim = try RetentionTests.file(store, .intakeForm, in: kept.id, marker: "shred-me")
        clock.now += 2 * 366 * 86_400_000
        holder.withLock { $0 = store }
        other.withLock { $0 = (kept.id, victim.id) }

        let report = try store.sweep()
        #expect(report.disposed == due.count)
        #expect(report.certificates == 3, "a case's records were split over two certificates")

        let seen = try #require(events.state.withLock { $0.seenAtLastSection })
        #expect(seen.putDone, "the put waited for the whole batch")
        #expect(!seen.shredDone, "a shred ran inside the sweep's batch")
        let foreign = events.state.withLock { $0.foreignStep }
        #expect(foreign == nil, "another thread's shred reached \(foreign?.rawValue ?? "") inside the sweep's batch")

        // The others finish once the batch has.
        for _ in 0..<(200 * Int(slowdown)) where !events.state.withLock({ $0.shredDone && $0.putID != nil }) {
            usleep(50_000)
        }
        let state = events.state.withLock { $0 }
        #expect(state.putFailure == nil)
        #expect(state.shredFailure == nil)
        let putID = try #require(state.putID)
        let put = try store.sealed.get(putID)
        #expect(String(decoding: put.content, as: UTF8.self).contains("filed-meanwhile"))
        #expect(!(try RetentionTests.isLive(store, victim.id)))
        for id in due {
            #expect(!(try RetentionTests.isLive(store, id)))
        }
    }
}

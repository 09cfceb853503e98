import CaseVaultCore
import Foundation
import GRDB
import Synchronization
import Testing

@testable import CaseVaultStore

#if canImport(Glibc)
import Glibc
#endif

@Suite("A sweep among puts, shreds and holds")
struct SweepConcurrencyTests {
    /// What happened while the sweep ran, seen from the store's crash points.
    final class Events: Sendable {
        struct State {
            /// The thread the sweep runs on, once it has marked its first records.
            var sweepThread: ObjectIdentifier?
            var putCommitted = false
            var putID: RecordID?
            var putFailure: String?
            var shredDone = false
            var shredFailure: CaseVaultError?
            var holdDone = false
            var holdFailure: CaseVaultError?
            /// What had happened when the sweep reached its batch's last step.
            var seenAtLastStep: (putCommitted: Bool, shredDone: Bool, holdDone: Bool)?
            /// A shred step another thread reached before the batch ended.
            var foreignStep: CrashPoint?
        }

        let state = Mutex(State())
    }

    @Test(
        "a put queued while a sweep marks its batch commits before the batch ends and reads back after it; a shred and a hold asked for meanwhile wait for the batch; each case keeps one certificate"
    )
    func putsGoOnDuringASweep() throws {
        let vault = TestVault()
        let clock = TestClock("2026-01-01T00:00:00Z")
        let events = Events()
        let holder = Mutex<RecordStore?>(nil)
        let targets = Mutex<(kept: CaseID, victim: RecordID, held: CaseID)?>(nil)
        let slowdown = UInt32(VaultDaemon.slowdown)
        let store = try vault.open(clock: clock) { configuration in
            configuration.sweepBatch = 10 * RecordStore.shredSection
            configuration.crashPointObserver = { point in
                guard let store = holder.withLock({ $0 }), let targets = targets.withLock({ $0 }) else { return }
                let thread = ObjectIdentifier(Thread.current)
                let sweeping = events.state.withLock { state -> Bool in
                    if let sweep = state.sweepThread, sweep != thread, state.seenAtLastStep == nil {
                        if point == .putAfterCommit {
                            state.putCommitted = true
                        } else if point.rawValue.hasPrefix("shred.") {
                            state.foreignStep = state.foreignStep ?? point
                        }
                    }
                    return state.sweepThread == nil || state.sweepThread == thread
                }
                guard sweeping else { return }
                switch point {
                case .shredAfterMark:
                    events.state.withLock { $0.sweepThread = thread }
                    // Asked for while the sweep holds the writer role for its last mark.
                    Thread.detachNewThread {
                        do {
                            let put = try RetentionTests.file(
                                store, .intakeForm, in: targets.kept, marker: "filed-meanwhile")
                            events.state.withLock { $0.putID = put.id }
                        } catch {
                            events.state.withLock { $0.putFailure = "\(error)" }
                        }
                    }
                    Thread.detachNewThread {
                        do throws(CaseVaultError) {
                            try store.shred(targets.victim)
                        } catch {
                            events.state.withLock { $0.shredFailure = error }
                        }
                        events.state.withLock { $0.shredDone = true }
                    }
                    Thread.detachNewThread {
                        do throws(CaseVaultError) {
                            _ = try store.sealed.placeHold(on: targets.held, reason: "a complaint", authority: .daemon)
                        } catch {
                            events.state.withLock { $0.holdFailure = error }
                        }
                        events.state.withLock { $0.holdDone = true }
                    }
                    usleep(300_000 * slowdown)
                case .shredAfterIndexRemoval:
                    events.state.withLock { state in
                        if state.seenAtLastStep == nil {
                            state.seenAtLastStep = (state.putCommitted, state.shredDone, state.holdDone)
                        }
                    }
                default:
                    break
                }
            }
        }
        defer { store.close() }

        // Three cases of evaluations, due two years after filing, the second one straddling two sections
        // of the batch's marks: it must still get one certificate.
        let perCase = RecordStore.shredSection * 3 / 5
        var due: [RecordID] = []
        var cases: [CaseID] = []
        for _ in 0..<3 {
            let summary = try RetentionTests.openCase(store)
            cases.append(summary.id)
            for _ in 0..<perCase {
                due.append(try RetentionTests.file(store, .evaluation, in: summary.id).id)
            }
        }
        let kept = try RetentionTests.openCase(store)
        let victim = try RetentionTests.file(store, .intakeForm, in: kept.id, marker: "shred-me")
        clock.now += 2 * 366 * 86_400_000
        holder.withLock { $0 = store }
        targets.withLock { $0 = (kept.id, victim.id, cases[2]) }

        let report = try store.sweep()
        #expect(report.disposed == due.count)
        #expect(report.certificates == 3, "a case's records were split over two certificates")

        let seen = try #require(events.state.withLock { $0.seenAtLastStep })
        #expect(seen.putCommitted, "the put waited for the whole batch")
        #expect(!seen.shredDone, "a shred ran inside the sweep's batch")
        #expect(!seen.holdDone, "a hold was placed inside the sweep's batch")
        let foreign = events.state.withLock { $0.foreignStep }
        #expect(foreign == nil, "another thread's shred reached \(foreign?.rawValue ?? "") inside the sweep's batch")

        // The others finish once the batch has.
        for _ in 0..<(200 * Int(slowdown))
        where !events.state.withLock({ $0.shredDone && $0.holdDone && $0.putID != nil }) {
            usleep(50_000)
        }
        let state = events.state.withLock { $0 }
        #expect(state.putFailure == nil)
        #expect(state.shredFailure == nil)
        #expect(state.holdFailure == nil)
        let putID = try #require(state.putID)
        let put = try store.sealed.get(putID)
        #expect(String(decoding: put.content, as: UTF8.self).contains("filed-meanwhile"))
        #expect(!(try RetentionTests.isLive(store, victim.id)))
        // The hold came after the batch, which had marked the held case's records before it.
        #expect(try store.isHeld(cases[2]))
        for id in due {
            #expect(!(try RetentionTests.isLive(store, id)))
        }
    }

    @Test(
        "a put that comes while a step of a sweep's batch runs goes in between two of the step's sections once it has waited the shred's turn, not at the step's end"
    )
    func putGoesInWithinAStep() throws {
        struct State {
            var armed = false
            var putQueued = false
            var putCommitted = false
            var committedBeforeSlotsEnded: Bool?
            var putFailure: String?
        }
        let vault = TestVault()
        let clock = TestClock("2026-01-01T00:00:00Z")
        let state = Mutex(State())
        let holder = Mutex<(store: RecordStore, caseID: CaseID)?>(nil)
        let store = try vault.open(clock: clock) { configuration in
            configuration.sweepBatch = 2 * RecordStore.shredSection
            configuration.crashPointObserver = { point in
                guard let (store, caseID) = holder.withLock({ $0 }), state.withLock({ $0.armed }) else { return }
                switch point {
                case .shredAfterSection:
                    // The first section of the slots' step, as the only writer: a put comes and waits past the
                    // shred's turn before the section ends.
                    guard
                        state.withLock({ first in
                            defer { first.putQueued = true }
                            return !first.putQueued
                        })
                    else { return }
                    Thread.detachNewThread {
                        do {
                            _ = try RetentionTests.file(store, .intakeForm, in: caseID, marker: "filed-meanwhile")
                        } catch {
                            state.withLock { $0.putFailure = "\(error)" }
                        }
                    }
                    let deadline = Date().addingTimeInterval(10)
                    while !store.writes.hasWaiting && Date() < deadline { usleep(1000) }
                    usleep(UInt32(2 * RecordStore.shredTurn / 1000))
                case .putAfterCommit:
                    state.withLock { $0.putCommitted = true }
                case .shredAfterSlotOverwrite:
                    state.withLock { $0.committedBeforeSlotsEnded = $0.committedBeforeSlotsEnded ?? $0.putCommitted }
                default:
                    break
                }
            }
        }
        defer { store.close() }
        // More than one section of records, so that the slots' step has two.
        let due = try RetentionTests.openCase(store)
        for _ in 0..<(RecordStore.shredSection + 20) {
            _ = try RetentionTests.file(store, .evaluation, in: due.id)
        }
        let other = try RetentionTests.openCase(store)
        holder.withLock { $0 = (store, other.id) }
        state.withLock { $0.armed = true }
        clock.now += 2 * 366 * 86_400_000

        let report = try store.sweep()
        #expect(report.disposed == RecordStore.shredSection + 20)
        let seen = state.withLock { $0 }
        #expect(seen.putFailure == nil)
        #expect(seen.putQueued, "no section ended on the sweep's thread")
        #expect(
            seen.committedBeforeSlotsEnded == true,
            "the put that had waited the shred's turn went in only after the step's last section")
    }

    @Test(
        "a record filed between a sweep's batches into the row number of a record shredded meanwhile is not taken for the listed one"
    )
    func aReusedRowNumberIsNotSwept() throws {
        let vault = TestVault()
        let clock = TestClock("2026-01-01T00:00:00Z")
        let holder = Mutex<(store: RecordStore, caseID: CaseID, newest: RecordID)?>(nil)
        let filed = Mutex<Result<RecordID, any Error>?>(nil)
        let store = try vault.open(clock: clock) { configuration in
            configuration.sweepBatch = 4
            configuration.crashPointObserver = { point in
                guard point == .sweepAfterBatch, filed.withLock({ $0 == nil }),
                    let (store, caseID, newest) = holder.withLock({ $0 })
                else { return }
                // The newest row goes, so the next record filed takes its row number (SQLite's rowid).
                filed.withLock { result in
                    result = Result {
                        try store.shred(newest)
                        return try RetentionTests.file(store, .intakeForm, in: caseID, marker: "filed-meanwhile").id
                    }
                }
            }
        }
        defer { store.close() }
        let caseID = try RetentionTests.openCase(store).id
        let notes = try (0..<10).map { _ in try RetentionTests.file(store, .sessionNote, in: caseID) }
        holder.withLock { $0 = (store, caseID, notes[9].id) }
        clock.now = TestClock.parse("2026-03-01T00:00:00Z")
        let newestRow = try Self.rowNumber(vault, notes[9].id)

        let report = try store.sweep()
        let intake = try #require(try filed.withLock { $0 }?.get())
        #expect(try Self.rowNumber(vault, intake) == newestRow, "the record filed meanwhile took another row number")
        #expect(report.disposed == 9 && report.totals.alreadyGone == 1)
        #expect(try RetentionTests.isLive(store, intake), "the sweep shredded a record it never listed")
        for note in notes {
            #expect(!(try RetentionTests.isLive(store, note.id)))
        }
    }

    /// The row number (`records.seq`) of `id` in `vault`'s index, read beside the open store.
    static func rowNumber(_ vault: TestVault, _ id: RecordID) throws -> Int64? {
        var configuration = Configuration()
        configuration.readonly = true
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite", configuration: configuration)
        defer { try? index.close() }
        return try index.read { db in
            try Int64.fetchOne(db, sql: "SELECT seq FROM records WHERE id = ?", arguments: [id.rawValue])
        }
    }
}

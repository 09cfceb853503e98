internal import CaseVaultCore
internal import Dispatch
internal import Foundation

/// Group commit: concurrent puts queue up, and one caller at a time leads: it takes every queued put (up
/// to `maxBatch`) and makes them durable in two stages, `prepare` (their writes and one filesystem flush)
/// and `finish` (the index commit). It hands the lead to the next queued caller between the two, so that
/// the next batch writes and flushes while this one commits; `finish` runs batch by batch in the order the
/// batches led, and then the leader wakes just the callers in its batch. Shreds and recovery take the
/// lead exclusively, and get it before queued puts, unless the oldest put has waited `overdue` and came
/// before them: then it leads first, so that two exclusive writers taking turns (a sweep's shred and a key
/// rotation) cannot keep puts waiting for as long as both run, nor a stream of puts an exclusive writer.
/// Leader/follower rather than a dedicated thread, so an
/// idle store runs no thread at all; one semaphore per caller rather than a shared condition, so a batch
/// wakes its own callers and not every waiting thread.
///
/// A caller may also wait as a suspended task rather than a blocked thread (the async `submit`, which the
/// server's event loops use): it holds no thread while it waits, and its batch's leader resumes it. When
/// the lead comes to such a caller, its batch is led on one of the queue's `leaders` (serial dispatch
/// queues, taken in turn), since leading blocks on the disk.
final class WriteQueue<Job: AnyObject, Outcome>: @unchecked Sendable {
    // @unchecked: `pending`, `exclusive`, `busy`, the counts, `issued` and `nextLeader` are guarded by `lock`,
    // `finished` by `stages`; a waiter's `outcome` is written before it is told it is finished and read
    // after.
    private final class Waiter: @unchecked Sendable {
        // @unchecked: `outcome` is written before the waiter is told it is finished and read after;
        // `leadOnThread` is set before the waiter is queued.
        let job: Job
        var outcome: Outcome?
        /// When it was queued (`DispatchTime`'s nanoseconds).
        let since = DispatchTime.now().uptimeNanoseconds
        /// A blocked thread's: signalled with `outcome` set, or without it to lead. `nil` for a task.
        let wakeup: DispatchSemaphore?
        /// A suspended task's: resumes it with `outcome`.
        let resume: ((Outcome) -> Void)?
        /// A suspended task's: leads its batch on the queue given (one of the write queue's `leaders`), then
        /// resumes it.
        var leadOnThread: ((DispatchQueue) -> Void)?

        init(job: Job, wakeup: DispatchSemaphore?, resume: ((Outcome) -> Void)? = nil) {
            self.job = job
            self.wakeup = wakeup
            self.resume = resume
        }

        /// Tells a waiter of a batch that another led that its outcome is set.
        func finished() {
            if let wakeup { wakeup.signal() } else { self.resume?(self.outcome!) }
        }

        /// Gives the waiter the lead; a task's batch is led on `queue`.
        func takeLead(_ queue: @autoclosure () -> DispatchQueue) {
            if let wakeup { wakeup.signal() } else { self.leadOnThread?(queue()) }
        }
    }

    private let lock = NSLock()
    private var pending: [Waiter] = []
    /// Exclusive writers waiting for the lead, each with when it began to wait.
    private var exclusive: [(turn: DispatchSemaphore, since: UInt64)] = []
    private var busy = false
    private let maxBatch: Int
    /// How long the oldest put may wait before it leads ahead of exclusive writers (`DispatchTime`'s
    /// nanoseconds).
    private let overdue: UInt64
    /// Batches that led and jobs in them, for `make bench` and status.
    private var batches = 0
    private var jobs = 0
    /// How many batches have taken the lead (guarded by `lock`); a batch's place in that order is its
    /// ticket. `finished` (guarded by `stages`) counts those whose `finish` has run: each finishes once
    /// every batch before it has, and an exclusive writer leads once every batch has.
    private var issued: UInt64 = 0
    private var finished: UInt64 = 0
    private let stages = NSCondition()

    /// Where the batches of waiting tasks are led, taken in turn: serial, so each runs on a thread of its
    /// own (no pool's width to exhaust), and more than one, so that a batch prepares while the one before
    /// it commits. A batch queued behind another on the same queue began after it, and a batch waits only
    /// for batches that began before it: no cycle.
    private let leaders: [DispatchQueue]
    private var nextLeader = 0

    init(maxBatch: Int, overdue: UInt64 = .max) {
        self.maxBatch = max(1, maxBatch)
        self.overdue = overdue
        self.leaders = (0..<3).map { DispatchQueue(label: "casevault.writes.lead-\($0)") }
    }

    /// Queues `job` and returns its outcome once a leader (perhaps this caller) has run `perform` for it, as
    /// the only writer.
    func submit(_ job: Job, perform: ([Job]) -> [Outcome]) -> Outcome {
        self.submit(job, prepare: { jobs, _ in perform(jobs) }, finish: { $0 })
    }

    /// Queues `job` and returns its outcome once a leader (perhaps this caller) has run `prepare` and then
    /// `finish` for its batch. `prepare` runs as the only writer; it may call the function it is given to
    /// wait until every batch before it has finished. `finish` runs after the lead has passed on (a later
    /// batch may be preparing meanwhile), once every batch before it has finished, and before any later
    /// batch finishes or any exclusive writer leads.
    func submit<Staged>(
        _ job: Job, prepare: (_ jobs: [Job], _ drain: () -> Void) -> Staged, finish: (Staged) -> [Outcome]
    ) -> Outcome {
        let wakeup = DispatchSemaphore(value: 0)
        let me = Waiter(job: job, wakeup: wakeup)
        self.lock.lock()
        self.pending.append(me)
        if self.busy {
            self.lock.unlock()
            wakeup.wait()
            if let outcome = me.outcome {
                return outcome
            }
            // Woken without an outcome: the lead was handed to this caller.
        } else {
            self.busy = true
            self.lock.unlock()
        }
        self.lead(me, prepare: prepare, finish: finish)
        return me.outcome!
    }

    /// `submit(_:prepare:finish:)` for a caller that waits suspended: no thread is held while it waits. A
    /// caller that finds no batch leading, or is handed the lead, has its batch led on one of `leaders`.
    func submit<Staged>(
        _ job: Job, prepare: @escaping @Sendable (_ jobs: [Job], _ drain: () -> Void) -> Staged,
        finish: @escaping @Sendable (Staged) -> [Outcome]
    ) async -> Outcome where Outcome: Sendable {
        await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
            let me = Waiter(job: job, wakeup: nil) { continuation.resume(returning: $0) }
            // Called while `me` is queued; the queue's closure holds it until its batch is led.
            me.leadOnThread = { [unowned me] queue in
                let waiter = me
                queue.async {
                    self.lead(waiter, prepare: prepare, finish: finish)
                    continuation.resume(returning: waiter.outcome!)
                }
            }
            self.lock.lock()
            self.pending.append(me)
            if !self.busy {
                self.busy = true
                me.takeLead(self.nextLeaderQueue())
            }
            self.lock.unlock()
        }
    }

    /// Leads the batch of `me`, which holds the lead: takes the puts queued behind it, runs `prepare`,
    /// passes the lead on, runs `finish` once every batch before it has, and tells the others in the batch
    /// their outcomes. `me`'s own outcome is set; its caller returns or resumes it.
    private func lead<Staged>(
        _ me: Waiter, prepare: (_ jobs: [Job], _ drain: () -> Void) -> Staged, finish: (Staged) -> [Outcome]
    ) {
        self.lock.lock()
        self.pending.removeAll { $0 === me }
        let others = Array(self.pending.prefix(self.maxBatch - 1))
        self.pending.removeFirst(others.count)
        self.batches += 1
        self.jobs += others.count + 1
        self.issued += 1
        let ticket = self.issued
        self.lock.unlock()

        let batch = [me] + others
        let staged = prepare(batch.map(\.job)) { self.awaitFinished(ticket - 1) }
        self.lock.lock()
        self.passLead()
        self.lock.unlock()
        self.awaitFinished(ticket - 1)
        for (waiter, outcome) in zip(batch, finish(staged)) {
            waiter.outcome = outcome
        }
        self.stages.lock()
        self.finished = ticket
        self.stages.broadcast()
        self.stages.unlock()
        for waiter in others {
            waiter.finished()
        }
    }

    /// The next of `leaders`, in turn. Called with `lock` held.
    private func nextLeaderQueue() -> DispatchQueue {
        defer { self.nextLeader = (self.nextLeader + 1) % self.leaders.count }
        return self.leaders[self.nextLeader]
    }

    /// Waits until the first `count` batches to lead have finished.
    private func awaitFinished(_ count: UInt64) {
        self.stages.lock()
        while self.finished < count { self.stages.wait() }
        self.stages.unlock()
    }

    /// Batches that led so far, and the jobs they carried.
    var counts: (batches: Int, jobs: Int) {
        self.lock.lock()
        defer { self.lock.unlock() }
        return (self.batches, self.jobs)
    }

    /// How many puts and exclusive writers wait for the lead.
    var waiting: Int {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.pending.count + self.exclusive.count
    }

    /// Whether a put or an exclusive writer is waiting for the lead.
    var hasWaiting: Bool { self.waiting > 0 }

    /// Whether a put or an exclusive writer has waited for the lead `nanoseconds` or more: a long exclusive
    /// writer (a shred) ends its turn then, between two of its sections.
    func hasWaited(atLeast nanoseconds: UInt64) -> Bool {
        self.lock.lock()
        let (put, writer) = (self.pending.first?.since, self.exclusive.first?.since)
        self.lock.unlock()
        let oldest = min(put ?? .max, writer ?? .max)
        let now = DispatchTime.now().uptimeNanoseconds
        return oldest != .max && (now > oldest ? now - oldest : 0) >= nanoseconds
    }

    /// Runs `body` as the only writer, once every batch that led before it has finished.
    func exclusive<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        self.lock.lock()
        if self.busy {
            let turn = DispatchSemaphore(value: 0)
            self.exclusive.append((turn, DispatchTime.now().uptimeNanoseconds))
            self.lock.unlock()
            turn.wait()
            self.lock.lock()
        } else {
            self.busy = true
        }
        // No batch takes the lead while this writer holds it.
        let issued = self.issued
        self.lock.unlock()
        self.awaitFinished(issued)
        defer {
            self.lock.lock()
            self.passLead()
            self.lock.unlock()
        }
        return try body()
    }

    /// Hands the lead on: to a waiting exclusive writer, unless the oldest queued put has waited `overdue`
    /// and came before it; else to the oldest queued put (a put that leads takes the puts queued behind it
    /// into its batch). An exclusive writer then waits only for the puts queued before it, however many
    /// come after, and a put for the exclusive writers queued before it and one turn. Called with `lock`
    /// held.
    private func passLead() {
        let now = DispatchTime.now().uptimeNanoseconds
        let overduePut = self.pending.first.map { put in
            now > put.since && now - put.since >= self.overdue && put.since <= self.exclusive.first?.since ?? .max
        }
        if !self.exclusive.isEmpty, overduePut != true {
            self.exclusive.removeFirst().turn.signal()
        } else if let next = self.pending.first {
            next.takeLead(self.nextLeaderQueue())
        } else {
            self.busy = false
        }
    }
}

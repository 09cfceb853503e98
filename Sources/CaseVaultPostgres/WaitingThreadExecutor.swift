internal import Dispatch
internal import Synchronization

/// A task executor whose jobs the thread blocked on the task runs: `PostgresStorage.wait` blocks a thread
/// until a task's statements are answered, and that task runs on the blocked thread itself, needing no
/// thread of Swift's cooperative pool. The pool has one thread per core; code blocking all of them (a
/// test process's synchronous tests, say) would otherwise leave the task unrun for as long, and a case
/// lock's statements answered "no answer" at their limit although the database had answered at once.
/// That holds while the task stays in code of no actor, as `wait`'s bodies do: a default actor's jobs would
/// be run here too, and `Task.sleep` or a task of its own would still need the pool.
///
/// `run(until:)` runs the jobs as they come until the deadline; `handOff()`, for a caller that stops
/// waiting before its task ended, sends what is queued, and every job after, to the global executor, so
/// that the task still ends (its connection closed fails what it awaits).
///
/// Written here as no package used offers it: swift-nio has no event loop as a task executor in the
/// version this package resolves, and an event loop would run the task's code among the connections it
/// serves, where this thread is idle anyway.
final class WaitingThreadExecutor: TaskExecutor {
    private struct Queue {
        var jobs: [UnownedJob] = []
        var handedOff = false
    }

    private let queue = Mutex(Queue())
    /// Signalled once for each job queued, and by `wake`.
    private let ready = DispatchSemaphore(value: 0)

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let queued = self.queue.withLock { queue in
            guard !queue.handedOff else { return false }
            queue.jobs.append(job)
            return true
        }
        if queued {
            self.ready.signal()
        } else {
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
        }
    }

    /// Wakes `run(until:)` to look at `isDone` again.
    func wake() {
        self.ready.signal()
    }

    /// Runs the queued jobs on this thread, and each job queued after, until `isDone` answers true after a
    /// job or a `wake`: true then; false when `deadline` passed first. The deadline is looked at between
    /// jobs: a job runs to its end (a statement's are short: decoding what the connection read, sending the
    /// next).
    func run(until deadline: DispatchTime, isDone: () -> Bool) -> Bool {
        while true {
            while let job = self.queue.withLock({ $0.jobs.isEmpty ? nil : $0.jobs.removeFirst() }) {
                job.runSynchronously(on: self.asUnownedTaskExecutor())
                if DispatchTime.now() >= deadline { return isDone() }
            }
            if isDone() { return true }
            if self.ready.wait(timeout: deadline) == .timedOut { return isDone() }
        }
    }

    /// Sends the queued jobs, and every job queued from now on, to the global executor.
    func handOff() {
        let jobs = self.queue.withLock { queue in
            queue.handedOff = true
            defer { queue.jobs = [] }
            return queue.jobs
        }
        for job in jobs { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }
}

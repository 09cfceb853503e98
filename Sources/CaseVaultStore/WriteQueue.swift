internal import CaseVaultCore
internal import Foundation

/// Group commit: concurrent puts queue up, and whichever caller finds no flush under way becomes the
/// leader, takes every queued put (up to `maxBatch`) and makes them durable with one filesystem flush and
/// one index commit; the others sleep until their result is in. Shreds and recovery take the writer role
/// exclusively. Leader/follower rather than a dedicated thread, so an idle store runs no thread at all.
final class WriteQueue<Job: AnyObject, Outcome>: @unchecked Sendable {
    // @unchecked: every mutable field is guarded by `condition`.
    private let condition = NSCondition()
    private var pending: [Job] = []
    private var outcomes: [ObjectIdentifier: Outcome] = [:]
    private var busy = false
    private let maxBatch: Int

    init(maxBatch: Int) {
        self.maxBatch = maxBatch
    }

    /// Queues `job` and returns its outcome once a leader (perhaps this caller) has flushed it.
    func submit(_ job: Job, perform: ([Job]) -> [Outcome]) -> Outcome {
        let key = ObjectIdentifier(job)
        self.condition.lock()
        self.pending.append(job)
        while true {
            if let outcome = self.outcomes.removeValue(forKey: key) {
                self.condition.unlock()
                return outcome
            }
            if !self.busy {
                self.busy = true
                let count = min(self.pending.count, self.maxBatch)
                let batch = Array(self.pending.prefix(count))
                self.pending.removeFirst(count)
                self.condition.unlock()
                let results = perform(batch)
                self.condition.lock()
                for (job, outcome) in zip(batch, results) {
                    self.outcomes[ObjectIdentifier(job)] = outcome
                }
                self.busy = false
                self.condition.broadcast()
            } else {
                self.condition.wait()
            }
        }
    }

    /// Runs `body` as the only writer.
    func exclusive<Result>(_ body: () throws(CaseVaultError) -> Result) throws(CaseVaultError) -> Result {
        self.condition.lock()
        while self.busy {
            self.condition.wait()
        }
        self.busy = true
        self.condition.unlock()
        defer {
            self.condition.lock()
            self.busy = false
            self.condition.broadcast()
            self.condition.unlock()
        }
        return try body()
    }
}

import Foundation
import Synchronization
import Testing

@testable import CaseVaultStore

@Suite("Group commit's queue")
struct WriteQueueTests {
    final class Job: Sendable {}

    @Test(
        "a writer that leads sees how long the oldest put or writer behind it has waited, so that a shred ends its turn once one has waited its turn's length, and not before"
    )
    func waitedSince() throws {
        let queue = WriteQueue<Job, Int>(maxBatch: 8)
        let done = Mutex(0)
        #expect(!queue.hasWaited(atLeast: 0), "nothing waits")
        queue.exclusive {
            let put = Thread {
                _ = queue.submit(Job()) { jobs in jobs.map { _ in 1 } }
                done.withLock { $0 += 1 }
            }
            put.start()
            let deadline = Date().addingTimeInterval(10)
            while !queue.hasWaiting && Date() < deadline { usleep(1000) }
            #expect(queue.hasWaiting)
            #expect(queue.hasWaited(atLeast: 0))
            #expect(!queue.hasWaited(atLeast: 60_000_000_000), "a put that began to wait just now waited a minute")
            usleep(30_000)
            #expect(queue.hasWaited(atLeast: 20_000_000), "a put waited 30 ms and was not seen to")
            #expect(done.withLock { $0 } == 0, "the put went in while another writer led")
        }
        let deadline = Date().addingTimeInterval(10)
        while done.withLock({ $0 }) == 0 && Date() < deadline { usleep(1000) }
        #expect(done.withLock { $0 } == 1)
        #expect(!queue.hasWaited(atLeast: 0), "the put was let in and nothing waits")

        // An exclusive writer waiting counts as a put does.
        let writerWaits = Mutex(false)
        queue.exclusive {
            let writer = Thread {
                queue.exclusive { writerWaits.withLock { $0 = true } }
            }
            writer.start()
            let deadline = Date().addingTimeInterval(10)
            while !queue.hasWaiting && Date() < deadline { usleep(1000) }
            usleep(30_000)
            #expect(queue.hasWaited(atLeast: 20_000_000))
            #expect(!writerWaits.withLock { $0 })
        }
        let end = Date().addingTimeInterval(10)
        while !writerWaits.withLock({ $0 }) && Date() < end { usleep(1000) }
        #expect(writerWaits.withLock { $0 })
    }

    @Test(
        "an exclusive writer leads before the puts queued ahead of it, unless the oldest put has waited its overdue time and came before the writer: then the put leads first; a put that came after the writer never leads before it"
    )
    func overduePutLeadsFirst() throws {
        // (overdue, whether the put queues before the writer, how long the leader holds on once both wait,
        // who leads next)
        let cases: [(UInt64, Bool, UInt32, String)] = [
            (5_000_000_000, true, 0, "writer"), (20_000_000, true, 40_000, "put"),
            (20_000_000, false, 40_000, "writer"),
        ]
        for (overdue, putFirst, hold, first) in cases {
            let queue = WriteQueue<Job, Int>(maxBatch: 8, overdue: overdue)
            let order = Mutex<[String]>([])
            queue.exclusive {
                let put = Thread {
                    _ = queue.submit(Job()) { jobs in
                        order.withLock { $0.append("put") }
                        return jobs.map { _ in 1 }
                    }
                }
                let writer = Thread {
                    queue.exclusive { order.withLock { $0.append("writer") } }
                }
                for (count, thread) in zip(1..., putFirst ? [put, writer] : [writer, put]) {
                    thread.start()
                    let deadline = Date().addingTimeInterval(10)
                    while queue.waiting < count && Date() < deadline { usleep(1000) }
                }
                usleep(hold)
            }
            let deadline = Date().addingTimeInterval(10)
            while order.withLock({ $0.count }) < 2 && Date() < deadline { usleep(1000) }
            #expect(
                order.withLock { $0.first } == first,
                "overdue \(overdue) ns, put first \(putFirst): \(order.withLock { $0 })")
        }
    }

    @Test(
        "a batch prepares while the batch before it finishes; batches finish in the order they led, and an exclusive writer leads only once every batch has finished"
    )
    func stagesOverlapInOrder() throws {
        let queue = WriteQueue<Job, Int>(maxBatch: 8)
        let order = Mutex<[String]>([])
        let firstFinishing = Mutex(false)
        let release = DispatchSemaphore(value: 0)
        func wait(until condition: () -> Bool) {
            let deadline = Date().addingTimeInterval(10)
            while !condition() && Date() < deadline { usleep(1000) }
        }
        let first = Thread {
            _ = queue.submit(
                Job(), prepare: { jobs, _ in jobs.count },
                finish: { count in
                    firstFinishing.withLock { $0 = true }
                    release.wait()
                    order.withLock { $0.append("first finished") }
                    return [count]
                })
        }
        first.start()
        wait { firstFinishing.withLock { $0 } }
        let second = Thread {
            _ = queue.submit(
                Job(),
                prepare: { jobs, _ in
                    order.withLock { $0.append("second prepared") }
                    return jobs.count
                },
                finish: { count in
                    order.withLock { $0.append("second finished") }
                    return [count]
                })
        }
        second.start()
        wait { order.withLock { $0.contains("second prepared") } }
        let writerAsks = Mutex(false)
        let writer = Thread {
            writerAsks.withLock { $0 = true }
            queue.exclusive { order.withLock { $0.append("writer") } }
        }
        writer.start()
        wait { writerAsks.withLock { $0 } }
        usleep(50_000)
        #expect(order.withLock { $0 } == ["second prepared"], "only the second batch's writes may go on meanwhile")
        release.signal()
        wait { order.withLock { $0.count } == 4 }
        #expect(order.withLock { $0 } == ["second prepared", "first finished", "second finished", "writer"])
    }

    final class Numbered: Sendable {
        let number: Int
        init(_ number: Int) { self.number = number }
    }

    @Test(
        "puts that wait as suspended tasks hold no thread: more of them than the cooperative pool has threads queue behind a writer that holds the lead, join batches with a blocked thread's put, and each gets its own outcome once its batch finishes"
    )
    func tasksWaitSuspended() async throws {
        let queue = WriteQueue<Numbered, Int>(maxBatch: 8)
        let tasks = 64
        let release = DispatchSemaphore(value: 0)
        let holding = Mutex(false)
        let writer = Thread {
            queue.exclusive {
                holding.withLock { $0 = true }
                release.wait()
            }
        }
        writer.start()
        let threadOutcome = Mutex<Int?>(nil)
        // Let go of the lead from a thread, once every put waits, or no put has joined the queue for five
        // minutes (`StallDeadline`): were a waiting task to block its thread, the pool's few threads would
        // run out and fewer would queue.
        let queued = Mutex(0)
        let cap = StallDeadline.cap()
        let releaser = Thread {
            while !holding.withLock({ $0 }) && Date() < cap { usleep(1000) }
            var patience = StallDeadline(progress: 0)
            while queue.waiting < tasks && patience.waitsOn(progress: queue.waiting) { usleep(1000) }
            // A blocked thread's put joins them, last in the queue.
            let put = Thread {
                let outcome = queue.submit(
                    Numbered(tasks), prepare: { jobs, _ in jobs.map(\.number) }, finish: { $0.map { $0 * 10 } })
                threadOutcome.withLock { $0 = outcome }
            }
            put.start()
            var joining = StallDeadline(progress: queue.waiting)
            while queue.waiting < tasks + 1 && joining.waitsOn(progress: queue.waiting) { usleep(1000) }
            queued.withLock { $0 = queue.waiting }
            release.signal()
        }
        releaser.start()
        // The tasks queue only once the writer leads: one that came first would lead at once.
        try await StallDeadline.wait(until: cap) { holding.withLock { $0 } }
        let outcomes = await withTaskGroup(of: (Int, Int).self) { group in
            for number in 0..<tasks {
                group.addTask {
                    let outcome = await queue.submit(
                        Numbered(number), prepare: { jobs, _ in jobs.map(\.number) }, finish: { $0.map { $0 * 10 } })
                    return (number, outcome)
                }
            }
            return await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(queued.withLock { $0 } == tasks + 1, "not every put could queue while the lead was held")
        #expect(outcomes.count == tasks)
        #expect(outcomes.allSatisfy { $0.value == $0.key * 10 }, "a task got another put's outcome")
        try await StallDeadline.wait(until: cap) { threadOutcome.withLock { $0 } != nil }
        #expect(threadOutcome.withLock { $0 } == tasks * 10)
        let counts = queue.counts
        #expect(counts.jobs == tasks + 1)
        #expect(counts.batches == (tasks + 1 + 7) / 8, "the queued puts were not led in full batches: \(counts)")
    }
}

import CaseVaultCore
import Foundation
import Synchronization
import Testing

@testable import CaseVaultStore

@Suite("A case's lock")
struct CaseLocksTests {
    final class Count: Sendable {
        let value = Mutex(0)
    }

    final class Names: Sendable {
        let names = Mutex<[String]>([])
    }

    @Test(
        "tasks and threads that want one case hold it one at a time, every one of them in the end; a task that waits holds no thread, and another case is free meanwhile"
    )
    func oneAtATime() async throws {
        let locks = CaseLocks()
        let (busy, other) = (Self.caseID(1), Self.caseID(2))
        let inside = Mutex((now: 0, most: 0, done: 0))
        let enter: @Sendable () -> Void = {
            inside.withLock {
                $0.now += 1
                $0.most = max($0.most, $0.now)
            }
        }
        let leave: @Sendable () -> Void = {
            inside.withLock {
                $0.now -= 1
                $0.done += 1
            }
        }
        let tasks = 64
        let started = Count()
        let queued = Count()
        let holding = Mutex(false)
        let otherTaken = Mutex<Bool?>(nil)
        let cap = StallDeadline.cap()
        // Holds the case until every task has started and waits for it and the other case was taken, or
        // nothing of that has moved for five minutes (`StallDeadline`): were a waiting task to block its
        // thread, the cooperative pool's few threads would run out and fewer would start.
        let holder = Thread {
            try? locks.withLock(busy) {
                enter()
                holding.withLock { $0 = true }
                var patience = StallDeadline(progress: 0)
                while locks.waiters(busy) < tasks + 1 || otherTaken.withLock({ $0 }) == nil {
                    // Anything that moves counts: a task started, a waiter queued, the other case taken.
                    let moved =
                        started.value.withLock { $0 } + locks.waiters(busy)
                        + (otherTaken.withLock { $0 } == nil ? 0 : 1)
                    guard patience.waitsOn(progress: moved) else { break }
                    usleep(1000)
                }
                queued.value.withLock { $0 = started.value.withLock { $0 } }
                holding.withLock { $0 = false }
                leave()
            }
        }
        holder.start()
        try await StallDeadline.wait(until: cap) { holding.withLock { $0 } }
        let waiter = Thread {
            try? locks.withLock(busy) {
                enter()
                usleep(1000)
                leave()
            }
        }
        waiter.start()
        async let ran: Void = withTaskGroup(of: Void.self) { group in
            for _ in 0..<tasks {
                group.addTask {
                    started.value.withLock { $0 += 1 }
                    try? await locks.awaitLock(busy) {
                        enter()
                        leave()
                    }
                }
            }
        }
        try await locks.awaitLock(other) { otherTaken.withLock { $0 = holding.withLock { $0 } } }
        await ran
        #expect(otherTaken.withLock { $0 } == true, "another case was not free while this one was held")
        #expect(queued.value.withLock { $0 } == tasks, "not every task could wait while the case was held")
        try await StallDeadline.wait(until: cap) { inside.withLock { $0.done } >= tasks + 2 }
        #expect(inside.withLock { $0.done } == tasks + 2)
        #expect(inside.withLock { $0.most } == 1, "two held the case at once")
    }

    @Test(
        "a case goes to whoever has waited longest for it, thread or task, so that a stream of filings cannot keep a hold or a closing out"
    )
    func oldestFirst() async throws {
        let locks = CaseLocks()
        let id = Self.caseID(3)
        let order = Names()
        let release = DispatchSemaphore(value: 0)
        let holding = Mutex(false)
        let cap = StallDeadline.cap()
        let holder = Thread {
            try? locks.withLock(id) {
                holding.withLock { $0 = true }
                _ = release.wait(timeout: .now() + cap.timeIntervalSinceNow)
            }
        }
        holder.start()
        try await StallDeadline.wait(until: cap) { holding.withLock { $0 } }
        var tasks: [Task<Void, Never>] = []
        for (number, name) in ["thread 1", "task 2", "thread 3", "task 4", "thread 5"].enumerated() {
            if name.hasPrefix("thread") {
                Thread { try? locks.withLock(id) { order.names.withLock { $0.append(name) } } }.start()
            } else {
                tasks.append(Task { try? await locks.awaitLock(id) { order.names.withLock { $0.append(name) } } })
            }
            try await StallDeadline.wait(until: cap) { locks.waiters(id) >= number + 1 }
        }
        release.signal()
        for task in tasks { await task.value }
        try await StallDeadline.wait(until: cap) { order.names.withLock { $0.count } >= 5 }
        #expect(order.names.withLock { $0 } == ["thread 1", "task 2", "thread 3", "task 4", "thread 5"])
    }

    static func caseID(_ byte: UInt8) -> CaseID {
        CaseID(bytes: Array(repeating: byte, count: 16))
    }
}

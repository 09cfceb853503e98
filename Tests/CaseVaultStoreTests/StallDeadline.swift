import Foundation

/// How long a test waits for tasks that need Swift's cooperative pool to run. swift-testing runs the
/// synchronous tests on that pool too, and on two cores they hold both its threads for minutes (320 s and
/// 338 s seen in `make test`), so nothing a test counts moves meanwhile: a thread's wait (`waitsOn`) gives
/// up five minutes after what it counts last moved, and until it first moves, only at half an hour from its
/// start (`cap()`). A test whose tasks really block their threads still fails five minutes after the last
/// of them started.
struct StallDeadline {
    /// Half an hour from the start: the wait never goes past it.
    let cap: Date
    private var last: Int
    private var deadline: Date

    /// A wait whose count starts at `progress`.
    init(progress: Int) {
        self.cap = Self.cap()
        self.last = progress
        self.deadline = self.cap
    }

    /// Whether to wait on, given what is counted now.
    mutating func waitsOn(progress: Int) -> Bool {
        let now = Date()
        if progress != self.last {
            self.last = progress
            self.deadline = min(self.cap, now.addingTimeInterval(300))
        }
        return now < self.deadline
    }

    /// Half an hour from now: how long a test waits for what must come unless the code under test is wrong.
    static func cap() -> Date {
        Date().addingTimeInterval(1800)
    }

    /// Waits, as a task, until `condition` holds or `deadline` has passed.
    static func wait(until deadline: Date, _ condition: () -> Bool) async throws {
        while !condition() && Date() < deadline { try await Task.sleep(for: .milliseconds(1)) }
    }
}

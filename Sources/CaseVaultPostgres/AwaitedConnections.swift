package import CaseVaultCore
internal import Synchronization

/// How many of the storage's connections a kind of awaited call (`runAwaiting`; `awaitWithCaseLock` and
/// `awaitFileIfUnchanged`) may use at once. Those calls are not bounded by the blocking pool's threads, as
/// the blocking calls are: without this, a burst of requests would open a connection for each one in flight,
/// up to the server's `max_connections`, past what PostgreSQL accepts (its own `max_connections`, 100 by
/// default, shared by every daemon). A call beyond the limit waits, suspended, for one to end; waiters go in
/// the order they came. An awaited call holds one permit at a time and asks for no second while it holds it, so that the
/// waits cannot deadlock. A holder's statements are bounded in time (`PostgresStorage.bounded`); a new
/// connection's set-up, which may come first, only by PostgresNIO's own connect timeout.
package final class AwaitedConnections: Sendable {
    private struct State {
        var free: Int
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    package init(limit: Int) {
        self.state = Mutex(State(free: limit))
    }

    /// How many calls wait for a permit now, and how many permits are free.
    package var waiting: Int { self.state.withLock { $0.waiting.count } }
    package var free: Int { self.state.withLock { $0.free } }

    /// Runs `body` once one of the connections is free to it, and frees it when `body` ends.
    package func withPermit<T>(_ body: () async throws(CaseVaultError) -> T) async throws(CaseVaultError) -> T {
        await self.take()
        defer { self.give() }
        return try await body()
    }

    private func take() async {
        let taken = self.state.withLock { state in
            guard state.free > 0 else { return false }
            state.free -= 1
            return true
        }
        if taken { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = self.state.withLock { state in
                // Given back between the first look and now: taken at once.
                guard state.free == 0 else {
                    state.free -= 1
                    return true
                }
                state.waiting.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    private func give() {
        let next = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.waiting.isEmpty else {
                state.free += 1
                return nil
            }
            // Handed straight to the first waiter: the permit is never free in between.
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}

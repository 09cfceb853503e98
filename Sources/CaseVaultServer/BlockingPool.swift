internal import NIOPosix
internal import ServiceLifecycle

/// The threads that run the store's blocking calls (reads, writes, flushes). Swift's cooperative pool has
/// one thread per core: a flush there would stall every other request, and concurrent writers could never
/// meet in one group commit. Shut down after the server, so that requests in flight finish.
final class BlockingPool: Service, Sendable {
    let pool: NIOThreadPool

    init(threads: Int) {
        self.pool = NIOThreadPool(numberOfThreads: threads)
        self.pool.start()
    }

    /// Runs `body` on a pool thread.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await self.pool.runIfActive(body)
    }

    /// Starts `body` on a pool thread and returns at once, for work that goes on after its handler has
    /// answered (a backup streams while its response is written): no unstructured task, and the pool's
    /// shutdown, after the server's, waits for it. `body` is told `false`, and must end what it serves,
    /// when the pool is already shutting down.
    func start(_ body: @escaping @Sendable (_ active: Bool) -> Void) {
        self.pool.submit { state in
            if case .active = state { body(true) } else { body(false) }
        }
    }

    func run() async throws {
        try? await gracefulShutdown()
        try await self.pool.shutdownGracefully()
    }
}

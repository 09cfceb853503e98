internal import CaseVaultCore
internal import GRDB
internal import Synchronization

/// Read-only connections for the index's point lookups (`Index.lookup`, what every get asks), each used by
/// one thread at a time and taken from a list under a mutex. GRDB's pool hands its readers out under a
/// dispatch-queue lock that two reading threads contend for on every get: a profile of in-process gets
/// showed them sleeping in it. Opened on demand, up to `maximum`; past that, a lookup goes to the pool.
final class LookupConnections: Sendable {
    static let maximum = 8

    private struct State {
        var idle: [DatabaseQueue] = []
        var opened = 0
        var closed = false
    }

    /// What a lookup gets from the list.
    private enum Take {
        case closed, busy
        case idle(DatabaseQueue)
        case new
    }

    private let path: String
    private let state = Mutex(State())

    init(path: String) {
        self.path = path
    }

    /// Runs `body` on an idle connection (a new one when none is idle and fewer than `maximum` are open),
    /// without a transaction; `nil` when every connection is busy.
    func read<T>(_ body: (Database) throws -> T) throws -> T? {
        let take = self.state.withLock { state -> Take in
            if state.closed { return .closed }
            if let connection = state.idle.popLast() { return .idle(connection) }
            guard state.opened < Self.maximum else { return .busy }
            state.opened += 1
            return .new
        }
        let connection: DatabaseQueue
        switch take {
        case .closed: throw CaseVaultError(.storageFailure, "the index is closed")
        case .busy: return nil
        case .idle(let idle): connection = idle
        case .new:
            do {
                connection = try self.open()
            } catch {
                self.state.withLock { $0.opened -= 1 }
                throw error
            }
        }
        defer {
            let keep = self.state.withLock { state in
                if !state.closed { state.idle.append(connection) }
                return !state.closed
            }
            if !keep { try? connection.close() }
        }
        return try connection.inDatabase(body)
    }

    /// Closes the idle connections; one in use is closed when its lookup returns.
    func close() {
        let idle = self.state.withLock { state in
            state.closed = true
            defer { state.idle.removeAll() }
            return state.idle
        }
        for connection in idle { try? connection.close() }
    }

    private func open() throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(10)
        return try DatabaseQueue(path: self.path, configuration: configuration)
    }
}

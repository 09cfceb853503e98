internal import CaseVaultCore
internal import Dispatch
internal import Synchronization

/// One writer per case at a time: a filing reads the case (its state, agreements, notes), asks the policy,
/// and commits the effect; holding the case between the read and the commit keeps a note from slipping in
/// after a final agreement was decided. Different cases proceed in parallel and still share flushes.
///
/// A blocked thread (`withLock`: holds, closings, assignments) and a suspended task (`awaitLock`: the
/// server's filings) wait for a case in one line, first come first served: a release hands the case to the
/// oldest waiter of either kind, so that a stream of filings cannot keep a hold or a closing out.
final class CaseLocks: Sendable {
    private enum Waiter {
        case thread(DispatchSemaphore)
        case task(CheckedContinuation<Void, Never>)
    }

    private struct State {
        var held = Set<CaseID>()
        /// Who waits for each held case, oldest first.
        var waiting: [CaseID: [Waiter]] = [:]
    }

    private let state = Mutex(State())

    func withLock<Result>(_ id: CaseID, _ body: () throws(CaseVaultError) -> Result) throws(CaseVaultError) -> Result {
        let turn = self.state.withLock { state -> DispatchSemaphore? in
            guard state.held.insert(id).inserted else {
                let turn = DispatchSemaphore(value: 0)
                state.waiting[id, default: []].append(.thread(turn))
                return turn
            }
            return nil
        }
        // Signalled once the case has been handed to this thread.
        turn?.wait()
        defer { self.release(id) }
        return try body()
    }

    /// `withLock` for a caller that waits suspended, holding no thread.
    func awaitLock<Result>(
        _ id: CaseID, _ body: () async throws(CaseVaultError) -> Result
    ) async throws(CaseVaultError) -> Result {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let taken = self.state.withLock { state -> Bool in
                guard state.held.insert(id).inserted else {
                    state.waiting[id, default: []].append(.task(continuation))
                    return false
                }
                return true
            }
            if taken { continuation.resume() }
        }
        defer { self.release(id) }
        return try await body()
    }

    /// How many wait for case `id` (for tests).
    func waiters(_ id: CaseID) -> Int {
        self.state.withLock { $0.waiting[id]?.count ?? 0 }
    }

    /// Hands case `id` to its oldest waiter, or frees it.
    private func release(_ id: CaseID) {
        let next = self.state.withLock { state -> Waiter? in
            guard var waiting = state.waiting[id], !waiting.isEmpty else {
                state.held.remove(id)
                return nil
            }
            let next = waiting.removeFirst()
            state.waiting[id] = waiting.isEmpty ? nil : waiting
            return next
        }
        switch next {
        case .thread(let turn): turn.signal()
        case .task(let continuation): continuation.resume()
        case nil: break
        }
    }
}

internal import CaseVaultCore
internal import Foundation

/// One writer per case at a time: a filing reads the case (its state, agreements, notes), asks the policy,
/// and commits the effect; holding the case between the read and the commit keeps a note from slipping in
/// after a final agreement was decided. Different cases proceed in parallel and still share flushes.
final class CaseLocks: @unchecked Sendable {
    // @unchecked: `held` is guarded by `condition`.
    private let condition = NSCondition()
    private var held = Set<CaseID>()

    func withLock<Result>(_ id: CaseID, _ body: () throws(CaseVaultError) -> Result) throws(CaseVaultError) -> Result {
        self.condition.lock()
        while self.held.contains(id) {
            self.condition.wait()
        }
        self.held.insert(id)
        self.condition.unlock()
        defer {
            self.condition.lock()
            self.held.remove(id)
            self.condition.broadcast()
            self.condition.unlock()
        }
        return try body()
    }
}

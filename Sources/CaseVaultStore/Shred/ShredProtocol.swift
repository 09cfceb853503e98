/// The steps of a shred (docs/architecture.md), in order. Each step is durable before the next starts, and each is
/// safe to repeat, so recovery simply runs the remaining steps again.
enum ShredStep: Int, CaseIterable, Comparable {
    /// Mark the records `shredding` in the index (committed).
    case mark
    /// Overwrite each key slot in place with random bytes, and flush. From here the content is unreadable.
    case overwriteKeySlots
    /// Overwrite each sealed blob's region in place with random bytes, and flush.
    case destroyCiphertext
    /// Delete the rows, free the slots and append to the shred ledger (committed).
    case removeFromIndex

    /// Where to resume for a row found `shredding` when the store opens: it was marked, so the rest is
    /// repeated from the slot overwrite on.
    static let resumePoint = ShredStep.overwriteKeySlots

    static func < (lhs: ShredStep, rhs: ShredStep) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The steps that remain from `start` on.
    static func steps(from start: ShredStep) -> [ShredStep] {
        Self.allCases.filter { $0 >= start }
    }
}

/// The steps of a shred (docs/ARCHITECTURE.md), in order. Each step is durable before the next starts, and
/// each is safe to repeat, so recovery simply runs the remaining steps again.
package enum ShredStep: Int, CaseIterable, Comparable, Sendable {
    /// Mark the records `shredding` in the index (committed).
    case mark
    /// Overwrite each key slot in place with random bytes, and flush. From here the content is unreadable.
    case overwriteKeySlots
    /// Overwrite each sealed blob's region in place with random bytes, and flush.
    case destroyCiphertext
    /// Delete the rows, free the slots and append to the shred ledger (committed).
    case removeFromIndex

    package static func < (lhs: ShredStep, rhs: ShredStep) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Where one shred stands, as a value: which step runs next, and what a reader or a crash finds at each
/// point. The store runs it (`RecordStore.runShred`); its order and its recovery are tested without files.
package struct ShredProgress: Equatable, Sendable {
    /// The step to run next; `nil` once the shred is complete.
    package private(set) var next: ShredStep?

    /// A shred ordered now: it begins by marking its records.
    package static let ordered = ShredProgress(next: .mark)

    /// A shred found marked in the index (by the store's open after a crash, or before a new shred after
    /// a failure): what a mark made durable is done, and everything after it is run again, never trusted
    /// to a flush that may have failed.
    package static let resumed = ShredProgress(next: .overwriteKeySlots)

    /// The step `next` has run and is durable: moves on to the one after it.
    package mutating func finished(_ step: ShredStep) {
        precondition(step == self.next, "a shred's steps run in order, each once per run")
        self.next = ShredStep.allCases.first { $0 > step }
    }

    /// Whether the record's content can still be decrypted: until its key slot's overwrite is durable.
    package var contentReadable: Bool {
        guard let next = self.next else { return false }
        return next <= .overwriteKeySlots
    }

    /// Whether a crash now leaves the record marked `shredding` in the index, for the next open to finish.
    package var markedInIndex: Bool {
        guard let next = self.next else { return false }
        return next > .mark
    }

    /// Whether the shred is complete: the row is gone from the index and the ledger names the record.
    package var isComplete: Bool { self.next == nil }
}

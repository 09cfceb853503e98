internal import CaseVaultCore
internal import Synchronization

/// The index rows of live records that gets have read, kept in memory so that the next get of the same
/// record skips the index: a profile of in-process gets (`perf record --call-graph dwarf`, 2 threads) found
/// the point lookup, SQLite's step and the row's decoding, half of a get.
///
/// Only `live` rows enter, and a row stays right for as long as its record lives: nothing but a shred
/// changes a record's row (its mark, then its removal; a rotation rewraps the key in its slot, the slot
/// stays the record's). So every commit that marks or removes records runs inside `changing(_:)`: from
/// before it begins until after it has ended (committed or not), the cache is empty, gets go to the index
/// and keep nothing, so none takes a row from here that the commit has already made stale; and a get that
/// read the index before the change cannot put what it read back afterwards, since it adds its row only
/// if no change began or ended since it began (`generation`). A get that takes a row just before a change
/// begins is what a get that came a moment earlier would be; the shred's overwrite, if it comes between
/// that get's reads, fails its open as it always did.
///
/// Bounded: at `capacity` rows it starts again from empty. Holds ids, case ids, types and places, no
/// content and no key, as the index does. Closed for good when the store closes.
final class LiveRows: Sendable {
    static let capacity = 65_536

    private struct State: ~Copyable {
        var rows: [RecordID: Index.Row] = [:]
        var generation: UInt64 = 0
        /// Changes under way: while any is, the cache neither gives nor keeps a row.
        var changes = 0
        var closed = false

        var isOpen: Bool { self.changes == 0 && !self.closed }

        mutating func reset() {
            self.generation &+= 1
            self.rows.removeAll()
        }
    }

    private let state = Mutex(State())

    /// The cached row of `id`, if a get read it since the last change and none is under way.
    func row(_ id: RecordID) -> Index.Row? {
        self.state.withLock { state in state.isOpen ? state.rows[id] : nil }
    }

    /// Read before a lookup of the index, passed to `insert` after it.
    var generation: UInt64 {
        self.state.withLock { $0.generation }
    }

    /// Keeps `row`, read from the index after `generation` was read, unless a change began or ended since
    /// (the row may be from before it), one is under way, the store closed, or the row is not live.
    func insert(_ row: Index.Row, readAfter generation: UInt64) {
        guard row.state == .live else { return }
        self.state.withLock { state in
            guard state.isOpen, state.generation == generation else { return }
            if state.rows.count >= Self.capacity { state.rows.removeAll(keepingCapacity: true) }
            state.rows[row.metadata.id] = row
        }
    }

    /// Runs `body`, a commit that marks records for shredding or removes them, with the cache empty and
    /// shut from before it begins until after it ends, however it ends.
    func changing<T>(_ body: () throws(CaseVaultError) -> T) throws(CaseVaultError) -> T {
        self.state.withLock { state in
            state.changes += 1
            state.reset()
        }
        defer {
            self.state.withLock { state in
                state.changes -= 1
                state.reset()
            }
        }
        return try body()
    }

    /// Empties the cache and shuts it for good: at close, so that no get served from it outlives the store.
    func close() {
        self.state.withLock { state in
            state.closed = true
            state.reset()
        }
    }
}

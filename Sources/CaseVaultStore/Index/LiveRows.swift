internal import CaseVaultCore
internal import Synchronization

/// The index rows of live records that gets have read, kept in memory so that the next get of the same
/// record skips the index: a profile of in-process gets (`perf record --call-graph dwarf`, 2 threads) found
/// the point lookup, SQLite's step and the row's decoding, half of a get.
///
/// Only `live` rows enter, and a row stays right for as long as its record lives: nothing but a shred
/// changes a record's row (its mark, then its removal; a rotation rewraps the key in its slot, the slot
/// stays the record's). So every commit that marks or removes records empties the cache once it has
/// committed (`invalidate`), and a get that read the index before such a commit cannot put what it read
/// back afterwards: it adds its row only if no invalidation came since it began (`generation`). A get
/// that reads a row just before a shred's mark is what a get that came a moment earlier would be; the
/// shred's overwrite, if it comes between that get's reads, fails its open as today.
///
/// Bounded: at `capacity` rows it starts again from empty. Holds ids, case ids, types and places, no
/// content and no key, as the index does.
final class LiveRows: Sendable {
    static let capacity = 65_536

    private struct State: ~Copyable {
        var rows: [RecordID: Index.Row] = [:]
        var generation: UInt64 = 0
    }

    private let state = Mutex(State())

    /// The cached row of `id`, if a get read it since the last invalidation.
    func row(_ id: RecordID) -> Index.Row? {
        self.state.withLock { $0.rows[id] }
    }

    /// Read before a lookup of the index, passed to `insert` after it.
    var generation: UInt64 {
        self.state.withLock { $0.generation }
    }

    /// Keeps `row`, read from the index after `generation` was read, unless a commit that marked or removed
    /// records invalidated the cache since (the row may be from before that commit) or the row is not live.
    func insert(_ row: Index.Row, readAfter generation: UInt64) {
        guard row.state == .live else { return }
        self.state.withLock { state in
            guard state.generation == generation else { return }
            if state.rows.count >= Self.capacity { state.rows.removeAll(keepingCapacity: true) }
            state.rows[row.metadata.id] = row
        }
    }

    /// Empties the cache and turns away rows read before now: called after every commit that marks records
    /// for shredding or removes them, and at close.
    func invalidate() {
        self.state.withLock { state in
            state.generation &+= 1
            state.rows.removeAll()
        }
    }
}

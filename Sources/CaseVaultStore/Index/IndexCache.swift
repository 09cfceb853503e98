internal import CaseVaultCore
internal import GRDB
internal import Synchronization

/// What gets read from the index, kept in memory so that the next get asking the same skips it: a
/// profile of in-process gets (`perf record --call-graph dwarf`, 2 threads) found the point lookup, SQLite's
/// step and the row's decoding half of a get, and one of GETs over the socket found the lookup of the
/// record's case (two statements, each taking SQLite's locks, on a connection reached through a dispatch
/// queue) a tenth of the daemon's CPU.
///
/// Two are kept (`LiveRows`, `CaseAnswers`), each shut while the commits that could make it stale run: every
/// such commit runs inside `changing(_:)`, and from before it begins until after it has ended (committed
/// or not) the cache is empty, gets go to the index and keep nothing, so none takes from here what the
/// commit has already made stale; and a get that read the index before the change cannot put what it
/// read back afterwards, since it keeps it only if no change began or ended since it began
/// (`generation`). A get that takes a value just before a change begins is what a get that came a moment
/// earlier would be.
///
/// Bounded: at `capacity` entries it starts again from empty. Closed for good when the store closes.
final class IndexCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    static var capacity: Int { 65_536 }

    private struct State: ~Copyable {
        var values: [Key: Value] = [:]
        var generation: UInt64 = 0
        /// Changes under way: while any is, the cache neither gives nor keeps a value.
        var changes = 0
        var closed = false

        var isOpen: Bool { self.changes == 0 && !self.closed }

        mutating func reset() {
            self.generation &+= 1
            self.values.removeAll()
        }
    }

    private let state = Mutex(State())

    init() {}

    /// The value kept for `key`, if a get read it since the last change and none is under way.
    func value(_ key: Key) -> Value? {
        self.state.withLock { state in state.isOpen ? state.values[key] : nil }
    }

    /// Read before a lookup of the index, passed to `insert` after it.
    var generation: UInt64 {
        self.state.withLock { $0.generation }
    }

    /// Keeps `values`, read from the index after `generation` was read, unless a change began or ended
    /// since (they may be from before it), one is under way, or the store closed.
    func insert(_ values: [(Key, Value)], readAfter generation: UInt64) {
        guard !values.isEmpty else { return }
        self.state.withLock { state in
            guard state.isOpen, state.generation == generation else { return }
            if state.values.count + values.count > Self.capacity { state.values.removeAll(keepingCapacity: true) }
            for (key, value) in values { state.values[key] = value }
        }
    }

    /// Runs `body`, a commit that may change what the cache holds, with the cache empty and shut from
    /// before it begins until after it ends, however it ends.
    func changing<T, Failure: Error>(_ body: () throws(Failure) -> T) throws(Failure) -> T {
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

/// The index rows of live records that gets have read. Only `live` rows enter, and a row stays right for
/// as long as its record lives: nothing but a shred changes a record's row (its mark, then its removal; a
/// rotation rewraps the key in its slot, the slot stays the record's). So the commits that mark or remove
/// records run inside `changing(_:)`. Holds ids, case ids, types and places, no content and no key, as the
/// index does.
typealias LiveRows = IndexCache<RecordID, Index.Row>

extension IndexCache where Key == RecordID, Value == Index.Row {
    /// Keeps `row`, read from the index after `generation` was read, if it is live (`insert`).
    func keep(_ row: Index.Row, readAfter generation: UInt64) {
        guard row.state == .live else { return }
        self.insert([(row.metadata.id, row)], readAfter: generation)
    }
}

/// What a get asks of the index beside the record's row: its case's summary (state, mediators,
/// supervisors: what authorizes the read), and whether a uid is on the mediator roster. Any commit on the
/// index's writer may change them (a case's creation, closing or assignment, the roster's changes, the
/// effects a filing carries), so every access of the writer runs inside `changing(_:)` (`Index.onWriter`),
/// but the two that change neither: the audit anchor's (`Index.writeBesideCases`) and a batch of puts
/// without filing effects (`Index.writeUnflushed`). A request asked after such a commit ended sees what it
/// wrote, as it does when it reads the index itself. Gets (`storedRecord`) and filings (`caseAndRoster`,
/// under the case's lock) ask through it.
/// Holds case ids, states, counts, times and uids, as the index does.
typealias CaseAnswers = IndexCache<Index.CaseQuestion, Index.CaseQuestion.Value>

extension Index {
    /// A question a get asks of the index about the record's case or the caller (`CaseAnswers`).
    enum CaseQuestion: Hashable, Sendable {
        case summary(CaseID)
        case onRoster(UInt32)

        /// The answer.
        enum Value: Sendable {
            case summary(CaseSummary)
            case onRoster(Bool)
        }
    }
}

extension IndexCache where Key == Index.CaseQuestion, Value == Index.CaseQuestion.Value {
    /// What is kept of case `caseID` and of `rosterUID`'s place on the roster, and the generation to keep
    /// what a lookup reads in their place.
    func kept(_ caseID: CaseID?, rosterUID: UInt32?) -> KnownCaseAnswers {
        let generation = self.generation
        var summary: CaseSummary?
        if let caseID, case .summary(let kept) = self.value(.summary(caseID)) { summary = kept }
        var onRoster: Bool?
        if let rosterUID, case .onRoster(let kept) = self.value(.onRoster(rosterUID)) { onRoster = kept }
        return KnownCaseAnswers(
            cache: self, generation: generation, rosterUID: rosterUID, summary: summary, onRoster: onRoster)
    }
}

/// What a request found kept of a case and the roster (`CaseAnswers.kept`): the whole answer when both are,
/// else what a lookup of the index must add (`read`), which is then kept for the next (`keep`).
struct KnownCaseAnswers {
    let cache: CaseAnswers
    let generation: UInt64
    let rosterUID: UInt32?
    let summary: CaseSummary?
    let onRoster: Bool?

    /// The summary and the roster's answer (`false` when no uid was asked about), when both were kept.
    var answer: (summary: CaseSummary, onRoster: Bool)? {
        guard let summary = self.summary, self.rosterUID == nil || self.onRoster != nil else { return nil }
        return (summary, self.onRoster ?? false)
    }

    /// The summary of `caseID` (none when it is nil or unknown) and the roster's answer, each read from the
    /// index unless kept.
    func read(_ db: Database, caseID: CaseID?) throws -> (CaseSummary?, Bool) {
        let summary = try caseID.flatMap { caseID in try self.summary ?? Index.caseSummary(db, id: caseID) }
        let onRoster = try self.rosterUID.map { uid in try self.onRoster ?? Index.isOnRoster(db, uid: uid) } ?? false
        return (summary, onRoster)
    }

    /// Keeps what `read` found that was not kept, unless a change began or ended since `kept` was asked.
    func keep(_ summary: CaseSummary?, _ onRoster: Bool) {
        var found: [(Index.CaseQuestion, Index.CaseQuestion.Value)] = []
        if let summary, self.summary == nil { found.append((.summary(summary.id), .summary(summary))) }
        if let rosterUID = self.rosterUID, self.onRoster == nil {
            found.append((.onRoster(rosterUID), .onRoster(onRoster)))
        }
        self.cache.insert(found, readAfter: self.generation)
    }
}

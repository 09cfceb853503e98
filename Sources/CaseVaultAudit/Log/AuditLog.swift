internal import CaseVaultCore
internal import CaseVaultCrypto
public import CaseVaultFiles
public import Dispatch
internal import Foundation
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// The audit log (docs/API.md): `audit/log` in the data directory, one hash-chained and keyed line per
/// entry; `audit/head`, the last signed checkpoint; and the anchor in the index, how far the log had got.
///
/// The anchor (`AuditAnchor`: an entry's number, hash and offset, with a MAC) is replaced at every
/// checkpoint, when the daemon takes its key, and after a flush at most once a second, so that at a start
/// or unseal (`attach(to:)`) a log that was cut short, replaced or deleted is found: the log must hold the
/// anchor's entry, and every entry after it must check out under the root key. A log that does not is
/// refused (the daemon does not start, the unseal fails) until an operator accepts the break
/// (`casevaultd --accept-audit-break`), which the log then records in a keyed entry.
///
/// Two serial queues do the work. The writer takes everything queued, chains it and writes it with one
/// `pwrite`; the syncer makes what was written durable with one `fdatasync` and then replaces the head.
/// A route waits only for its `request` entry to be *written* (at most `writeDeadline`): a full disk, an
/// immutable file or an I/O error is known then, before the route acts, and the route is refused. The
/// entry's flush then runs while the route works, and the answer waits for it (`awaitDurable`), so that no
/// answer leaves before its entry is on disk. When the log rides on the store's flushes (`attach(to:)`,
/// `FlushRider`: ext4 or xfs, one device), the entry's flush is not started at once: a put batch's
/// flush carries every entry written before it, and only a route that flushed nothing (a read) has the
/// syncer flush after it. Otherwise a write's flush starts at once and overlaps the route. Either way the
/// entries of reads answered without waiting are flushed once their window ends (`flushWithin`), one flush
/// for the reads of a window.
/// Results are queued without waiting and reach the disk with the next flush, at the latest at shutdown.
///
/// After a failed write the log remembers why (`failure`, shown by health and status) and tries again with
/// the next entry, first cutting away whatever part of the failed batch reached the file.
public final class AuditLog: FlushRider {
    /// How long a request waits for its entry before it is refused with 503, and at most for its flush.
    static let writeDeadline: DispatchTimeInterval = .milliseconds(800)
    public static let defaultCheckpointInterval = 1000
    public static let defaultAnchorInterval: DispatchTimeInterval = .seconds(1)

    public let logPath: String
    public let headPath: String
    public let directory: String
    /// The file being written (`log`): replaced when the log rotates.
    let current: Mutex<LogFile>
    var file: PosixFile { self.current.withLock { $0.writer } }
    /// Held around each flush of the writer's open file with the counting of its failure (`flushOwn`).
    let ownFlushing = Mutex<Void>(())
    /// Run on the syncer before each of its flushes; set only by tests (`beforeSyncerFlush`).
    let syncerFlushHook = Mutex<(@Sendable () -> Void)?>(nil)

    /// The file being written, open twice: `writer` to write, read and flush it, and `rider` only for the
    /// waits of a ride (`prepareRide`, `board`). Linux reports a failed writeback once to each open file
    /// (its error cursor), so neither takes the other's report: were they one, a ride's wait could take
    /// the error that the log's own flush, running meanwhile, needed to see, and that flush would call
    /// lost entries durable.
    struct LogFile: Sendable {
        let writer: PosixFile
        let rider: PosixFile

        /// `writer`, already open on `path`, and `path` opened again for the rider.
        init(_ writer: PosixFile, path: String) throws(CaseVaultError) {
            self.writer = writer
            self.rider = try PosixFile(path: path, flags: O_RDWR)
        }
    }

    /// A new, empty file under the prepared name (`log.new`, replacing one an interrupted rotation left),
    /// open twice, and its path: what a rotation, or a break set aside, renames `log` once it is ready.
    func makePrepared() throws(CaseVaultError) -> (LogFile, path: String) {
        let path = self.directory + "/" + AuditFiles.prepared
        _ = unlink(path)
        return (try LogFile(PosixFile(path: path, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o600), path: path), path)
    }
    let checkpointInterval: UInt64
    /// How often, at most, the anchor follows the log between checkpoints.
    let anchorInterval: DispatchTimeInterval
    let retention: Retention
    public let clock: @Sendable () -> Int64
    let writer = DispatchQueue(label: "casevault.audit.writer")
    let syncer = DispatchQueue(label: "casevault.audit.syncer")
    /// Where the anchor is replaced in a keeper across the network (`AuditAnchorKeeper.isRemote`), so that
    /// the log's own flushes never wait on it.
    let anchorer = DispatchQueue(label: "casevault.audit.anchorer")
    let shared: Mutex<Shared>
    /// Touched only on `writer`.
    let chain: Mutex<Chain>

    struct Shared {
        /// The breaks the next attach records: ends a power cut tore, set aside (`log.torn-…`) at this open
        /// or at one whose attach never came; and those files, renamed `….recorded` once it has.
        var tornAtOpen: String?
        var tornFiles: [String] = []
        /// How far the file being written (by its first entry) is known durable: its end when the last own
        /// flush that succeeded began, or when the last ride that counted was prepared.
        var durable: (file: UInt64, end: Int64)?

        /// Moved on by whatever moves the files' ends back or starts a new file (a set-aside, a rotation):
        /// an end recorded before it says nothing of the files after it.
        var layout: UInt64 = 0

        /// `file` is durable to `end` (an own flush or a ride that succeeded, which recorded them under
        /// `layout`): `durable` moves only forward, so that a flush that began before a ride and ends after it
        /// does not take it back (the copy was trimmed to the later end, and a failure would then write again
        /// from before it), and an end from before a set-aside or a rotation is not taken at all.
        mutating func advanceDurable(_ file: UInt64, to end: Int64, layout: UInt64) {
            guard layout == self.layout else { return }
            guard let known = self.durable, known.file >= file else {
                self.durable = (file, end)
                return
            }
            if known.file == file { self.durable = (file, max(known.end, end)) }
        }
        /// Where the file being written ended when the ride under way was prepared (`prepareRide`): durable
        /// to there once it rides.
        var rideEnd: (file: UInt64, end: Int64, layout: UInt64)?
        /// Set by a failed flush (own or ride): the file and the offset from which the next own flush first
        /// writes again what is there; no ride is taken meanwhile. After a failed writeback Linux marks the
        /// pages clean though they never reached the disk, so a later flush that succeeds would not write
        /// them ("fsyncgate").
        var rewrite: (file: UInt64, from: Int64)?
        /// Failed flushes so far: a flush or a ride that saw this change while it ran does not count as
        /// durable (an open file is told of a failed write once, and the log's own flushes share one).
        var failures: UInt64 = 0
        var rideFailures: UInt64 = 0
        var pending: [Pending] = []
        var draining = false
        /// The next batch may rotate the log or flush its directory (fsyncs that can take long): it is then
        /// left to the writer's queue rather than written by a request's task (`writeInline`), which runs on
        /// an event loop. True until the first batch has looked.
        var heavyNext = true
        var signer: AuditSigner?
        var writeFailure: String?
        var syncFailure: String?
        var nextRequest: UInt64 = 1
        var closed = false
        /// Batches written, and the last of them known durable.
        var written: UInt64 = 0
        var synced: UInt64 = 0
        /// Waiting for a batch to be durable.
        var durableWaiters: [(batch: UInt64, waiter: Waiter)] = []
        /// The newest checkpoint written, for the head (and the anchor) once it is durable.
        var unsyncedCheckpoint: (anchor: AuditAnchor, signer: AuditSigner)?
        /// The last entry of the last batch written, and of the last batch known durable.
        var writtenTail = AuditAnchor(seq: 0, hash: AuditChain.genesis, offset: 0, file: 1)
        /// Where the anchor is kept (while attached to a store), and the last anchored entry and when.
        var anchorStore: (any AuditAnchorKeeper)?
        var anchoredSeq: UInt64 = 0
        var anchoredAt: DispatchTime = .now()
        /// A flush is scheduled for when the anchor falls due.
        var anchorScheduled = false
        /// A flush is scheduled for the end of a read's window (`flushWithin`), and the last batch a window
        /// must make durable: a flush of the log's own even while it rides on the store's flushes.
        var windowFlushScheduled = false
        var windowTarget: UInt64 = 0
        /// A window's end has come (its timer fired, or a failed flush's retry is due) and no flush has
        /// begun since: the reads written by then are flushed now, the later ones at their own window's end.
        var windowDue = false
        /// The last batch holding a request entry whose flush should begin at once, while its route works
        /// (not riding: no put's flush will carry it); a read's entry waits for its window instead.
        var soonTarget: UInt64 = 0
        /// Why the anchor could not be replaced last time (the log itself is fine; the next flush tries).
        var anchorFailure: String?
        /// The newest anchor waiting for `anchorer`, and the keeper it goes to; `nil` when none waits.
        var pendingAnchor: (store: any AuditAnchorKeeper, tail: AuditAnchor)?
        /// The newest entry anchored in a remote keeper, on `anchorer`.
        var remoteAnchoredSeq: UInt64 = 0
        /// Why the log could not rotate last time (it goes on in the same file, and tries again later).
        var rotationFailure: String?
        /// Whether entries ride on the store's flushes (`attach(to:)`).
        var riding = false
        /// Flushes of the log's own, and store flushes it rode on.
        var ownFlushes = 0
        var rides = 0
    }

    struct Chain {
        var seq: UInt64
        var hash: [UInt8]
        /// Where the next line goes: the end of the last batch that was written whole.
        var end: Int64
        /// Where the last entry's line starts.
        var lastStart: Int64
        /// The file's size: zero-filled from `end` on.
        var allocated: Int64
        var lastCheckpoint: UInt64
        /// A batch failed part-way: up to this many bytes past `end` may be on disk, and are zeroed by the
        /// next write.
        var dirtyBytes: Int
        /// The first entry of the file being written, and the first entry of the file the last entry is in
        /// (the one before, while the file is empty).
        var fileFirst: UInt64
        var lastFile: UInt64
        /// After a failed rotation, the entry after which the next try is made.
        var rotateAfter: UInt64 = 0
        /// Rotate at the next write whatever the size (after an accepted break moved files aside, so that
        /// the new file's first entry says where the log now begins).
        var rotateNow = false
        /// A rotation renamed the files but the directory could not be flushed: every write first flushes it.
        var directoryUnflushed = false
        /// A rotation failed half-way and could not be undone: the log refuses every write until a restart
        /// (`open` finishes or undoes it).
        var unusable: String?
        /// What was written to the file being written since its last known durable end, as written.
        var unflushed = UnflushedCopy()

        var tail: AuditAnchor {
            AuditAnchor(seq: self.seq, hash: self.hash, offset: self.lastStart, file: self.lastFile)
        }
    }

    /// A copy of the bytes of one file from `from` on, as the log wrote them, kept until they are known
    /// durable: what a failed flush lost is written again from here (`writeAgain`). The page cache cannot be
    /// trusted for it: after a failed writeback Linux may drop those pages, or mark their buffers out of
    /// date, and then reads back what the disk holds (found by `RideFailureTests`, under a memory pressure
    /// and a `sync` of every filesystem from tests running beside it).
    struct UnflushedCopy {
        var file: UInt64 = 0
        var from: Int64 = 0
        var bytes: [UInt8] = []
        /// The most it keeps: past it (a disk failing for long while entries are still written), the copy
        /// starts again after the write, and what it no longer covers is read back from the file.
        var limit = Self.defaultLimit

        static let defaultLimit = AuditLog.defaultCopyLimit

        /// `written` went to `file` at `offset`: kept after the copy when it follows on from it, in place of
        /// it when not.
        mutating func wrote(_ written: [UInt8], at offset: Int64, file: UInt64) {
            guard file == self.file, offset == self.from + Int64(self.bytes.count),
                self.bytes.count + written.count <= self.limit
            else {
                let fits = written.count <= self.limit
                self = UnflushedCopy(
                    file: file, from: fits ? offset : offset + Int64(written.count), bytes: fits ? written : [],
                    limit: self.limit)
                return
            }
            self.bytes += written
        }

        /// `file` is durable up to `end`: what lies before it is dropped, and the memory it took is given
        /// back once the copy is empty or holds a small part of what it took.
        mutating func durable(_ file: UInt64, to end: Int64) {
            guard file == self.file, end > self.from else { return }
            let dropped = min(Int(end - self.from), self.bytes.count)
            self.bytes.removeFirst(dropped)
            self.from += Int64(dropped)
            if self.bytes.isEmpty {
                self.bytes = []
            } else if self.bytes.capacity > 1 << 20, self.bytes.capacity > 4 * self.bytes.count {
                // A copy of its own size (`Array(bytes)` would keep the same buffer).
                var smaller: [UInt8] = []
                smaller.reserveCapacity(self.bytes.count)
                smaller.append(contentsOf: self.bytes)
                self.bytes = smaller
            }
        }

        /// Where the copy of `file` begins, clamped to `start...end`: from there to `end` it holds every byte
        /// (it always ends where the file being written ends); `end` when it holds none of `file`.
        func start(of file: UInt64, from start: Int64, to end: Int64) -> Int64 {
            guard file == self.file, self.from + Int64(self.bytes.count) == end else { return end }
            return min(max(start, self.from), end)
        }

        /// The bytes of `file` from `start` to `end`, when the copy holds all of them.
        func bytes(of file: UInt64, from start: Int64, to end: Int64) -> [UInt8]? {
            guard file == self.file, start >= self.from, end <= self.from + Int64(self.bytes.count), start <= end
            else { return nil }
            return Array(self.bytes[Int(start - self.from)..<Int(end - self.from)])
        }
    }

    /// The most bytes the log keeps, since the last end known durable, to write again after a failed flush
    /// (`UnflushedCopy`); `open`'s `copyLimit` (a test sets 0 to reach the read-back path).
    public static let defaultCopyLimit = 64 << 20

    /// When the log rotates (docs/API.md), and how many rotated files it keeps.
    public struct Retention: Sendable, Equatable {
        /// The log moves to a new file at the first write once its file holds this many bytes; 0: never.
        public var rotateBytes: Int64
        /// Rotated files kept, the newest; older ones are removed at a rotation, after a signed checkpoint
        /// that names the first entry still kept is durable. 0: all are kept.
        public var keepFiles: Int

        public static let defaultRotateBytes: Int64 = 64 << 20
        public static let defaultKeepFiles = 16
        public static let standard = Retention(rotateBytes: defaultRotateBytes, keepFiles: defaultKeepFiles)

        public init(rotateBytes: Int64, keepFiles: Int) {
            self.rotateBytes = rotateBytes
            self.keepFiles = keepFiles
        }
    }

    enum Pending {
        /// An entry; its waiter (if any) is told once the entry is written, with the batch's number.
        case entry(AuditEntry, Waiter?)
        /// Flush everything written so far, after a signed checkpoint when `checkpoint` gives its reason
        /// (and a signer is attached); the waiter is told once it is durable.
        case flush(checkpoint: String?, Waiter)
    }

    /// Someone waiting: told once, by the writer or syncer or by the deadline, whichever comes first.
    final class Waiter: Sendable {
        private let onComplete: Mutex<(@Sendable (Result<UInt64, CaseVaultError>) -> Void)?>
        /// For an entry's waiter: whether the entry's flush should begin as soon as it is written (a
        /// write's request entry), rather than at the end of a read's window.
        let flushSoon: Bool

        init(flushSoon: Bool = true, _ onComplete: @escaping @Sendable (Result<UInt64, CaseVaultError>) -> Void) {
            self.flushSoon = flushSoon
            self.onComplete = Mutex(onComplete)
        }

        /// Whether it has been told.
        var isComplete: Bool {
            self.onComplete.withLock { $0 == nil }
        }

        func complete(_ result: Result<UInt64, CaseVaultError>) {
            let body = self.onComplete.withLock { body in
                defer { body = nil }
                return body
            }
            body?(result)
        }
    }

    /// The deadlines of everyone waiting: one timer for all of them (every 50 ms), instead of one a wait,
    /// which cost two timer registrations a request. A waiter is refused between `writeDeadline` − 50 ms
    /// and `writeDeadline` after it began to wait.
    final class Deadlines: @unchecked Sendable {
        // @unchecked: `timer` is touched only in init and deinit; the list is behind its mutex.
        private let watched = Mutex<[(due: DispatchTime, waiter: Waiter, failure: CaseVaultError)]>([])
        private let timer: any DispatchSourceTimer

        init() {
            self.timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "casevault.audit.deadlines"))
            self.timer.schedule(deadline: .now() + Self.tick, repeating: Self.tick)
            self.timer.setEventHandler { [weak self] in self?.sweep() }
            self.timer.resume()
        }

        /// Refuses the waiters past their deadline, and forgets those already told.
        private func sweep() {
            let now = DispatchTime.now()
            let expired = self.watched.withLock { list -> [(Waiter, CaseVaultError)] in
                list.removeAll { $0.waiter.isComplete }
                let due = list.filter { $0.due <= now }
                list.removeAll { $0.due <= now }
                return due.map { ($0.waiter, $0.failure) }
            }
            for (waiter, failure) in expired { waiter.complete(.failure(failure)) }
        }

        static let tick: DispatchTimeInterval = .milliseconds(50)

        func watch(_ waiter: Waiter, failure: CaseVaultError) {
            let due = DispatchTime.now() + AuditLog.writeDeadline - Self.tick
            self.watched.withLock { $0.append((due, waiter, failure)) }
        }

        deinit {
            self.timer.cancel()
        }
    }

    let deadlines = Deadlines()

    /// A written entry: which batch carried it, for `awaitDurable`.
    public struct Receipt: Sendable {
        let batch: UInt64
    }

    /// What opening found at the end of the log.
    public struct Recovery: Sendable {
        /// Bytes of an entry a crash left half-written, cut away (it was never acknowledged).
        public var discardedBytes: Int
        public var entries: UInt64
        /// The file in the log's directory that the end a power cut tore was copied to (`tornEnd`); the
        /// next attach records the break.
        public var tornEndSetAside: String? = nil
    }

    /// Whether the next start or unseal may take a log that does not match its anchor, recording the
    /// break: once, then cleared.
    let acceptBreak: Mutex<Bool>

    init(
        directory: String, file: LogFile, chain: Chain, checkpointInterval: Int,
        anchorInterval: DispatchTimeInterval, retention: Retention, acceptBreak: Bool,
        clock: @escaping @Sendable () -> Int64
    ) {
        self.acceptBreak = Mutex(acceptBreak)
        self.directory = directory
        self.logPath = directory + "/" + AuditFiles.current
        self.headPath = directory + "/head"
        self.current = Mutex(file)
        self.checkpointInterval = UInt64(max(1, checkpointInterval))
        self.anchorInterval = anchorInterval
        self.retention = retention
        self.clock = clock
        var shared = Shared()
        shared.writtenTail = chain.tail
        self.shared = Mutex(shared)
        self.chain = Mutex(chain)
    }
}

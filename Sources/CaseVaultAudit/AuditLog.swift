#if canImport(Glibc)
internal import Glibc
#endif
public import CaseVaultCore
internal import CaseVaultCrypto
public import CaseVaultStore
internal import Dispatch
internal import Foundation
internal import Synchronization

/// The audit log (DESIGN §10): `audit/log` in the data directory, one hash-chained and keyed line per
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
/// syncer flush after it. Otherwise the flush starts at once and overlaps the route.
/// Results are queued without waiting and reach the disk with the next flush, at the latest at shutdown.
///
/// After a failed write the log remembers why (`failure`, shown by health and status) and tries again with
/// the next entry, first cutting away whatever part of the failed batch reached the file.
public final class AuditLog: FlushRider {
    /// How long a request waits for its entry before it is refused with 503, and at most for its flush.
    static let writeDeadline: DispatchTimeInterval = .milliseconds(800)
    public static let defaultCheckpointInterval = 1000

    public let logPath: String
    public let headPath: String
    public let directory: String
    /// The file being written (`log`): replaced when the log rotates.
    private let current: Mutex<PosixFile>
    var file: PosixFile { self.current.withLock { $0 } }
    let checkpointInterval: UInt64
    let retention: Retention
    public let clock: @Sendable () -> Int64
    private let writer = DispatchQueue(label: "casevault.audit.writer")
    private let syncer = DispatchQueue(label: "casevault.audit.syncer")
    private let shared: Mutex<Shared>
    /// Touched only on `writer`.
    private let chain: Mutex<Chain>

    struct Shared {
        /// The breaks the next attach records: ends a power cut tore, set aside (`log.torn-…`) at this open
        /// or at one whose attach never came; and those files, renamed `….recorded` once it has.
        var tornAtOpen: String?
        var tornFiles: [String] = []
        /// How far the file being written (by its first entry) is known durable: its end when the last own
        /// flush that succeeded began.
        var durable: (file: UInt64, end: Int64)?
        /// Set by a failed flush (own or ride): the file and the offset from which the next own flush first
        /// writes again what is there; no ride is taken meanwhile. After a failed writeback Linux marks the
        /// pages clean though they never reached the disk, so a later flush that succeeds would not write
        /// them ("fsyncgate").
        var rewrite: (file: UInt64, from: Int64)?
        /// Failed flushes so far: a flush or a ride that saw this change while it ran does not count as
        /// durable (the file's error is reported to one caller only).
        var failures: UInt64 = 0
        var rideFailures: UInt64 = 0
        var pending: [Pending] = []
        var draining = false
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
        var anchorStore: RecordStore?
        var anchoredSeq: UInt64 = 0
        var anchoredAt: DispatchTime = .now()
        /// A flush is scheduled for when the anchor falls due.
        var anchorScheduled = false
        /// Why the anchor could not be replaced last time (the log itself is fine; the next flush tries).
        var anchorFailure: String?
        /// Why the log could not rotate last time (it goes on in the same file, and tries again later).
        var rotationFailure: String?
        /// Whether entries ride on the store's flushes (`attach(to:)`).
        var riding = false
        /// The last batch that grew the file: until a flush of the log's own has made it durable (with
        /// the new size), nothing rides.
        var grewIn: UInt64 = 0
        /// The last batch made durable by a flush of the log's own.
        var ownSynced: UInt64 = 0
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

        var tail: AuditAnchor { AuditAnchor(seq: self.seq, hash: self.hash, offset: self.lastStart, file: self.lastFile) }
    }

    /// When the log rotates (DESIGN §10), and how many rotated files it keeps.
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

        init(_ onComplete: @escaping @Sendable (Result<UInt64, CaseVaultError>) -> Void) {
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

    private let deadlines = Deadlines()

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
    private let acceptBreak: Mutex<Bool>

    private init(
        directory: String, file: PosixFile, chain: Chain, checkpointInterval: Int, retention: Retention, acceptBreak: Bool,
        clock: @escaping @Sendable () -> Int64
    ) {
        self.acceptBreak = Mutex(acceptBreak)
        self.directory = directory
        self.logPath = directory + "/" + AuditFiles.current
        self.headPath = directory + "/head"
        self.current = Mutex(file)
        self.checkpointInterval = UInt64(max(1, checkpointInterval))
        self.retention = retention
        self.clock = clock
        var shared = Shared()
        shared.writtenTail = chain.tail
        self.shared = Mutex(shared)
        self.chain = Mutex(chain)
    }

    /// Opens (creating on first use) the log in `directory`: finishes or undoes a rotation a crash
    /// interrupted, cuts a torn last line and checks that the last entry follows from the one before it. A
    /// log whose end does not check out is refused: the daemon does not append to a log that has been
    /// tampered with. The MACs, the anchor and that the files follow one another are checked once the root
    /// key is known (`attach(to:)`); with `acceptBreak`, a mismatch there is recorded, not refused.
    public static func open(
        directory: String,
        checkpointInterval: Int = AuditLog.defaultCheckpointInterval,
        retention: Retention = .standard,
        acceptBreak: Bool = false,
        clock: @escaping @Sendable () -> Int64
    ) throws(CaseVaultError) -> (AuditLog, Recovery) {
        try DataDirectory.makeDirectory(directory, createParents: false)
        let path = directory + "/" + AuditFiles.current
        let prepared = directory + "/" + AuditFiles.prepared
        if DataDirectory.exists(prepared) {
            // A rotation stopped after its new file was whole: past the first rename, it is finished; before
            // it, the new file is dropped (its checkpoint was never acknowledged).
            if DataDirectory.exists(path) {
                guard unlink(prepared) == 0 else { throw POSIXFailure.error("unlink", path: prepared) }
            } else {
                guard rename(prepared, path) == 0 else { throw POSIXFailure.error("rename", path: prepared) }
            }
            try DataDirectory.flushDirectory(directory)
        }
        if !DataDirectory.exists(path) {
            _ = try PosixFile(path: path, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
            try DataDirectory.flushDirectory(directory)
        }
        try DataDirectory.checkPrivateFile(path)
        let file = try PosixFile(path: path, flags: O_RDWR)
        let size = try file.size()
        // The rotated file before `log`: where the chain stands while `log` is empty.
        let before = try AuditFiles.list(directory).last(where: { $0.first != nil })
        let base = { () throws(CaseVaultError) -> (AuditLine.Tail, lastStart: Int64, file: UInt64) in
            guard let before, let first = before.first else { return (AuditLine.Tail(seq: 0, hash: AuditChain.genesis), 0, 1) }
            let archived = try PosixFile(path: directory + "/" + before.name, flags: O_RDONLY)
            let (tail, lastStart, end, contentEnd) = try Self.readTail(archived, size: try archived.size()) { () throws(CaseVaultError) in
                throw Self.damaged()
            }
            guard tail.seq >= first, end == contentEnd else { throw Self.damaged() }
            return (tail, lastStart, first)
        }
        // Before anything else reads or writes the log's end: an end a power cut tore is set aside.
        let torn = try Self.tornEnd(file, size: size, head: try Self.readHead(directory + "/head"))
        let aside = try torn.map { torn throws(CaseVaultError) in
            try Self.setAside(file, from: torn.from, to: torn.contentEnd, in: directory, name: "\(AuditFiles.tornPrefix)\(clock())-after-\(torn.after)")
        }
        var (tail, lastStart, end, contentEnd) = try Self.readTail(file, size: size) { () throws(CaseVaultError) in try base().0 }
        let discarded = Int(contentEnd - end)
        if discarded > 0 {
            // A torn entry is zeroed, as the unused space after it is.
            try file.write([UInt8](repeating: 0, count: discarded), at: end)
            try file.flushData()
        }
        var lastFile: UInt64
        let fileFirst: UInt64
        if end == 0 {
            let found = try base()
            guard found.0.seq < UInt64.max else { throw Self.damaged() }
            (tail, lastStart, lastFile) = (found.0, found.lastStart, found.file)
            fileFirst = tail.seq + 1
        } else {
            guard let first = try AuditFiles.firstLine(file) else { throw Self.damaged() }
            fileFirst = first.entry.seq
            lastFile = fileFirst
        }
        let chain = Chain(
            seq: tail.seq, hash: tail.hash, end: end, lastStart: lastStart, allocated: size, lastCheckpoint: tail.seq, dirtyBytes: 0,
            fileFirst: fileFirst, lastFile: lastFile
        )
        let log = AuditLog(
            directory: directory, file: file, chain: chain, checkpointInterval: checkpointInterval, retention: retention,
            acceptBreak: acceptBreak, clock: clock
        )
        // This open's torn end, and any an earlier open set aside whose break no attach recorded.
        let pending = try AuditFiles.unrecordedTornEnds(directory)
        log.shared.withLock { state in
            state.durable = (fileFirst, end)
            state.tornFiles = pending.map(\.name)
            if !pending.isEmpty {
                state.tornAtOpen = pending.map { Self.tornDescription(after: $0.after, aside: $0.name) }.joined(separator: "; ")
            }
        }
        return (log, Recovery(discardedBytes: discarded, entries: tail.seq, tornEndSetAside: aside))
    }

    static func tornDescription(after seq: UInt64, aside: String) -> String {
        "a power cut tore the log after entry \(seq) before it was flushed, so no answer had waited for what followed; "
            + "it was set aside in audit/\(aside)"
    }

    /// How far back from the end of `log` a torn end is looked for: more than the log writes between two
    /// flushes, however busy.
    static let tornScanBytes: Int64 = 16 << 20

    /// Where the end of `file` that a power cut tore begins, and where its written bytes end; `nil` when
    /// nothing is torn so. A block the log wrote but had not flushed comes back from a power cut as the zeros
    /// the file was grown with, while a later block may have reached the disk; the log's entries hold no
    /// zero byte. The log is written in order under one lock and a flush makes everything written before it
    /// durable (after a failed flush the log rewrites what that flush should have made durable), so no
    /// flush finished after such a block was written, and no answer waited for any entry from its line on.
    /// So the earliest whole line, in the last `tornScanBytes` before the last written byte, that holds a
    /// zero byte begins a torn end; unless the line before it is older than the head, the checkpoint the
    /// log last knew flushed, which a power cut cannot take.
    private static func tornEnd(
        _ file: PosixFile, size: Int64, head: [UInt8]?
    ) throws(CaseVaultError) -> (from: Int64, contentEnd: Int64, after: UInt64)? {
        guard size > 0 else { return nil }
        // The last written byte, looked for backwards: the file is zero-filled past its entries.
        var contentEnd: Int64 = 0
        var probe = size
        while probe > 0 && contentEnd == 0 {
            let start = max(0, probe - (1 << 20))
            if let last = try file.read(count: Int(probe - start), at: start).lastIndex(where: { $0 != 0 }) {
                contentEnd = start + Int64(last + 1)
            }
            probe = start
        }
        guard contentEnd > 0 else { return nil }
        let start = max(0, contentEnd - Self.tornScanBytes)
        let bytes = try file.read(count: Int(contentEnd - start), at: start)
        // Whole lines only: the first may have begun before the region.
        var lineStart = start == 0 ? 0 : (bytes.firstIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? bytes.count)
        var previous: [Range<Int>] = []
        while lineStart < bytes.count {
            let lineEnd = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            if bytes[lineStart..<lineEnd].contains(0) {
                // What stays must be the log's: the last entry before the torn line follows from the one
                // before it (or is the file's first), before anything is changed.
                let last = previous.last.flatMap { AuditLine.parse(bytes[$0]) }
                if let last, previous.count >= 2 {
                    guard let before = AuditLine.parse(bytes[previous[previous.count - 2]]), last.entry.seq == before.entry.seq &+ 1,
                        AuditChain.hash(previous: before.hash, json: last.json) == last.hash
                    else { return nil }
                } else if start > 0 || (previous.count == 1 && last == nil) {
                    return nil
                }
                // The head's entry was flushed before the head was written: a zero line before it is damage.
                // A head that cannot be read gives no such bound, so nothing is taken for torn.
                let after = last?.entry.seq ?? 0
                if let head {
                    guard let parsedHead = try? JSONDecoder().decode(AuditHead.self, from: Data(head)), after >= parsedHead.seq else {
                        return nil
                    }
                }
                return (start + Int64(lineStart), contentEnd, after)
            }
            previous.append(lineStart..<lineEnd)
            if previous.count > 2 { previous.removeFirst() }
            lineStart = lineEnd + 1
        }
        return nil
    }

    /// Copies `file` from `offset` to `end` into `name` beside it, zeroes it there, and makes both durable;
    /// returns the copy's name.
    private static func setAside(
        _ file: PosixFile, from offset: Int64, to end: Int64, in directory: String, name: String
    ) throws(CaseVaultError) -> String {
        let bytes = try file.read(count: Int(end - offset), at: offset)
        let aside = try PosixFile(path: directory + "/" + name, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        try aside.write(bytes, at: 0)
        try aside.flushData()
        try DataDirectory.flushDirectory(directory)
        try file.write([UInt8](repeating: 0, count: bytes.count), at: offset)
        try file.flushData()
        return name
    }

    /// The log's end: the last whole entry's number and hash and where its line starts, where the next
    /// entry goes, and where the written bytes end (past a torn entry). The file is zero-filled past its
    /// entries (`growthStep`).
    private static func readTail(
        _ file: PosixFile, size: Int64, before: () throws(CaseVaultError) -> AuditLine.Tail
    ) throws(CaseVaultError) -> (AuditLine.Tail, lastStart: Int64, end: Int64, contentEnd: Int64) {
        let empty = (AuditLine.Tail(seq: 0, hash: AuditChain.genesis), Int64(0), Int64(0), Int64(0))
        guard size > 0 else { return empty }
        var window: Int64 = 64 << 10
        while true {
            let start = max(0, size - window)
            let bytes = try file.read(count: Int(size - start), at: start)
            guard let lastWritten = bytes.lastIndex(where: { $0 != 0 }) else {
                if start == 0 { return empty }
                window *= 4
                continue
            }
            let written = bytes[...lastWritten]
            let lastNewline = written.lastIndex(of: UInt8(ascii: "\n"))
            let whole = bytes[..<(lastNewline.map { $0 + 1 } ?? 0)]
            let lines = whole.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast()
            // Two whole lines (or the file's first) are needed to check the last one's hash.
            if lines.count >= 3 || start == 0 {
                let end = start + Int64(lastNewline.map { $0 + 1 } ?? 0)
                let contentEnd = start + Int64(lastWritten + 1)
                if lines.isEmpty { return (AuditLine.Tail(seq: 0, hash: AuditChain.genesis), 0, end, contentEnd) }
                let last = lines[lines.index(before: lines.endIndex)]
                guard let parsed = AuditLine.parse(last) else { throw Self.damaged() }
                let previous: AuditLine.Tail
                if lines.count >= 2 {
                    let before = lines[lines.index(lines.endIndex, offsetBy: -2)]
                    guard let parsed = AuditLine.parse(before) else { throw Self.damaged() }
                    previous = AuditLine.Tail(seq: parsed.entry.seq, hash: parsed.hash)
                } else if parsed.entry.seq == 1 {
                    previous = AuditLine.Tail(seq: 0, hash: AuditChain.genesis)
                } else if parsed.entry.seq > 1, let text = parsed.entry.previous, let hash = Hex.decode(text) {
                    // A file's first entry after a rotation names the entry before it.
                    previous = AuditLine.Tail(seq: parsed.entry.seq - 1, hash: hash)
                } else {
                    previous = try before()
                }
                guard previous.seq < UInt64.max, parsed.entry.seq == previous.seq + 1,
                    AuditChain.hash(previous: previous.hash, json: parsed.json) == parsed.hash
                else { throw Self.damaged() }
                return (AuditLine.Tail(seq: parsed.entry.seq, hash: parsed.hash), end - Int64(last.count + 1), end, contentEnd)
            }
            window *= 4
        }
    }

    /// The log grows in zero-filled steps ahead of its entries, as the store's segments do: a flush then
    /// overwrites blocks the file already has and costs a device flush, not a journal commit.
    static let growthStep: Int64 = 4 << 20

    private static func damaged() -> CaseVaultError {
        CaseVaultError(
            .integrityFailure,
            "the audit log's last entries do not check out, so the daemon will not append to it; "
                + "run casevaultctl audit verify --offline to find the first bad entry"
        )
    }

    // MARK: Writing

    /// Starts keying entries and signing checkpoints with `signer` and writes its public key into the log
    /// (with `breakFound`, the break the operator accepted, and a checkpoint after it so that the head
    /// names the log as it now stands). Waits until the entries are durable.
    public func attach(_ signer: AuditSigner, breakFound: String? = nil, firstKept: UInt64? = nil) throws(CaseVaultError) {
        self.shared.withLock { $0.signer = signer }
        var entry = AuditEntry(kind: .key, time: self.clock())
        entry.publicKey = Hex.encode(signer.publicKey)
        entry.reason = breakFound.map { AuditChain.breakPrefix + $0 }
        entry.firstKept = firstKept
        self.record(entry)
        do {
            try self.flush(checkpoint: breakFound == nil ? nil : "break")
        } catch {
            self.shared.withLock { $0.signer = nil }
            throw error
        }
    }

    /// Checks the log against `store`'s anchor and the root key, then `attach(store.auditSigner)`, anchors
    /// the log at what is durable, and from then on keeps the anchor up to date and lets entries ride on
    /// `store`'s flushes where they can. A log that does not check out is refused with `audit-mismatch`
    /// (nothing is written), unless the log was opened with `acceptBreak` (once): then whatever of the log
    /// does not check out is moved aside (`audit/log.broken-<time>`, with the head), and the break is
    /// recorded (with files missing from the middle of the log, the files before the gap are moved aside,
    /// and the break's entry names where the log now begins). Attaching to the store already attached does
    /// nothing.
    public func attach(to store: RecordStore) throws(CaseVaultError) {
        if self.shared.withLock({ $0.anchorStore === store }) { return }
        let signer = store.auditSigner
        // An end a power cut tore, set aside at open, is recorded as a break with the first attach that
        // succeeds, together with anything else accepted.
        let torn = self.shared.withLock { $0.tornAtOpen }
        if var finding = try self.check(against: store, signer: signer) {
            if let torn { finding.description += "; before that, \(torn)" }
            let accepted = self.acceptBreak.withLock { accept in
                defer { accept = false }
                return accept
            }
            guard accepted else {
                throw CaseVaultError(
                    .auditMismatch,
                    "the audit log does not match what the index remembers of it: \(finding.description). Nothing was written. "
                        + "Keep a copy of the data directory's audit/ for investigation; casevaultctl doctor says how to go on"
                )
            }
            if let cut = finding.cut { try self.setAside(from: cut) }
            if let floor = finding.floor {
                try self.setAside(before: floor)
                // The next file's first entry says where the log now begins, for the checks of later starts.
                self.chain.withLock { $0.rotateNow = true }
            }
            try self.attach(signer, breakFound: finding.description, firstKept: finding.floor)
        } else {
            try self.attach(signer, breakFound: torn)
        }
        // Recorded: the copies set aside are marked so, and no later open records them again.
        let recorded = self.shared.withLock { state in
            defer { (state.tornAtOpen, state.tornFiles) = (nil, []) }
            return state.tornFiles
        }
        for name in recorded {
            let path = self.directory + "/" + name
            guard rename(path, path + AuditFiles.recordedSuffix) == 0 else { throw POSIXFailure.error("rename", path: path) }
        }
        if !recorded.isEmpty { try DataDirectory.flushDirectory(self.directory) }
        do {
            // The anchor names only what is on disk: the tail as it stands, then flushed.
            let tail = self.shared.withLock { $0.writtenTail }
            try self.file.flushData()
            try store.setAuditAnchor(tail)
            let riding = store.letRide(self)
            self.shared.withLock { state in
                state.anchorStore = store
                state.anchoredSeq = tail.seq
                state.anchoredAt = .now()
                state.riding = riding
            }
        } catch {
            self.shared.withLock { $0.signer = nil }
            throw error
        }
    }

    /// What the check at attach found, and from where the log cannot be trusted.
    struct Finding {
        var description: String
        /// The first line that does not check out, and the last entry before it that does: accepting the
        /// break moves the log aside from there. `nil` when nothing in the log itself is bad.
        var cut: Cut?
        /// Files of the log are missing before this entry: accepting the break moves the files before it
        /// aside, and the log begins here.
        var floor: UInt64?
    }

    struct Cut {
        /// The file the bad line is in, by its first entry, and where the line starts.
        var file: UInt64
        var offset: Int64
        var last: AuditAnchor
    }

    /// A file of the log as the check reads it, oldest first; the last is `log`.
    struct Part {
        var name: String
        var first: UInt64
        var file: PosixFile
        /// Where its entries end (`log`: the end of the last batch written).
        var end: Int64
    }

    private func parts() throws(CaseVaultError) -> [Part] {
        let (fileFirst, end) = self.chain.withLock { ($0.fileFirst, $0.end) }
        var parts: [Part] = []
        for archived in try AuditFiles.list(self.directory) {
            guard let first = archived.first else { continue }
            let file = try PosixFile(path: self.directory + "/" + archived.name, flags: O_RDONLY)
            parts.append(Part(name: archived.name, first: first, file: file, end: try file.size()))
        }
        parts.append(Part(name: AuditFiles.current, first: fileFirst, file: self.file, end: end))
        return parts
    }

    /// Whether the files follow one another: each rotated file begins with the entry its name gives and
    /// ends with the entry before the next file's first, by number and hash, and the oldest begins no later
    /// than the log's own record of its retention (the newest `rotate` checkpoint's `first_kept`). Reads
    /// the first and the last line of each file. With `signer` (at a start), a first line counts only if
    /// its MAC verifies (and a `rotate` checkpoint's hash follows from the `previous` it names), so that
    /// nobody without the root key can rewrite what a file says the log keeps or where it follows from.
    static func checkFiles(_ parts: [Part], signer: AuditSigner?) throws(CaseVaultError) -> Finding? {
        func trusted(_ line: AuditLine.Parsed) -> Bool {
            guard let signer else { return true }
            guard let mac = line.mac, Memory.constantTimeEquals(signer.mac(AuditChain.macMessage(line.hash)), mac) else { return false }
            guard line.entry.reason == AuditChain.rotateReason, line.entry.kind == .checkpoint else { return true }
            guard let text = line.entry.previous, let previous = Hex.decode(text) else { return false }
            return AuditChain.hash(previous: previous, json: line.json) == line.hash
        }
        var firsts: [AuditLine.Parsed?] = []
        for part in parts {
            firsts.append(part.end == 0 ? nil : try AuditFiles.firstLine(part.file))
        }
        var problems: [String] = []
        var floor: UInt64?
        var kept: UInt64 = 1
        for (index, part) in parts.enumerated() {
            let isRotated = index < parts.count - 1
            guard let first = firsts[index] else {
                if isRotated {
                    problems.append("the rotated file \(part.name) is empty")
                    floor = parts[index + 1].first
                }
                continue
            }
            guard !isRotated || trusted(first) else {
                problems.append("the first entry of \(part.name) does not verify under the root key")
                floor = parts[index + 1].first
                continue
            }
            if first.entry.reason == AuditChain.rotateReason, let value = first.entry.firstKept, trusted(first) { kept = max(kept, value) }
            guard isRotated else { continue }
            guard first.entry.seq == part.first else {
                problems.append("the rotated file \(part.name) begins at entry \(first.entry.seq), not the one its name gives")
                floor = parts[index + 1].first
                continue
            }
            guard let next = firsts[index + 1] else { continue }
            let follows: Bool
            if let last = try AuditFiles.lastLine(part.file), next.entry.seq > 0, last.entry.seq == next.entry.seq - 1 {
                if next.entry.reason == AuditChain.rotateReason, let text = next.entry.previous {
                    follows = trusted(next) && Hex.decode(text) == last.hash
                } else {
                    follows = AuditChain.hash(previous: last.hash, json: next.json) == next.hash
                }
            } else {
                follows = false
            }
            guard follows else {
                problems.append("\(parts[index + 1].name) does not follow from \(part.name): entries between them are missing or were replaced")
                floor = next.entry.seq
                continue
            }
        }
        if let oldest = firsts.compactMap({ $0 }).first?.entry.seq, oldest > kept {
            problems.append("the log begins at entry \(oldest) but keeps entries from \(kept): its oldest files were removed")
            floor = max(floor ?? oldest, oldest)
        }
        guard !problems.isEmpty else { return nil }
        return Finding(description: problems.joined(separator: "; "), cut: nil, floor: floor)
    }

    /// Whether the files of the log in `directory` follow one another (`checkFiles`), without the root key
    /// and without the daemon: what is wrong, or `nil`. For `casevaultctl doctor`.
    public static func filesProblem(directory: String) -> String? {
        do throws(CaseVaultError) {
            var parts: [Part] = []
            for found in try AuditFiles.list(directory) {
                let file = try PosixFile(path: directory + "/" + found.name, flags: O_RDONLY)
                var first = found.first ?? UInt64.max
                if found.first == nil, let line = try AuditFiles.firstLine(file) { first = line.entry.seq }
                parts.append(Part(name: found.name, first: first, file: file, end: try file.size()))
            }
            return try Self.checkFiles(parts, signer: nil)?.description
        } catch {
            return error.message
        }
    }

    /// What is wrong with the log against `store`'s anchor, or `nil` when it checks out: the files must
    /// follow one another (`checkFiles`), the anchor's entry must be where it says and follow from the entry
    /// before it, and every entry after it must check out under `signer`. With no anchor (a new vault, a
    /// damaged anchor) or a fresh one (seq 0, after a restore), every entry from the first is checked. With
    /// files missing, the walk begins after the gap (from the anchor, when it lies after it): everything
    /// found is named together, so that accepting one break cannot pass over another.
    func check(against store: RecordStore, signer: AuditSigner) throws(CaseVaultError) -> Finding? {
        var problem: String?
        var anchor = AuditAnchor.empty
        do {
            switch try store.auditAnchor() {
            case .none(let vaultIsNew):
                if !vaultIsNew { problem = "the index holds records but no audit anchor (it was removed, or the vault predates anchors)" }
            case .anchored(let value):
                anchor = value
            }
        } catch {
            guard error.code == .integrityFailure else { throw error }
            problem = error.message
        }
        // The anchor first, then the log: a flush may move the anchor on meanwhile, never past the log.
        let entries = self.chain.withLock { $0.seq }
        let parts = try self.parts()
        let files = try Self.checkFiles(parts, signer: signer)
        let floorIndex = files?.floor.flatMap { floor in parts.firstIndex { $0.first >= floor } } ?? 0
        let walked = try self.walk(parts, from: floorIndex, gap: files != nil, anchor: anchor, entries: entries, signer: signer)
        let found = [problem, files?.description, walked?.description].compactMap { $0 }
        guard !found.isEmpty else { return nil }
        return Finding(description: found.joined(separator: "; "), cut: walked?.cut, floor: files?.floor ?? walked?.floor)
    }

    /// The walk under the root key: from the anchor's entry (or, when there is none or it lies before a gap
    /// in the files, from the first entry of `parts[start]`) to the end.
    private func walk(
        _ parts: [Part], from start: Int, gap: Bool, anchor: AuditAnchor, entries: UInt64, signer: AuditSigner
    ) throws(CaseVaultError) -> Finding? {
        var walker = AuditWalker(previous: AuditChain.genesis, seq: 0, signer: signer, expectedKey: nil)
        var startPart = start
        var windowStart: Int64 = 0
        var position = 0
        var lastStart: Int64 = 0
        var lastFile = parts[start].first
        var began = false
        var bytes: [UInt8] = []
        let anchorPart = parts.firstIndex(where: { $0.first == anchor.file })
        if anchor.seq > 0, !gap || (anchorPart.map { $0 >= start } ?? false) {
            guard let index = anchorPart, anchor.seq <= entries, anchor.offset < parts[index].end else {
                let oldest = parts[0].first
                return Finding(
                    description: "the log ends at entry \(entries) but the index's anchor names entry \(anchor.seq)"
                        + (anchor.file < oldest ? " in a file that is gone" : "")
                        + ": entries \(anchor.seq <= entries ? anchor.seq : entries + 1) to \(anchor.seq) at least were cut away, "
                        + "or the log was replaced",
                    cut: nil, floor: anchor.file < oldest && anchor.seq <= entries ? oldest : nil
                )
            }
            // From the line before the anchor's (its hash is needed), to the end of that file.
            let part = parts[index]
            startPart = index
            windowStart = max(0, anchor.offset - 16 << 10)
            bytes = try part.file.read(count: Int(part.end - windowStart), at: windowStart)
            let anchorAt = Int(anchor.offset - windowStart)
            let before = bytes[..<max(0, anchorAt - 1)].lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
            let lineEnd = bytes[anchorAt...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.endIndex
            guard anchorAt == 0 || bytes[anchorAt - 1] == UInt8(ascii: "\n"),
                let parsed = AuditLine.parse(bytes[anchorAt..<lineEnd]), parsed.entry.seq == anchor.seq, parsed.hash == anchor.hash
            else {
                return Finding(
                    description: "entry \(anchor.seq) is not the one the index's anchor names: the log was replaced",
                    cut: Cut(file: parts[start].first, offset: 0, last: .empty)
                )
            }
            // The anchor's own entry: its JSON must give its hash (when the entry before it is at hand), and
            // its MAC must verify.
            var previous: [UInt8]?
            if anchor.seq == 1 {
                previous = AuditChain.genesis
            } else if anchorAt > 0, let line = AuditLine.parse(bytes[before..<(anchorAt - 1)]), line.entry.seq == anchor.seq - 1 {
                previous = line.hash
            } else if anchorAt == 0, let text = parsed.entry.previous {
                previous = Hex.decode(text)
            }
            if let previous {
                walker = AuditWalker(previous: previous, seq: anchor.seq - 1, signer: signer, expectedKey: nil)
                if let reason = walker.step(parsed) {
                    return Finding(
                        description: "entry \(anchor.seq), the one the index's anchor names: \(reason)",
                        cut: Cut(file: parts[start].first, offset: 0, last: .empty)
                    )
                }
            } else {
                walker = AuditWalker(previous: anchor.hash, seq: anchor.seq, signer: signer, expectedKey: nil)
            }
            if parsed.entry.kind == .checkpoint, parsed.entry.reason == "seal" { walker.sealSuccessAllowed = true }
            position = lineEnd + 1
            lastStart = anchor.offset
            lastFile = part.first
            began = true
        } else {
            bytes = try parts[start].file.read(count: Int(parts[start].end), at: 0)
        }
        for index in startPart..<parts.count {
            let part = parts[index]
            if index > startPart {
                windowStart = 0
                position = 0
                bytes = try part.file.read(count: Int(part.end), at: 0)
            }
            let end = bytes.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0
            while position < end {
                guard let newline = bytes[position..<end].firstIndex(of: UInt8(ascii: "\n")) else { break }
                var reason: String?
                if let parsed = AuditLine.parse(bytes[position..<newline]) {
                    if !began {
                        began = true
                        reason = walker.begin(parsed)
                    }
                    reason = reason ?? walker.step(parsed)
                } else {
                    reason = "it is not an entry (its shape was altered)"
                }
                if let reason {
                    let last = AuditAnchor(seq: walker.seq, hash: walker.previous, offset: lastStart, file: lastFile)
                    return Finding(
                        description: "entry \(walker.seq &+ 1) (\(part.name)): \(reason)",
                        cut: Cut(file: part.first, offset: windowStart + Int64(position), last: last)
                    )
                }
                lastStart = windowStart + Int64(position)
                lastFile = part.first
                position = newline + 1
            }
        }
        return nil
    }

    /// Moves the log from `cut` on aside (`<file>.broken-<time>`, made durable) together with the head: the
    /// rest of the cut's file is copied aside and cut from it, later files are renamed aside, and the chain
    /// carries on from `cut.last` (in a new, empty `log` when the cut was in a rotated file).
    private func setAside(from cut: Cut) throws(CaseVaultError) {
        let stamp = self.clock()
        let parts = try self.parts()
        guard let index = parts.firstIndex(where: { $0.first == cut.file }) else { return }
        try self.chain.withLock { chain throws(CaseVaultError) in
            let part = parts[index]
            let length = Int(part.end - cut.offset)
            let whole = index < parts.count - 1 && cut.offset == 0
            if length > 0, !whole {
                let bytes = try part.file.read(count: length, at: cut.offset)
                let aside = try PosixFile(
                    path: self.directory + "/" + part.name + ".broken-\(stamp)", flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600
                )
                try aside.write(bytes, at: 0)
                try aside.flushData()
            }
            if index == parts.count - 1 {
                if length > 0 {
                    try self.file.write([UInt8](repeating: 0, count: length), at: cut.offset)
                    try self.file.flushData()
                }
                chain.end = cut.offset
            } else {
                if !whole {
                    let archived = try PosixFile(path: self.directory + "/" + part.name, flags: O_RDWR)
                    try archived.truncate(to: cut.offset)
                    try archived.flushData()
                }
                for later in parts[(whole ? index : index + 1)...] {
                    let path = self.directory + "/" + later.name
                    guard rename(path, path + ".broken-\(stamp)") == 0 else { throw POSIXFailure.error("rename", path: path) }
                }
                let fresh = try PosixFile(path: self.logPath, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o600)
                self.current.withLock { $0 = fresh }
                chain.end = 0
                chain.allocated = 0
                chain.fileFirst = cut.last.seq + 1
            }
            if DataDirectory.exists(self.headPath) {
                guard rename(self.headPath, self.headPath + ".broken-\(stamp)") == 0 else {
                    throw POSIXFailure.error("rename", path: self.headPath)
                }
            }
            try DataDirectory.flushDirectory(self.directory)
            chain.seq = cut.last.seq
            chain.hash = cut.last.seq == 0 ? AuditChain.genesis : cut.last.hash
            chain.lastStart = cut.last.offset
            chain.lastFile = cut.last.file
            chain.lastCheckpoint = cut.last.seq
            chain.dirtyBytes = 0
        }
        // What the cut zeroed or moved away is durable as it now stands; nothing past it is known durable.
        let (first, end) = self.chain.withLock { ($0.fileFirst, $0.end) }
        self.shared.withLock { state in
            state.writtenTail = cut.last
            state.durable = (first, min(end, state.durable.flatMap { $0.file == first ? $0.end : nil } ?? 0))
        }
    }

    /// Moves the rotated files that begin before `floor` aside (`<file>.broken-<time>`): files missing
    /// after them leave the log to begin at `floor`.
    private func setAside(before floor: UInt64) throws(CaseVaultError) {
        let stamp = self.clock()
        var moved = false
        for archived in try AuditFiles.list(self.directory) {
            guard let first = archived.first, first < floor else { continue }
            let path = self.directory + "/" + archived.name
            guard rename(path, path + ".broken-\(stamp)") == 0 else { throw POSIXFailure.error("rename", path: path) }
            moved = true
        }
        if moved { try DataDirectory.flushDirectory(self.directory) }
    }

    /// Stops signing: after a last checkpoint (which is anchored), the log forgets the signer and the store
    /// (the daemon is being sealed), and stops riding on the store's flushes.
    public func detach(reason: String) throws(CaseVaultError) {
        defer {
            self.shared.withLock { state in
                state.signer = nil
                state.riding = false
                state.anchorStore = nil
            }
        }
        try self.flush(checkpoint: reason)
    }

    /// Whether entries ride on the store's flushes.
    public var isRiding: Bool {
        self.shared.withLock { $0.riding }
    }

    /// How entries reached the disk so far: flushes of the log's own, and store flushes that carried them.
    public var flushCounts: (own: Int, rides: Int) {
        self.shared.withLock { ($0.ownFlushes, $0.rides) }
    }

    /// A new number for a request, to tie its `result` entry to its `request` entry.
    public func nextRequestNumber() -> UInt64 {
        self.shared.withLock { state in
            defer { state.nextRequest += 1 }
            return state.nextRequest
        }
    }

    /// Appends `entry` and returns once it is written (not yet flushed: see `awaitDurable`). Throws
    /// `audit-unavailable` when it could not be written within `writeDeadline`: the caller must then not act.
    public func append(_ entry: AuditEntry) async throws(CaseVaultError) -> Receipt {
        if let written = self.writeInline(entry) {
            return Receipt(batch: try written.get())
        }
        let result: Result<UInt64, CaseVaultError> = await withCheckedContinuation { continuation in
            let waiter = Waiter { result in continuation.resume(returning: result) }
            self.deadlines.watch(waiter, failure: Self.unavailable("its entry was not written within \(Self.deadlineText)"))
            self.enqueue(.entry(entry, waiter))
        }
        return Receipt(batch: try result.get())
    }

    /// The fast path: when the writer is idle, the caller writes its entry itself (one `pwrite`), saving
    /// two thread hops. `nil` when the writer is busy: the caller then queues, with the deadline. A caller
    /// stuck here in a `pwrite` (a hung disk) holds the lead, so the others queue and are refused in time.
    private func writeInline(_ entry: AuditEntry, waiting: Bool = true) -> Result<UInt64, CaseVaultError>? {
        let lead = self.shared.withLock { state -> AuditSigner?? in
            guard !state.closed, !state.draining, state.pending.isEmpty else { return .none }
            state.draining = true
            return .some(state.signer)
        }
        guard case .some(let signer) = lead else { return nil }
        let outcome = Mutex<Result<UInt64, CaseVaultError>?>(nil)
        self.write([.entry(entry, waiting ? Waiter { result in outcome.withLock { $0 = result } } : nil)], signer: signer)
        let more = self.shared.withLock { state -> Bool in
            if state.pending.isEmpty {
                state.draining = false
                return false
            }
            return true
        }
        if more {
            self.writer.async { self.drain() }
        }
        guard waiting else { return .success(0) }
        return outcome.withLock { $0 } ?? .failure(Self.unavailable("the entry was not written"))
    }

    /// Waits until the entry behind `receipt` is on disk (at most `writeDeadline`).
    public func awaitDurable(_ receipt: Receipt) async throws(CaseVaultError) {
        let result: Result<UInt64, CaseVaultError> = await withCheckedContinuation { continuation in
            let waiter = Waiter { result in continuation.resume(returning: result) }
            let done = self.shared.withLock { state -> Bool in
                if state.synced >= receipt.batch { return true }
                state.durableWaiters.append((receipt.batch, waiter))
                return false
            }
            if done {
                waiter.complete(.success(receipt.batch))
                return
            }
            self.deadlines.watch(waiter, failure: Self.unavailable("its entry was not on disk within \(Self.deadlineText)"))
            self.startSync()
        }
        _ = try result.get()
    }

    /// Queues `entry` without waiting: for results, which follow their action. It reaches the disk with the
    /// next flush, at the latest at shutdown.
    public func record(_ entry: AuditEntry) {
        if self.writeInline(entry, waiting: false) == nil {
            self.enqueue(.entry(entry, nil))
        }
    }

    /// Writes a last checkpoint and flushes; later entries are refused.
    public func close() {
        try? self.flush(checkpoint: "shutdown")
        self.shared.withLock { $0.closed = true }
    }

    /// Why entries cannot be written or flushed right now, or `nil` when the last write and flush succeeded.
    public var failure: String? {
        self.shared.withLock { $0.writeFailure ?? $0.syncFailure }
    }

    /// The number of the last entry written.
    public var entries: UInt64 {
        self.chain.withLock { $0.seq }
    }

    static var deadlineText: String { "0.8 s" }

    static func unavailable(_ why: String) -> CaseVaultError {
        CaseVaultError(
            .auditUnavailable,
            "the audit log cannot be written (\(why)), so the daemon refuses to act; casevaultctl status says why"
        )
    }

    /// Flushes everything queued so far (after a checkpoint, when `checkpoint` names one), blocking until
    /// it is durable.
    private func flush(checkpoint: String?) throws(CaseVaultError) {
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<UInt64, CaseVaultError>>(.success(0))
        let waiter = Waiter { result in
            outcome.withLock { $0 = result }
            done.signal()
        }
        self.enqueue(.flush(checkpoint: checkpoint, waiter))
        done.wait()
        _ = try outcome.withLock { $0 }.get()
    }

    private func enqueue(_ pending: Pending) {
        let (start, refused) = self.shared.withLock { state -> (Bool, Bool) in
            if state.closed { return (false, true) }
            state.pending.append(pending)
            if state.draining { return (false, false) }
            state.draining = true
            return (true, false)
        }
        if refused {
            let stopping = Self.unavailable("the daemon is stopping")
            switch pending {
            case .entry(_, let waiter): waiter?.complete(.failure(stopping))
            case .flush(_, let waiter): waiter.complete(.failure(stopping))
            }
        }
        if start {
            self.writer.async { self.drain() }
        }
    }

    /// The writer: takes everything queued, writes it as one batch, and repeats until the queue is empty.
    private func drain() {
        while true {
            let next = self.shared.withLock { state -> ([Pending], AuditSigner?)? in
                if state.pending.isEmpty {
                    state.draining = false
                    return nil
                }
                defer { state.pending.removeAll(keepingCapacity: true) }
                return (state.pending, state.signer)
            }
            guard let (batch, signer) = next else { return }
            self.write(batch, signer: signer)
        }
    }

    private func write(_ batch: [Pending], signer: AuditSigner?) {
        var entryWaiters: [Waiter] = []
        var flushWaiters: [Waiter] = []
        var grew = false
        var rotationFailure: String??
        let result = self.chain.withLock { chain -> Result<(checkpoint: AuditAnchor?, tail: AuditAnchor), CaseVaultError> in
            var checkpoint: AuditAnchor?
            // A rotation whose new names may not be durable yet: nothing goes into the new file until they are.
            if let unusable = chain.unusable {
                return .failure(CaseVaultError(.storageFailure, unusable))
            }
            if chain.directoryUnflushed {
                do throws(CaseVaultError) {
                    try DataDirectory.flushDirectory(self.directory)
                    chain.directoryUnflushed = false
                } catch {
                    return .failure(error)
                }
            }
            let due = (self.retention.rotateBytes > 0 && chain.end >= self.retention.rotateBytes) || chain.rotateNow
            if let signer, due, chain.dirtyBytes == 0, chain.seq >= chain.rotateAfter {
                do throws(CaseVaultError) {
                    checkpoint = try self.rotate(&chain, signer: signer)
                    rotationFailure = .some(nil)
                } catch {
                    // The log goes on in its file, and tries again after the next interval's worth of entries.
                    chain.rotateAfter = chain.seq + self.checkpointInterval
                    rotationFailure = .some(error.message)
                }
                // The file's size may have changed either way: the log flushes it before anything rides.
                grew = true
                if chain.unusable != nil || chain.directoryUnflushed {
                    return .failure(CaseVaultError(.storageFailure, (rotationFailure ?? nil) ?? "the audit log could not rotate"))
                }
            }
            var seq = chain.seq
            var hash = chain.hash
            var bytes: [UInt8] = []
            var lineStart = chain.lastStart
            var lineFile = chain.lastFile
            func add(_ entry: AuditEntry) {
                var entry = entry
                seq += 1
                entry.seq = seq
                lineStart = chain.end + Int64(bytes.count)
                lineFile = chain.fileFirst
                let (line, next) = AuditChain.line(previous: hash, json: AuditChain.encode(entry), signer: signer)
                bytes += line
                hash = next
            }
            func addCheckpoint(_ reason: String, signer: AuditSigner) {
                var entry = AuditEntry(kind: .checkpoint, time: self.clock())
                entry.reason = reason
                entry.signature = Hex.encode(signer.signature(for: AuditChain.checkpointMessage(seq: seq + 1, previous: hash)))
                add(entry)
                checkpoint = AuditAnchor(seq: seq, hash: hash, offset: lineStart, file: lineFile)
            }
            for pending in batch {
                switch pending {
                case .entry(let entry, let waiter):
                    add(entry)
                    if let waiter { entryWaiters.append(waiter) }
                    // No more than `checkpointInterval` entries go unsigned, however large the batch.
                    if let signer, seq >= (checkpoint?.seq ?? chain.lastCheckpoint) + self.checkpointInterval {
                        addCheckpoint("interval", signer: signer)
                    }
                case .flush(let reason, let waiter):
                    flushWaiters.append(waiter)
                    if let signer, let reason { addCheckpoint(reason, signer: signer) }
                }
            }
            // What a failed batch may have left past the end is zeroed by this one.
            var output = bytes
            if chain.dirtyBytes > output.count {
                output += [UInt8](repeating: 0, count: chain.dirtyBytes - output.count)
            }
            do throws(CaseVaultError) {
                let needed = chain.end + Int64(output.count)
                if needed > chain.allocated {
                    let grown = (needed / Self.growthStep + 1) * Self.growthStep
                    try self.file.write([UInt8](repeating: 0, count: Int(grown - chain.allocated)), at: chain.allocated)
                    chain.allocated = grown
                    grew = true
                }
                if !output.isEmpty {
                    try self.file.write(output, at: chain.end)
                }
            } catch {
                chain.dirtyBytes = max(chain.dirtyBytes, bytes.count)
                return .failure(error)
            }
            chain.dirtyBytes = 0
            chain.seq = seq
            chain.hash = hash
            chain.lastStart = lineStart
            chain.lastFile = lineFile
            chain.end += Int64(bytes.count)
            if let checkpoint { chain.lastCheckpoint = checkpoint.seq }
            return .success((checkpoint, chain.tail))
        }
        if let rotationFailure {
            self.shared.withLock { $0.rotationFailure = rotationFailure }
        }
        switch result {
        case .failure(let error):
            self.shared.withLock { $0.writeFailure = error.message }
            let refusal = Self.unavailable(error.message)
            for waiter in entryWaiters + flushWaiters {
                waiter.complete(.failure(refusal))
            }
        case .success(let (checkpoint, tail)):
            let (number, eager) = self.shared.withLock { state -> (UInt64, Bool) in
                state.writeFailure = nil
                state.written += 1
                state.writtenTail = tail
                if grew { state.grewIn = state.written }
                if let checkpoint, let signer {
                    state.unsyncedCheckpoint = (checkpoint, signer)
                }
                for waiter in flushWaiters {
                    state.durableWaiters.append((state.written, waiter))
                }
                return (state.written, !state.riding)
            }
            for waiter in entryWaiters {
                waiter.complete(.success(number))
            }
            // Results alone wait for the next flush. A request entry's flush starts now, while its route
            // works, unless it rides on the store's flush (then `awaitDurable` starts it if still needed).
            // A checkpoint, an explicit flush and a grown file need a flush of the log's own.
            if (eager && !entryWaiters.isEmpty) || !flushWaiters.isEmpty || checkpoint != nil || grew || self.anchorDue() {
                self.startSync()
            }
            self.scheduleAnchor()
        }
    }

    /// Moves the log to a new file (DESIGN §10), on the writer: the file being closed is cut to its
    /// entries and flushed; the new one is prepared aside (`log.new`) with a signed `rotate` checkpoint as its
    /// first entry (naming the entry before it, the signing key and the first entry the log keeps) and
    /// flushed; then `log` is renamed to `log.<its first entry>` and the new file to `log`. Only once that
    /// is durable does the retention remove the oldest rotated files. A crash anywhere leaves either the
    /// old layout or the new one (`open` finishes or undoes a rotation). Returns the checkpoint, whose head
    /// and anchor the next flush writes.
    private func rotate(_ chain: inout Chain, signer: AuditSigner) throws(CaseVaultError) -> AuditAnchor {
        let archive = AuditFiles.archiveName(first: chain.fileFirst)
        let archivePath = self.directory + "/" + archive
        guard !DataDirectory.exists(archivePath) else {
            throw CaseVaultError(.storageFailure, "the audit log cannot rotate: \(archive) already exists")
        }
        // Which rotated files the retention removes: the oldest beyond `keepFiles`, as long as the oldest
        // kept begins with a rotate checkpoint or entry 1 (a walk can begin there).
        var rotated = try AuditFiles.list(self.directory).compactMap(\.first) + [chain.fileFirst]
        rotated.sort()
        var removed = self.retention.keepFiles > 0 ? Array(rotated.prefix(max(0, rotated.count - self.retention.keepFiles))) : []
        while let oldestKept = rotated.dropFirst(removed.count).first, !removed.isEmpty {
            let file = oldestKept == chain.fileFirst
                ? self.file : try PosixFile(path: self.directory + "/" + AuditFiles.archiveName(first: oldestKept), flags: O_RDONLY)
            if let first = try AuditFiles.firstLine(file), first.entry.reason == AuditChain.rotateReason || first.entry.seq == 1 {
                break
            }
            removed.removeLast()
        }
        let firstKept = rotated.dropFirst(removed.count).first ?? chain.fileFirst

        let seq = chain.seq + 1
        var entry = AuditEntry(seq: seq, kind: .checkpoint, time: self.clock())
        entry.reason = AuditChain.rotateReason
        entry.previous = Hex.encode(chain.hash)
        entry.publicKey = Hex.encode(signer.publicKey)
        entry.firstKept = firstKept
        entry.signature = Hex.encode(signer.signature(for: AuditChain.checkpointMessage(seq: seq, previous: chain.hash)))
        let (line, hash) = AuditChain.line(previous: chain.hash, json: AuditChain.encode(entry), signer: signer)
        let preparedPath = self.directory + "/" + AuditFiles.prepared
        _ = unlink(preparedPath)
        let next = try PosixFile(path: preparedPath, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o600)
        let allocated = max(Self.growthStep, Int64(line.count))
        try next.write(line + [UInt8](repeating: 0, count: Int(allocated) - line.count), at: 0)
        try next.flushData()

        // The file being closed: cut to its entries, and everything in it durable before a file after it
        // takes its name.
        let old = self.file
        try old.truncate(to: chain.end)
        if let lost = self.shared.withLock({ $0.rewrite }), lost.file == chain.fileFirst, lost.from < chain.end {
            try Self.writeAgain(old, from: lost.from, to: chain.end, chain: &chain)
        }
        try old.flushData()
        chain.allocated = chain.end
        guard rename(self.logPath, archivePath) == 0 else { throw POSIXFailure.error("rename", path: self.logPath) }
        guard rename(preparedPath, self.logPath) == 0 else {
            let failure = POSIXFailure.error("rename", path: preparedPath)
            // Back as it was: the old file goes on. If even that fails, the log stops (a restart finishes the
            // rotation from log.new).
            if rename(archivePath, self.logPath) != 0 {
                chain.unusable = "the audit log stopped half-way through a rotation (\(failure.message)); restart casevaultd to finish it"
            }
            throw failure
        }
        // From here on the rotation has happened: the new file is written to, once its names are durable.
        self.current.withLock { $0 = next }
        chain.seq = seq
        chain.hash = hash
        chain.fileFirst = seq
        chain.lastFile = seq
        chain.lastStart = 0
        chain.end = Int64(line.count)
        chain.allocated = allocated
        chain.lastCheckpoint = seq
        chain.rotateNow = false
        self.shared.withLock { state in
            state.durable = (seq, Int64(line.count))
            state.rewrite = nil
        }
        chain.directoryUnflushed = true
        try DataDirectory.flushDirectory(self.directory)
        chain.directoryUnflushed = false
        if !removed.isEmpty {
            for first in removed {
                _ = unlink(self.directory + "/" + AuditFiles.archiveName(first: first))
            }
            try? DataDirectory.flushDirectory(self.directory)
        }
        return AuditAnchor(seq: seq, hash: hash, offset: 0, file: seq)
    }

    /// Asks the syncer to flush now. Extra requests are harmless: a flush with nothing new to flush is none.
    private func startSync() {
        self.syncer.async { self.sync() }
    }

    /// How often, at most, the anchor follows the log between checkpoints.
    static let anchorInterval: DispatchTimeInterval = .seconds(1)

    /// Whether the anchor lags behind what was written by more than `anchorInterval`.
    private func anchorDue() -> Bool {
        self.shared.withLock { state in Self.anchorDue(state) }
    }

    private static func anchorDue(_ state: Shared) -> Bool {
        state.anchorStore != nil && state.writtenTail.seq > state.anchoredSeq && DispatchTime.now() >= state.anchoredAt + Self.anchorInterval
    }

    /// When the anchor lags but is not due yet, a flush for when it falls due, so that a quiet daemon's
    /// last entries are anchored too.
    private func scheduleAnchor() {
        let due = self.shared.withLock { state -> DispatchTime? in
            guard state.anchorStore != nil, state.writtenTail.seq > state.anchoredSeq, !state.anchorScheduled else { return nil }
            state.anchorScheduled = true
            return state.anchoredAt + Self.anchorInterval
        }
        guard let due else { return }
        self.syncer.asyncAfter(deadline: due) {
            self.shared.withLock { $0.anchorScheduled = false }
            self.sync()
        }
    }

    /// The syncer: flushes everything written so far, replaces the head after a checkpoint and the anchor
    /// when due, tells the waiters, and repeats while more was written meanwhile (riding: while someone
    /// waits for it).
    private func sync() {
        while true {
            let next = self.shared.withLock { state -> (UInt64, (anchor: AuditAnchor, signer: AuditSigner)?, (RecordStore, AuditAnchor)?)? in
                // Nothing new, unless a ride made the checkpoint's batch durable before its head was written.
                let anchorDue = Self.anchorDue(state)
                let ownNeeded = state.unsyncedCheckpoint != nil || state.grewIn > state.ownSynced || anchorDue
                if state.written <= state.synced && !ownNeeded { return nil }
                // Riding, what nobody waits for is left to the next put's flush.
                if state.riding && state.durableWaiters.isEmpty && !ownNeeded { return nil }
                defer { state.unsyncedCheckpoint = nil }
                let anchor = (state.unsyncedCheckpoint != nil || anchorDue) ? state.anchorStore.map { ($0, state.writtenTail) } : nil
                return (state.written, state.unsyncedCheckpoint, anchor)
            }
            guard let (target, checkpoint, anchor) = next else { return }
            var failure: CaseVaultError?
            var flushed: (file: UInt64, end: Int64)?
            var failuresBefore: UInt64 = 0
            do throws(CaseVaultError) {
                // Everything written so far, and again what a failed flush should have made durable.
                let (file, first, end) = try self.chain.withLock { chain throws(CaseVaultError) -> (PosixFile, UInt64, Int64) in
                    let rewrite = self.shared.withLock { state in
                        failuresBefore = state.failures
                        return state.rewrite
                    }
                    if let rewrite, rewrite.file == chain.fileFirst, rewrite.from < chain.end {
                        try Self.writeAgain(self.file, from: rewrite.from, to: chain.end, chain: &chain)
                    }
                    return (self.file, chain.fileFirst, chain.end)
                }
                try file.flushData()
                flushed = (first, end)
                if let checkpoint {
                    try self.writeHead(seq: checkpoint.anchor.seq, hash: checkpoint.anchor.hash, signer: checkpoint.signer)
                }
            } catch {
                failure = error
            }
            // The anchor names only what is durable: the last entry written before this flush. A checkpoint's
            // is written before anyone waiting is told (seal and shutdown close the store next); the others
            // after, so that no answer waits on the index. Its failure leaves the log as good as it was.
            var anchored = false
            if failure == nil, checkpoint != nil, let (store, tail) = anchor {
                anchored = self.anchor(tail, in: store)
            }
            let ready = self.shared.withLock { state -> [Waiter] in
                // A flush that failed elsewhere meanwhile may have taken this one's error: not durable either.
                if failure == nil, state.failures != failuresBefore {
                    failure = CaseVaultError(.storageFailure, "a flush of the audit log failed meanwhile")
                }
                if let failure {
                    Self.needRewrite(&state, file: flushed?.file ?? state.durable?.file ?? 0)
                    state.syncFailure = failure.message
                    // The head stays behind; the next flush tries it again.
                    if state.unsyncedCheckpoint == nil { state.unsyncedCheckpoint = checkpoint }
                } else {
                    state.syncFailure = nil
                    if let flushed {
                        state.durable = flushed
                        if state.rewrite?.file == flushed.file { state.rewrite = nil }
                    }
                    state.synced = max(state.synced, target)
                    state.ownSynced = max(state.ownSynced, target)
                    state.ownFlushes += 1
                    if anchored, let (_, tail) = anchor {
                        state.anchoredSeq = max(state.anchoredSeq, tail.seq)
                    }
                    if anchor != nil { state.anchoredAt = .now() }
                }
                let ready = state.durableWaiters.filter { $0.batch <= target }.map(\.waiter)
                state.durableWaiters.removeAll { $0.batch <= target }
                return ready
            }
            let outcome: Result<UInt64, CaseVaultError> = failure.map { .failure(Self.unavailable($0.message)) } ?? .success(target)
            for waiter in ready {
                waiter.complete(outcome)
            }
            if failure != nil { return }
            if checkpoint == nil, let (store, tail) = anchor, self.anchor(tail, in: store) {
                self.shared.withLock { $0.anchoredSeq = max($0.anchoredSeq, tail.seq) }
            }
        }
    }

    /// Replaces the anchor in `store`; `false` (and `anchorFailure` says why) when it could not.
    private func anchor(_ tail: AuditAnchor, in store: RecordStore) -> Bool {
        do throws(CaseVaultError) {
            try store.setAuditAnchor(tail)
            self.shared.withLock { $0.anchorFailure = nil }
            return true
        } catch {
            self.shared.withLock { $0.anchorFailure = error.message }
            return false
        }
    }

    /// Why the log could not move to a new file the last time it was due, or `nil` (it goes on in the same
    /// file and tries again).
    public var rotationFailure: String? {
        self.shared.withLock { $0.rotationFailure }
    }

    /// Why the anchor could not be replaced the last time it was due, or `nil`.
    public var anchorFailure: String? {
        self.shared.withLock { $0.anchorFailure }
    }

    /// Replaces `audit/head` atomically (write aside, flush, rename, flush the directory).
    private func writeHead(seq: UInt64, hash: [UInt8], signer: AuditSigner) throws(CaseVaultError) {
        let head = AuditHead(
            seq: seq,
            hash: Hex.encode(hash),
            signature: Hex.encode(signer.signature(for: AuditChain.headMessage(seq: seq, hash: hash)))
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = Array((try? encoder.encode(head)) ?? Data()) + [UInt8(ascii: "\n")]
        let aside = self.headPath + ".new"
        let file = try PosixFile(path: aside, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        try file.write(bytes, at: 0)
        try file.flushData()
        guard rename(aside, self.headPath) == 0 else { throw POSIXFailure.error("rename", path: self.headPath) }
        try DataDirectory.flushDirectory(self.directory)
    }

    // MARK: Riding on the store's flushes

    /// Ready to ride when something was written since the last flush, no checkpoint's head is waiting,
    /// every growth of the file has been flushed by the log itself, and no failed flush waits for the log's
    /// own to write again what it lost.
    public func prepareRide() -> UInt64? {
        let target = self.shared.withLock { state -> UInt64? in
            guard state.riding, state.written > state.synced, state.unsyncedCheckpoint == nil, state.grewIn <= state.ownSynced,
                state.rewrite == nil
            else {
                return nil
            }
            state.rideFailures = state.failures
            return state.written
        }
        guard let target, (try? self.file.writeBack(wait: false)) != nil else { return nil }
        return target
    }

    public func board(_ token: UInt64) -> Bool {
        let (file, first) = self.chain.withLock { (self.file, $0.fileFirst) }
        guard (try? file.writeBack(wait: true)) != nil else {
            self.shared.withLock { Self.needRewrite(&$0, file: first) }
            self.startSync()
            return false
        }
        return true
    }

    /// After a failed flush of the file that begins at entry `file`: its next own flush writes again
    /// everything since its last durable end (all of it, when none is known).
    private static func needRewrite(_ state: inout Shared, file: UInt64) {
        state.failures += 1
        guard state.rewrite?.file != file else { return }
        state.rewrite = (file, state.durable.flatMap { $0.file == file ? $0.end : nil } ?? 0)
    }

    /// Writes `file` from `from` to `end` again as the page cache holds it, so that the next flush writes it
    /// (after a failed flush its pages are clean). A zero byte there means the kernel dropped pages it could
    /// not write and read back what the disk holds: what was lost cannot be written again, and the log stops
    /// until a restart (which sets that end aside as torn: no answer waited for it).
    private static func writeAgain(_ file: PosixFile, from: Int64, to end: Int64, chain: inout Chain) throws(CaseVaultError) {
        let bytes = try file.read(count: Int(end - from), at: from)
        guard !bytes.contains(0) else {
            let reason = "the audit log lost entries a failed flush should have written; restart casevaultd"
            chain.unusable = reason
            throw CaseVaultError(.storageFailure, reason)
        }
        try file.write(bytes, at: from)
    }

    public func rode(_ token: UInt64) {
        let ready = self.shared.withLock { state -> [Waiter] in
            // A flush that failed while this one rode may have taken its error: the log's own flush decides.
            guard token > state.synced, state.failures == state.rideFailures else { return [] }
            state.synced = token
            state.rides += 1
            let ready = state.durableWaiters.filter { $0.batch <= token }.map(\.waiter)
            state.durableWaiters.removeAll { $0.batch <= token }
            return ready
        }
        for waiter in ready {
            waiter.complete(.success(token))
        }
        if self.anchorDue() || ready.isEmpty { self.startSync() }
    }

    public var ridingPath: String { self.logPath }

    // MARK: Reading

    /// The log's files and head as they stand, for verifying while the daemon serves, without holding the
    /// writer: the head first, then (briefly under the writer's lock) the files opened, so that a rotation's
    /// retention cannot take one away, and the end of the last whole batch in `log` (never before the head's
    /// checkpoint). Each file is read when the verifier reaches it; the bytes before the end no later write
    /// changes.
    public func snapshot() throws(CaseVaultError) -> (segments: [AuditSegment], head: [UInt8]?) {
        let head = try Self.readHead(self.headPath)
        let (archives, end, current) = try self.chain.withLock { chain throws(CaseVaultError) in
            var archives: [AuditSegment] = []
            for archived in try AuditFiles.list(self.directory) {
                guard archived.first != nil else { continue }
                let file = try PosixFile(path: self.directory + "/" + archived.name, flags: O_RDONLY)
                archives.append(AuditSegment(name: archived.name, first: archived.first) { () throws(CaseVaultError) in try file.readAll() })
            }
            return (archives, chain.end, self.file)
        }
        let log = AuditSegment(name: AuditFiles.current, first: nil) { () throws(CaseVaultError) in
            try current.read(count: Int(end), at: 0)
        }
        return (archives + [log], head)
    }

    /// The head file's bytes, or `nil` when there is none.
    public static func readHead(_ path: String) throws(CaseVaultError) -> [UInt8]? {
        guard DataDirectory.exists(path) else { return nil }
        return try PosixFile(path: path, flags: O_RDONLY).readAll()
    }
}

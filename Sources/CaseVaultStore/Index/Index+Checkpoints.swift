internal import CCaseVaultSQLite
internal import CaseVaultCore
internal import Dispatch
internal import GRDB
internal import Synchronization

extension Index {
    /// The index's checkpoints, run off the writer on a connection of their own. SQLite's automatic
    /// checkpoint runs inside the commit that passes its threshold, on the committing connection, which is
    /// the index's only writer: every put queued behind that commit waited for the checkpoint too (28 ms for
    /// the 8,192 frames a sweep's removals leave, beside their commit's 17 ms, in a sweep with writers
    /// putting here). Instead the writer's WAL hook only notes that one is due
    /// (`casevault_sqlite_checkpoint_when_due`), the writer asks for it after its commit (`afterWriterAccess`),
    /// and a passive checkpoint copies the WAL into the database on `queue` while commits go on: SQLite lets
    /// one checkpoint run beside the writer and the readers.
    ///
    /// A checkpoint's failed flush, write or read marks the index lost (`Loss`), recorded by the checkpoint
    /// that met it before it lets go of its connection. Linux may report a failed write-back of the WAL to
    /// that checkpoint's flush and not to the writer's next one, over frames that never reached the disk: so a
    /// commit with a flush of its own, once flushed, waits for a checkpoint in flight (`awaitIdle`) and
    /// looks at the loss again before it is answered. A commit without a flush (a batch of puts) does not
    /// wait: its rows are rebuilt from the segments' frames when the index loses them.
    final class Checkpoints: @unchecked Sendable {
        /// The writer's hook's, read and written on the writer alone.
        private let report: UnsafeMutablePointer<casevault_checkpoint_report>
        private let loss: Loss
        /// A test's, called before a checkpoint of these ends (`StoreConfiguration.checkpointObserver`).
        private let observer: (@Sendable () -> Void)?
        /// The checkpoints' connection, held while one runs (and while the writer truncates the WAL or copies
        /// what one left); nil before `start` and after `close`.
        private let connection = Mutex<DatabaseQueue?>(nil)
        /// Whether a checkpoint waits on `queue` to run, and whether the checkpoints were closed.
        private let requests = Mutex((scheduled: false, closed: false))
        private let queue = DispatchQueue(label: "casevault.index.checkpoints")
        /// The frames in the WAL when the last checkpoint of these ran, and those it copied, until the writer
        /// looks (`afterWriterAccess`).
        private let completed = Mutex<(inWAL: Int, copied: Int)?>(nil)
        private let waited = Atomic<UInt64>(0)

        init(frames: Int32, loss: Loss, observer: (@Sendable () -> Void)?) {
            self.report = .allocate(capacity: 1)
            self.report.initialize(to: casevault_checkpoint_report(frames: frames, due: 0, in_wal: 0))
            self.loss = loss
            self.observer = observer
        }

        deinit { self.report.deallocate() }

        /// Installs the hook on the writer `connection`.
        func install(on connection: OpaquePointer) {
            casevault_sqlite_checkpoint_when_due(UnsafeMutableRawPointer(connection), self.report)
        }

        /// Opens the checkpoints' connection to the index at `path`. It runs no checkpoint when it closes
        /// (`Loss`).
        func start(path: String) throws {
            var configuration = Configuration()
            configuration.busyMode = .timeout(10)
            configuration.prepareDatabase { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
                try Index.turnOffCheckpointAtClose(db)
            }
            let opened = try DatabaseQueue(path: path, configuration: configuration)
            // A connection that has read nothing has not opened the WAL, and its checkpoint copies nothing.
            try opened.inDatabase { db in try db.execute(sql: "SELECT count(*) FROM sqlite_master") }
            self.connection.withLock { $0 = opened }
        }

        /// After each access of the writer, on the writer: asks for a checkpoint if its commit left enough
        /// frames in the WAL (`report.frames`). Never waits, but in two cases, where the writer copies the
        /// frames left itself, at once, so that the next commit starts the WAL again from its beginning: when
        /// a checkpoint of these has copied all but half a threshold's worth, and when the WAL holds four
        /// thresholds' worth all the same. A checkpoint beside a writer that keeps committing never catches
        /// up with it, and SQLite starts the WAL again only once every frame in it is copied: without this the
        /// WAL grew past 200 MB in a sweep with writers putting here.
        func afterWriterAccess(_ db: Database) {
            guard self.report.pointee.due != 0 else { return }
            self.report.pointee.due = 0
            // Nothing is copied into the database once the disk refused a write (`Loss`).
            guard !self.loss.happened else { return }
            let (threshold, inWAL) = (Int(self.report.pointee.frames), Int(self.report.pointee.in_wal))
            let last = self.completed.withLock { completed in
                defer { completed = nil }
                return completed
            }
            // Only a checkpoint that copied part of the WAL, and a WAL that has not started again since (it would
            // hold fewer frames than the checkpoint saw), tell what is left; one that copied it all lets SQLite
            // start it again.
            let left = last.flatMap { $0.copied < $0.inWAL && inWAL >= $0.inWAL ? inWAL - $0.copied : nil }
            if inWAL >= 4 * threshold || left.map({ $0 <= threshold / 2 }) == true {
                // Unless a checkpoint of these runs: the next commit asks again.
                _ = self.connection.withLockIfAvailable { _ in
                    guard !self.loss.happened else { return }
                    do {
                        try db.checkpoint(.passive)
                    } catch {
                        if Loss.means(error, onWriter: true) { self.loss.record() }
                    }
                }
                return
            }
            let schedule = self.requests.withLock { requests in
                guard !requests.scheduled && !requests.closed else { return false }
                requests.scheduled = true
                return true
            }
            if schedule { self.queue.async { self.run() } }
        }

        private func run() {
            // Taken off first: a commit that passes the threshold while this one runs asks for the next.
            self.requests.withLock { $0.scheduled = false }
            self.checkpoint()
        }

        /// Runs a checkpoint now, on the caller's thread once one in flight is done, while the writer goes on:
        /// before the writer truncates the WAL (`Index.truncateWAL`), so that the truncation, which every
        /// put waits for, copies only what was committed since.
        func runNow() {
            self.queue.sync { self.checkpoint() }
        }

        private func checkpoint() {
            self.connection.withLock { connection in
                guard let connection, !self.loss.happened else { return }
                do {
                    let frames = try connection.inDatabase { db in try db.checkpoint(.passive) }
                    self.completed.withLock { $0 = (frames.walFrameCount, frames.checkpointedFrameCount) }
                    self.observer?()
                } catch {
                    self.observer?()
                    // Before the connection is let go of: a flushed commit waiting in `awaitIdle` sees it.
                    if Loss.means(error, onWriter: true) { self.loss.record() }
                }
            }
        }

        /// Waits for a checkpoint in flight, if one is; called on the writer after a flushed commit.
        func awaitIdle() {
            let started = DispatchTime.now().uptimeNanoseconds
            self.connection.withLock { _ in }
            self.waited.add(DispatchTime.now().uptimeNanoseconds - started, ordering: .relaxed)
        }

        /// Runs `body` (the writer's own checkpoint: `truncateWAL`) while no checkpoint of these runs: SQLite
        /// lets one at a time run, and refuses a second at once.
        func exclusively<T>(_ body: () throws -> T) throws -> T {
            try self.connection.withLock { _ in
                // A checkpoint that held the lock may have met the loss meanwhile.
                guard !self.loss.happened else { throw Loss.error }
                defer { self.completed.withLock { $0 = nil } }
                return try body()
            }
        }

        /// The time flushed commits have waited for a checkpoint in flight so far (`BatchPhases`).
        var waitedNanoseconds: UInt64 { self.waited.load(ordering: .relaxed) }

        /// Lets the checkpoint in flight finish, runs no other, and closes the connection (no checkpoint).
        func close() {
            self.requests.withLock { $0.closed = true }
            self.queue.sync {}
            let connection = self.connection.withLock { connection in
                defer { connection = nil }
                return connection
            }
            try? connection?.close()
        }
    }
}

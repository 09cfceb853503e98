package import CaseVaultCore

package import struct Foundation.URL

#if canImport(Glibc)
internal import Glibc
#endif

/// Where a store keeps its files and the limits it enforces.
package struct StoreConfiguration: Sendable {
    /// The data directory: index, key slots, segments of sealed content. Must be 0700 and owned by this process's user.
    package var dataDirectory: URL
    /// The root key file, outside the data directory so that a copy of the directory never carries it.
    /// Created (32 random bytes, 0600) on first open.
    package var rootKeyFile: URL
    /// Where the root key comes from: `rootKeyFile` (created on first open), or a systemd credential.
    package var keySource: KeySource
    /// The copy of the shred ledger kept outside the data directory (`ShredLedgerFile`), or `nil` for none:
    /// appended to at each shred, rewritten at open and at each backup.
    package var shredLedgerCopy: URL?
    /// The largest record content accepted, in bytes.
    package var maxContentBytes: Int
    /// The most puts one flush may carry (group commit).
    package var maxBatch: Int
    /// The size at which a segment file of sealed content is closed and the next one started.
    package var maxSegmentBytes: Int64
    /// Test-only: called as the store passes each crash point, so a test helper can kill the process there.
    package var crashPointObserver: (@Sendable (CrashPoint) -> Void)?
    /// Test-only: asked before each put batch's index commit; `true` fails that commit as a full disk would
    /// (the batch fails, the store serves on), so that a test can fail one while the next batch is flushed.
    package var failingCommit: (@Sendable () -> Bool)?
    /// Test-only: called by each checkpoint of the index's WAL that runs off the writer, once it has copied or
    /// failed and before it ends (before a failure it met is recorded as the index's loss: `Index.Checkpoints`),
    /// so that a test can hold one in flight.
    package var checkpointObserver: (@Sendable () -> Void)?
    /// How long each record type is kept (the retention sweep) and what a legal hold keeps.
    package var retention: RetentionSchedule
    /// Records a sweep disposes of per shred (one flush per protocol step, one index commit each). Puts go in
    /// between its sections once they have waited `RecordStore.shredTurn`; a shred or a hold asked for
    /// meanwhile waits for the batch. Larger batches dispose faster.
    package var sweepBatch: Int
    /// Frames in the index's WAL past which a commit asks for a checkpoint, run off the writer
    /// (`Index.Checkpoints`; SQLite's default, 1,000, would checkpoint a busy vault's index often; a test sets
    /// a few to reach a checkpoint at once).
    package var indexCheckpointFrames: Int32
    /// Records certified per section of `RecordStore.certifyFinishedOrders` (`Index.certify`'s limit; ten
    /// times as many waiting rows removed): `RecordStore.shredSection`, unless a test sets a few to spread
    /// a certification over several commits.
    package var certificationSection: Int
    /// The store's clock, milliseconds since the Unix epoch: filing, closing and shred times, and what a
    /// retention sweep judges due. The system's real-time clock unless a test injects another.
    package var clock: @Sendable () -> Int64

    package init(
        dataDirectory: URL,
        rootKeyFile: URL,
        maxContentBytes: Int = 1 << 20,
        maxBatch: Int = 256,
        maxSegmentBytes: Int64 = 64 << 20
    ) {
        self.dataDirectory = dataDirectory
        self.rootKeyFile = rootKeyFile
        self.maxContentBytes = maxContentBytes
        self.maxBatch = maxBatch
        self.maxSegmentBytes = maxSegmentBytes
        self.crashPointObserver = nil
        self.failingCommit = nil
        self.checkpointObserver = nil
        self.keySource = .file
        self.shredLedgerCopy = nil
        self.clock = Self.systemClock
        self.retention = .standard
        self.sweepBatch = Self.defaultSweepBatch
        self.indexCheckpointFrames = 8192
        self.certificationSection = RecordStore.shredSection
    }

    /// Records a sweep disposes of per batch unless configured otherwise.
    package static let defaultSweepBatch = 5000

    /// CLOCK_REALTIME in milliseconds.
    package static let systemClock: @Sendable () -> Int64 = {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }
}

/// The root key's source (docs/SECURITY.md).
package enum KeySource: Sendable, Equatable {
    /// `rootKeyFile`: 32 random bytes in a 0600 file outside the data directory, created on first open.
    case file
    /// A systemd credential: the file `name` in `directory` ($CREDENTIALS_DIRECTORY), put there by
    /// `LoadCredential=` or, bound to the host's TPM, `LoadCredentialEncrypted=`. Never created.
    case systemdCredential(name: String, directory: String?)
    /// `rootKeyFile` holds the root key wrapped under a passphrase (Argon2id): the store is opened with the
    /// key an operator's unseal recovers (`VaultKeeper`), never from the file alone.
    case passphrase
}

/// The points between durable steps where a crash is most interesting. Tests kill a writer at each.
package enum CrashPoint: String, Sendable, CaseIterable {
    case putAfterFrameWrite = "put.after-frame-write"
    case putAfterFlush = "put.after-flush"
    /// In a put batch's second stage, once the batches before it have committed and before its own commit:
    /// the next batch may be writing and flushing meanwhile.
    case putBeforeCommit = "put.before-commit"
    case putAfterCommit = "put.after-commit"
    case shredAfterMark = "shred.after-mark"
    /// After each section of a step that runs in sections (slots, ciphertext, removal), before the step's
    /// flush or commit.
    case shredAfterSection = "shred.after-section"
    case shredAfterSlotOverwrite = "shred.after-slot-overwrite"
    case shredAfterCiphertextOverwrite = "shred.after-ciphertext-overwrite"
    case shredAfterIndexRemoval = "shred.after-index-removal"
    case sweepAfterBatch = "sweep.after-batch"
    /// After each commit of destruction certificates, or of certified records' removal from the index.
    case certifyAfterCommit = "certify.after-commit"
    case rotateAfterEpoch = "rotate.after-epoch"
    case rotateAfterBatch = "rotate.after-batch"
    case rotateAfterSlotWrite = "rotate.after-slot-write"
}

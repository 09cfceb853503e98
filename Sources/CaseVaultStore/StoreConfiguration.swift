public import struct Foundation.URL

/// Where a store keeps its files and the limits it enforces.
public struct StoreConfiguration: Sendable {
    /// The data directory: index, key slots, segments of sealed content. Must be 0700 and owned by this process's user.
    public var dataDirectory: URL
    /// The root key file, outside the data directory so that a copy of the directory never carries it.
    /// Created (32 random bytes, 0600) on first open.
    public var rootKeyFile: URL
    /// The largest record content accepted, in bytes.
    public var maxContentBytes: Int
    /// The most puts one flush may carry (group commit).
    public var maxBatch: Int
    /// The size at which a segment file of sealed content is closed and the next one started.
    public var maxSegmentBytes: Int64
    /// Test-only: called as the store passes each crash point, so a test helper can kill the process there.
    public var crashPointObserver: (@Sendable (CrashPoint) -> Void)?

    public init(
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
    }
}

/// The points between durable steps where a crash is most interesting. Tests kill a writer at each.
public enum CrashPoint: String, Sendable, CaseIterable {
    case putAfterBlobWrite = "put.after-blob-write"
    case putAfterSlotFlush = "put.after-slot-flush"
    case putAfterCommit = "put.after-commit"
    case shredAfterMark = "shred.after-mark"
    case shredAfterSlotOverwrite = "shred.after-slot-overwrite"
    case shredAfterCiphertextOverwrite = "shred.after-ciphertext-overwrite"
    case shredAfterIndexRemoval = "shred.after-index-removal"
}

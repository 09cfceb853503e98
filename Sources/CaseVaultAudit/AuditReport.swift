public import CaseVaultCore
internal import CaseVaultFiles

#if canImport(Glibc)
internal import Glibc
#endif

/// What `audit verify` found.
public struct AuditReport: Codable, Sendable, Equatable {
    public struct Problem: Codable, Sendable, Equatable {
        /// The number the first bad entry has, or should have had (the one after the last good entry).
        public var seq: UInt64
        /// The file of the log it is in (`log`, or a rotated `log.<first entry>`), when it is in one.
        public var file: String?
        /// Its line in that file (1-based) and the byte where that line starts.
        public var line: Int
        public var offset: Int
        public var reason: String

        public init(seq: UInt64, file: String? = nil, line: Int, offset: Int, reason: String) {
            self.seq = seq
            self.file = file
            self.line = line
            self.offset = offset
            self.reason = reason
        }
    }

    public var ok: Bool
    /// The number of the last entry that checks out.
    public var entries: UInt64
    /// The first entry the log keeps (1 unless the retention removed older files), and how many files
    /// were read.
    public var firstEntry: UInt64
    public var files: Int
    public var checkpoints: Int
    /// The last signed checkpoint, and the entries after it that no signature covers yet.
    public var lastCheckpoint: UInt64?
    public var unsignedEntries: UInt64
    /// The key the log's checkpoints are signed with, hex.
    public var publicKey: String?
    /// Whether every entry's MAC was checked (with the root key's chain subkey); without the root key only
    /// the hashes and signatures are.
    public var macsChecked: Bool
    /// Entries written while the vault was sealed, without a MAC.
    public var unkeyedEntries: UInt64
    /// The entry the index's anchor names, when it was compared.
    public var anchor: UInt64?
    /// Key entries that record a break an operator accepted (`casevaultd --accept-audit-break`).
    public var breaks: [UInt64]
    public var firstBad: Problem?

    enum CodingKeys: String, CodingKey {
        case ok, entries, files, checkpoints, anchor, breaks
        case firstEntry = "first_entry"
        case lastCheckpoint = "last_checkpoint"
        case unsignedEntries = "unsigned_entries"
        case publicKey = "public_key"
        case macsChecked = "macs_checked"
        case unkeyedEntries = "unkeyed_entries"
        case firstBad = "first_bad"
    }
}

/// One file of the log for `AuditVerifier`, read when the walk reaches it: only one file is in memory
/// at a time.
public struct AuditSegment: Sendable {
    public var name: String
    /// A rotated file's first entry, from its name; `nil` for `log`.
    public var first: UInt64?
    public var load: @Sendable () throws(CaseVaultError) -> [UInt8]

    public init(name: String, first: UInt64?, load: @escaping @Sendable () throws(CaseVaultError) -> [UInt8]) {
        self.name = name
        self.first = first
        self.load = load
    }

    /// The log's files in `directory`, each read when its turn comes.
    public static func files(in directory: String) throws(CaseVaultError) -> [AuditSegment] {
        try AuditFiles.list(directory).map { file in
            let path = directory + "/" + file.name
            return AuditSegment(name: file.name, first: file.first) { () throws(CaseVaultError) in
                try PosixFile(path: path, flags: O_RDONLY).readAll()
            }
        }
    }
}

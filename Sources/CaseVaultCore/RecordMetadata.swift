/// What the index knows of a record: ids, type, times and sizes. Never content.
public struct RecordMetadata: Sendable, Equatable {
    public var id: RecordID
    public var caseID: CaseID
    public var type: RecordType
    /// Milliseconds since 1970-01-01T00:00:00Z.
    public var createdAt: Int64
    /// The Unix user who filed it, when known.
    public var author: String?
    /// The record this one amends: records are immutable, an amendment is a new record.
    public var supersedes: RecordID?
    /// Size of the sealed blob in bytes.
    public var sealedSize: Int

    public init(
        id: RecordID,
        caseID: CaseID,
        type: RecordType,
        createdAt: Int64,
        author: String?,
        supersedes: RecordID?,
        sealedSize: Int
    ) {
        self.id = id
        self.caseID = caseID
        self.type = type
        self.createdAt = createdAt
        self.author = author
        self.supersedes = supersedes
        self.sealedSize = sealedSize
    }
}

/// A record opened by the barrier: its metadata and its plaintext content (JSON).
public struct Record: Sendable {
    public var metadata: RecordMetadata
    public var content: [UInt8]

    public init(metadata: RecordMetadata, content: [UInt8]) {
        self.metadata = metadata
        self.content = content
    }
}

/// A record to file.
public struct NewRecord: Sendable {
    public var caseID: CaseID
    public var type: RecordType
    /// The content as JSON bytes.
    public var content: [UInt8]
    /// The content already parsed, by a caller that parsed exactly `content`'s bytes (the server, which
    /// parsed the request body around them: `JSONValue.uniqueRawMember`); the validator then checks it
    /// instead of parsing them again. `nil`: the validator parses `content`. Within the package only: a
    /// parse that is not of `content` would let unchecked content through.
    package var parsed: JSONValue?
    public var author: String?
    public var supersedes: RecordID?

    public init(caseID: CaseID, type: RecordType, content: [UInt8], author: String? = nil, supersedes: RecordID? = nil)
    {
        self.caseID = caseID
        self.type = type
        self.content = content
        self.author = author
        self.supersedes = supersedes
    }
}

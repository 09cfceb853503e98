/// The socket, the limits the server enforces, and where disclosures are routed.
public struct ServerConfiguration: Sendable, Equatable {
    /// The Unix socket. Its directory is created 0750 if missing; the socket is made 0660.
    public var socketPath: String
    /// The largest JSON request body accepted, in bytes.
    public var maxBodyBytes: Int
    /// The largest attachment accepted, in bytes.
    public var maxAttachmentBytes: Int64
    /// How deep arrays and objects may nest in a JSON body.
    public var maxJSONDepth: Int
    /// The largest request head (request line and header fields), in bytes.
    public var maxHeaderBytes: Int
    /// Seconds a connection may stay silent (waiting for a request, or in the middle of one) before it is closed.
    public var readTimeoutSeconds: Int
    /// How many connections are served at once; the next one gets a 503 `overloaded` problem and is closed.
    public var maxConnections: Int
    /// How many of them one uid may hold, so that one user cannot take every place.
    public var maxConnectionsPerUser: Int
    /// Threads for the store's blocking work (file I/O and flushes), so that the event loops never block
    /// and concurrent writers can share one flush.
    public var blockingThreads: Int
    /// The blocking pool's threads unless told otherwise (the configuration file does not set it).
    public static let defaultBlockingThreads = 32
    /// Disclosure category → the office it is routed to (the `office:NAME` role that may read it).
    public var offices: [String: String]
    /// The clients' group: the socket's directory and the socket get this group, so that its members (and
    /// only they, besides the daemon's user) can connect. `nil` keeps the daemon's own group.
    public var socketGroup: UInt32?
    /// Statistics: a cell counting fewer than this many cases is suppressed (docs/API.md).
    public var statisticsK: Int
    /// The backup key file (outside the data directory), and how many days a backup key is kept before
    /// it is destroyed, making its backup unreadable.
    public var backupKeyFile: String?
    public var backupRetentionDays: Int = 35
    /// How long a read's audit entry may wait for its flush after the answer leaves (`[audit]
    /// read_flush_ms`); `nil` when reads are durable (`[audit] durable_reads`): the answer waits for it, as
    /// every write's does.
    public var readAuditWindow: Duration?

    public init(
        socketPath: String,
        maxBodyBytes: Int = 1 << 20,
        maxAttachmentBytes: Int64 = 1 << 31,
        maxJSONDepth: Int = 32,
        maxHeaderBytes: Int = 16 << 10,
        readTimeoutSeconds: Int = 30,
        maxConnections: Int = 256,
        maxConnectionsPerUser: Int? = nil,
        blockingThreads: Int = ServerConfiguration.defaultBlockingThreads,
        offices: [String: String] = [:],
        socketGroup: UInt32? = nil,
        statisticsK: Int = 11,
        backupKeyFile: String? = nil,
        backupRetentionDays: Int = 35,
        readAuditWindow: Duration? = .milliseconds(ServerConfiguration.defaultReadFlushMilliseconds)
    ) {
        self.readAuditWindow = readAuditWindow
        self.backupKeyFile = backupKeyFile
        self.backupRetentionDays = backupRetentionDays
        self.socketPath = socketPath
        self.maxBodyBytes = maxBodyBytes
        self.maxAttachmentBytes = maxAttachmentBytes
        self.maxJSONDepth = maxJSONDepth
        self.maxHeaderBytes = maxHeaderBytes
        self.readTimeoutSeconds = readTimeoutSeconds
        self.maxConnections = maxConnections
        self.maxConnectionsPerUser = maxConnectionsPerUser ?? Self.defaultConnectionsPerUser(maxConnections)
        self.blockingThreads = blockingThreads
        self.offices = offices
        self.socketGroup = socketGroup
        self.statisticsK = statisticsK
    }

    /// A read's audit entry is on disk at most this long after its answer leaves, unless reads are durable.
    public static let defaultReadFlushMilliseconds = 5

    /// Half of the places (at least one): whatever one user holds, the other half stays for everyone else.
    public static func defaultConnectionsPerUser(_ maxConnections: Int) -> Int {
        max(1, maxConnections / 2)
    }

    /// The least a request's head and body must average, once `readTimeoutSeconds` have passed since it
    /// began: a client that trickles its request (a byte every few seconds) is cut off with 408.
    public static let minimumBytesPerSecond = 16 << 10
}

/// The socket and the limits the server enforces.
public struct ServerConfiguration: Sendable, Equatable {
    /// The Unix socket. Its directory is created 0750 if missing; the socket is made 0660.
    public var socketPath: String
    /// The largest request body accepted, in bytes.
    public var maxBodyBytes: Int
    /// The clients' group: the socket's directory and the socket get this group, so that its members (and
    /// only they, besides the daemon's user) can connect. `nil` keeps the daemon's own group.
    public var socketGroup: UInt32?

    public init(socketPath: String, maxBodyBytes: Int = 1 << 20, socketGroup: UInt32? = nil) {
        self.socketPath = socketPath
        self.maxBodyBytes = maxBodyBytes
        self.socketGroup = socketGroup
    }
}

/// The socket and the limits the server enforces.
public struct ServerConfiguration: Sendable, Equatable {
    /// The Unix socket. Its directory is created 0750 if missing; the socket is made 0660.
    public var socketPath: String
    /// The largest request body accepted, in bytes.
    public var maxBodyBytes: Int

    public init(socketPath: String, maxBodyBytes: Int = 1 << 20) {
        self.socketPath = socketPath
        self.maxBodyBytes = maxBodyBytes
    }
}

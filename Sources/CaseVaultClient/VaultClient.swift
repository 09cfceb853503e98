internal import AsyncHTTPClient
public import Foundation
public import NIOCore
internal import NIOFoundationCompat
public import NIOHTTP1

#if canImport(Glibc)
internal import Glibc
#endif

/// A client of `casevaultd` over its Unix socket, for `casevaultctl` and any other Swift program: each
/// request through AsyncHTTPClient's `http+unix` URLs, and requests that carry a secret on a connection of
/// their own whose peer the kernel has named (`requestSecret`).
///
/// The caller is whoever runs the program: the daemon asks the kernel who holds this end of the socket
/// and grants the roles its configuration gives that user. Nothing the client sends names the caller.
public struct VaultClient: Sendable {
    /// The daemon's socket (`[server] socket` of its configuration).
    public let socketPath: String

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// The daemon's answer, whatever its status: a problem (`application/problem+json`) when it is not 2xx.
    public struct Reply: Sendable {
        public var status: Int
        public var body: Data

        public init(status: Int, body: Data) {
            self.status = status
            self.body = body
        }

        /// The body as a JSON object; empty when it is not one.
        public var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: self.body)) as? [String: Any] ?? [:]
        }

        /// The problem's stable code (`record-not-found`, `forbidden`, …), for a problem reply.
        public var problemCode: String? {
            (self.json["type"] as? String).map { $0.replacingOccurrences(of: "urn:casevault:problem:", with: "") }
        }

        /// The problem's detail: what to change so that the request can succeed. Never content.
        public var problemDetail: String? {
            self.json["detail"] as? String
        }
    }

    /// Sends `method path` and hands each piece of the body to `sink` as it arrives, so that a body of any
    /// size passes in flat memory; returns the status, and the body only when it is not 200 (a problem).
    /// Rethrows what `sink` throws; a failed transfer is `VaultClientError.transfer`.
    public func stream(_ method: HTTPMethod, _ path: String, into sink: (ByteBuffer) throws -> Void) async throws
        -> Reply
    {
        let url = try self.url(path)
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        let response: HTTPClientResponse
        do {
            response = try await daemonHTTPClient.execute(request, timeout: .seconds(24 * 3600))
        } catch {
            throw VaultClientError.transfer("the transfer failed: \(error)")
        }
        guard response.status == .ok else {
            do {
                let body = try await response.body.collect(upTo: 1 << 20)
                return Reply(status: Int(response.status.code), body: Data(buffer: body))
            } catch {
                throw VaultClientError.transfer("the transfer failed: \(error)")
            }
        }
        var pieces = response.body.makeAsyncIterator()
        while true {
            let piece: ByteBuffer?
            do {
                piece = try await pieces.next()
            } catch {
                throw VaultClientError.transfer("the transfer failed: \(error)")
            }
            guard let piece else { break }
            try sink(piece)
        }
        return Reply(status: 200, body: Data())
    }

    /// Sends the `length` bytes of the file open at `descriptor` as the body of `method path`, with
    /// `mediaType` as its Content-Type, read piece by piece only as fast as the socket takes them, so that
    /// a body of any size passes in flat memory; `progress` hears how many bytes have gone so far. Returns
    /// the reply whatever its status. A file that cannot be read midway, or shrinks or grows while it is
    /// sent, fails the transfer before its last byte goes (the daemon then receives less than
    /// Content-Length and stores nothing).
    /// With `prefix`, those bytes go first, before the file's, and `headers` are sent too.
    public func upload(
        _ method: HTTPMethod, _ path: String, file descriptor: Int32, length: Int64, mediaType: String,
        prefix: [UInt8] = [], headers: [(String, String)] = [], progress: @escaping @Sendable (Int64) -> Void = { _ in }
    ) async throws(VaultClientError) -> Reply {
        let url = try self.url(path)
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        request.headers.add(name: "Content-Type", value: mediaType)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let pieces = FilePieces(descriptor: descriptor, length: length, progress: progress)
        if prefix.isEmpty {
            request.body = .stream(pieces, length: .known(length))
        } else {
            request.body = .stream(
                PrefixedPieces(prefix: ByteBuffer(bytes: prefix), rest: pieces),
                length: .known(Int64(prefix.count) + length))
        }
        do {
            let response = try await daemonHTTPClient.execute(request, timeout: .seconds(24 * 3600))
            let body = try await response.body.collect(upTo: 1 << 20)
            return Reply(status: Int(response.status.code), body: Data(buffer: body))
        } catch let error as VaultClientError {
            throw error
        } catch {
            throw .transfer("the transfer failed: \(error)")
        }
    }

    /// The `http+unix` URL of `path`. AsyncHTTPClient retries a failed connect until the request's
    /// deadline; a missing or forbidden socket is told at once instead.
    private func url(_ path: String) throws(VaultClientError) -> URL {
        var info = stat()
        guard stat(self.socketPath, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else {
            throw .unreachable("no casevaultd socket at \(self.socketPath): is the daemon running?")
        }
        guard access(self.socketPath, W_OK) == 0 else {
            throw .unreachable("this user may not open \(self.socketPath); it must be in the socket's group")
        }
        guard let url = URL(httpURLWithSocketPath: self.socketPath, uri: path) else {
            throw .unreachable("the socket path \(self.socketPath) cannot be used in a URL")
        }
        return url
    }

    public func get(_ path: String) async throws(VaultClientError) -> Reply {
        try await self.request(.GET, path)
    }

    /// Sends `method path`, with `json` as the body when given; the reply whatever its status.
    public func request(_ method: HTTPMethod, _ path: String, json: [String: Any]? = nil)
        async throws(VaultClientError) -> Reply
    {
        let url = try self.url(path)
        do {
            var request = HTTPClientRequest(url: url.absoluteString)
            request.method = method
            if let json {
                let body = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: body))
            }
            // A sweep of a large vault runs for a while: the deadline is generous.
            let response = try await daemonHTTPClient.execute(request, timeout: .seconds(3600))
            let body = try await response.body.collect(upTo: 16 << 20)
            return Reply(status: Int(response.status.code), body: Data(buffer: body))
        } catch {
            throw .unreachable(
                "cannot reach casevaultd on \(self.socketPath): is it running, and may this user open the socket? (\(error))"
            )
        }
    }
}

/// The process's one HTTP client of the daemon: AsyncHTTPClient's shared settings and pool, except that a
/// connection the socket refuses fails every request waiting for one at once. On a local socket a refused
/// connection means that no daemon listens: the shared client's retries with backoff held the requests queued
/// behind its 8 connections for its whole connect deadline (90 s) after a daemon died.
private let daemonHTTPClient: HTTPClient = {
    var configuration = HTTPClient.Configuration.singletonConfiguration
    configuration.connectionPool.retryConnectionEstablishment = false
    // Like `HTTPClient.shared`, it lives as long as the process and is never shut down.
    return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
}()

/// A file's bytes from its start to `length`, in pieces of 256 KiB read as they are asked for.
struct FilePieces: AsyncSequence, Sendable {
    typealias Element = ByteBuffer

    static let pieceSize = 256 << 10

    let descriptor: Int32
    let length: Int64
    let progress: @Sendable (Int64) -> Void

    struct AsyncIterator: AsyncIteratorProtocol {
        let pieces: FilePieces
        var offset: Int64 = 0

        mutating func next() async throws -> ByteBuffer? {
            guard self.offset < self.pieces.length else { return nil }
            let count = Int(Swift.min(Int64(FilePieces.pieceSize), self.pieces.length - self.offset))
            // The last piece asks for one byte more: a file that grew while it was sent fails the transfer
            // before its last piece goes, so the daemon never receives it whole and stores nothing.
            let last = self.offset + Int64(count) == self.pieces.length
            let wanted = last ? count + 1 : count
            var failure: Int32 = 0
            var buffer = ByteBufferAllocator().buffer(capacity: wanted)
            var read = 0
            while read < count {
                let got = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted - read) { raw in
                    var got = -1
                    repeat {
                        got = pread(
                            self.pieces.descriptor, raw.baseAddress, wanted - read, off_t(self.offset) + off_t(read))
                    } while got < 0 && errno == EINTR
                    if got < 0 { failure = errno }
                    return Swift.max(0, got)
                }
                guard got > 0 else { break }
                read += got
            }
            guard read >= count else {
                throw VaultClientError.transfer(
                    failure == 0
                        ? "the file ended after \(self.offset + Int64(read)) of its \(self.pieces.length) bytes: was it changed while it was sent?"
                        : "the file could not be read: \(String(cString: strerror(failure)))")
            }
            guard read == count else {
                throw VaultClientError.transfer(
                    "the file grew past its \(self.pieces.length) bytes while it was sent: send it again once it is complete"
                )
            }
            self.offset += Int64(count)
            self.pieces.progress(self.offset)
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(pieces: self) }
}

/// Why a request got no answer. An answer that is a problem is not an error here: it is a `Reply` whose
/// status says so.
public enum VaultClientError: Error, Sendable {
    /// No answer came. The message says which: the socket could not be reached, or its holder could not be
    /// trusted with a secret (then nothing was sent); or the daemon did not answer what was sent.
    case unreachable(String)
    /// A transfer began and broke off.
    case transfer(String)

    /// What happened and what to check, for a person to read.
    public var message: String {
        switch self {
        case .unreachable(let text), .transfer(let text): return text
        }
    }
}

/// `prefix`, then every piece of `rest`.
struct PrefixedPieces: AsyncSequence, Sendable {
    typealias Element = ByteBuffer

    let prefix: ByteBuffer
    let rest: FilePieces

    struct AsyncIterator: AsyncIteratorProtocol {
        var prefix: ByteBuffer?
        var rest: FilePieces.AsyncIterator

        mutating func next() async throws -> ByteBuffer? {
            if let prefix = self.prefix {
                self.prefix = nil
                return prefix
            }
            return try await self.rest.next()
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(prefix: self.prefix, rest: self.rest.makeAsyncIterator())
    }
}

internal import CCaseVaultShims
public import CaseVaultCrypto
internal import CaseVaultWire
internal import Foundation
internal import NIOCore
public import NIOHTTP1
internal import NIOPosix

#if canImport(Glibc)
internal import Glibc
#endif

extension VaultClient {
    /// Sends a request that carries a secret (a passphrase, a recovery share) only to the daemon: on a
    /// connection of its own, after the kernel has said who holds the other end (SO_PEERCRED), and on that
    /// same connection, so that nothing can change hands between the check and the send.
    ///
    /// The other end must be root (systemd binds the socket of a socket-activated daemon, and the kernel
    /// reports the process that listened) or the owner of the socket's directory (the service user, who
    /// made it). A directory that its group or others may write is refused: anyone could have put a socket
    /// there. AsyncHTTPClient cannot be asked who its connection's peer is, so this one request is sent with
    /// NIO's HTTP/1.1 codec directly.
    ///
    /// The body (`Secret.body`, in locked memory) is copied into a NIO buffer that is in locked memory too
    /// (`ByteBufferAllocator.locked`), zeroed when NIO frees it.
    public func requestSecret(_ method: HTTPMethod, _ path: String, body: SecureBytes) async throws(VaultClientError)
        -> Reply
    {
        let trusted = try self.trustedServerUIDs()
        let channel: NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(unixDomainSocketPath: self.socketPath) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                            wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw VaultClientError.unreachable(
                "cannot reach casevaultd on \(self.socketPath): is it running? (\(error))")
        }
        let server: UInt32
        do {
            guard let provider = channel.channel as? any SocketOptionProvider else { throw PeerUnknown() }
            let credentials: casevault_ucred = try await provider.unsafeGetSocketOption(
                level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(CASEVAULT_SO_PEERCRED)
            ).get()
            server = credentials.uid
        } catch {
            try? await channel.channel.close()
            throw VaultClientError.unreachable(
                "cannot tell who holds the other end of \(self.socketPath), so the secret was not sent")
        }
        guard trusted.contains(server) else {
            try? await channel.channel.close()
            throw VaultClientError.unreachable(
                "the socket \(self.socketPath) is held by uid \(server), not by root or the service user "
                    + "(uid \(trusted.filter { $0 != 0 }.first ?? 0), the owner of its directory), so the secret was not sent"
            )
        }
        var payload = ByteBufferAllocator.locked.buffer(capacity: body.count)
        body.withUnsafeBytes { _ = payload.writeBytes($0) }
        do {
            return try await channel.executeThenClose { inbound, outbound in
                var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
                head.headers.add(name: "Host", value: "casevault")
                head.headers.add(name: "Content-Type", value: "application/json")
                head.headers.add(name: "Content-Length", value: "\(payload.readableBytes)")
                head.headers.add(name: "Connection", value: "close")
                // In one write: the daemon may answer and close as soon as the body's last byte is in,
                // before a separate write of the (empty) end could reach the channel. A write refused that
                // way still leaves the answer to read.
                try? await outbound.write(contentsOf: [.head(head), .body(.byteBuffer(payload)), .end(nil)])
                var status = 0
                var received = Data()
                for try await part in inbound {
                    switch part {
                    case .head(let response):
                        status = Int(response.status.code)
                    case .body(let piece):
                        guard received.count + piece.readableBytes <= 16 << 20 else { throw PeerUnknown() }
                        received.append(contentsOf: piece.readableBytesView)
                    case .end:
                        return Reply(status: status, body: received)
                    }
                }
                throw PeerUnknown()
            }
        } catch {
            throw VaultClientError.unreachable("casevaultd on \(self.socketPath) did not answer (\(error))")
        }
    }

    /// Who may hold the other end of the socket: root, and the owner of the socket's directory when no one
    /// else may write that directory, nor any directory above it (but for sticky ones such as /tmp, where
    /// nobody may replace another's entry), and no symbolic link leads there.
    func trustedServerUIDs() throws(VaultClientError) -> Set<UInt32> {
        let absolute =
            self.socketPath.hasPrefix("/")
            ? self.socketPath : FileManager.default.currentDirectoryPath + "/" + self.socketPath
        let directory = (absolute as NSString).deletingLastPathComponent
        var info = stat()
        guard lstat(directory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw VaultClientError.unreachable(
                "no directory for the socket \(self.socketPath) (or a symbolic link in its place)")
        }
        guard info.st_mode & (S_IWGRP | S_IWOTH) == 0 else {
            throw VaultClientError.unreachable(
                "the socket's directory \(directory) may be written by its group or others, so anyone could have put "
                    + "a socket there; the secret was not sent (make the directory writable by its owner only)"
            )
        }
        let owner = info.st_uid
        var above = (directory as NSString).deletingLastPathComponent
        while true {
            var parent = stat()
            guard lstat(above, &parent) == 0, parent.st_mode & S_IFMT == S_IFDIR else {
                throw VaultClientError.unreachable(
                    "\(above), above the socket, is not a directory (or is a symbolic link); the secret was not sent")
            }
            if parent.st_mode & (S_IWGRP | S_IWOTH) != 0, parent.st_mode & S_ISVTX == 0 {
                throw VaultClientError.unreachable(
                    "\(above), above the socket's directory, may be written by its group or others, so anyone could have put "
                        + "another directory in its place; the secret was not sent"
                )
            }
            if above == "/" || above.isEmpty { break }
            above = (above as NSString).deletingLastPathComponent
        }
        return [0, owner]
    }
}

private struct PeerUnknown: Error {}

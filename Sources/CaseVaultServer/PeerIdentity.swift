internal import CCaseVaultShims
internal import NIOCore

#if canImport(Glibc)
internal import Glibc
#endif

/// Who is on the other end of a connection, as the kernel says: the peer's uid, gid and supplementary
/// groups, read with SO_PEERCRED and SO_PEERGROUPS from the connected socket. Never a PID, never anything
/// the client sends.
public struct PeerIdentity: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]

    public init(uid: UInt32, gid: UInt32, groups: [UInt32]) {
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    /// Reads the peer of `channel`. Throws when the channel is not a socket or the kernel refuses, so a
    /// caller whose identity is unknown is never served.
    static func read(from channel: any Channel) async throws -> PeerIdentity {
        guard let provider = channel as? any SocketOptionProvider else {
            throw PeerIdentityUnavailable()
        }
        let credentials: casevault_ucred = try await provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(CASEVAULT_SO_PEERCRED)
        ).get()
        let buffer: casevault_peer_groups = try await provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(CASEVAULT_SO_PEERGROUPS)
        ).get()
        let raw = withUnsafeBytes(of: buffer.groups) { Array($0.bindMemory(to: UInt32.self)) }
        return PeerIdentity(uid: credentials.uid, gid: credentials.gid, groups: Self.groups(fromZeroPadded: raw))
    }

    /// NIO hands back the option in a zeroed buffer without its length. The kernel sorts a process's
    /// groups ascending, so the groups are the longest strictly ascending prefix; a lone leading 0 counts
    /// as group 0 only when something follows it.
    static func groups(fromZeroPadded raw: [UInt32]) -> [UInt32] {
        var result: [UInt32] = []
        for group in raw {
            if let last = result.last, group <= last { break }
            result.append(group)
        }
        if result == [0] { return [] }
        return result
    }
}

struct PeerIdentityUnavailable: Error {}

internal import CCaseVaultShims
internal import CaseVaultConfiguration
internal import CaseVaultCore
internal import NIOCore
internal import Synchronization

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
        return PeerIdentity(credentials: credentials, groups: buffer)
    }

    init(credentials: casevault_ucred, groups buffer: casevault_peer_groups) {
        let raw = withUnsafeBytes(of: buffer.groups) { Array($0.bindMemory(to: UInt32.self)) }
        self.init(uid: credentials.uid, gid: credentials.gid, groups: Self.groups(fromZeroPadded: raw))
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

/// The identity of each open connection, read once when the connection is set up (the kernel's
/// SO_PEERCRED is the peer's credentials at connect time, so reading it again per request gives the
/// same answer) and dropped when the connection closes. Saves two trips to the event loop per request.
///
/// Entries hold their channel weakly and are taken only for that very channel: an entry that outlived its
/// channel (a read that completed after `forget`) can never be inherited by a later channel at the same
/// address.
final class ConnectionIdentities: Sendable {
    private let identities = Mutex<[ObjectIdentifier: (channel: WeakChannel, identity: PeerIdentity)]>([:])
    /// Connections whose request the connection handler answered 408 while a route was reading it, held
    /// weakly: a mark of a channel that is gone can never be taken by another at the same address.
    private let timedOutChannels = Mutex<[ObjectIdentifier: WeakChannel]>([:])

    struct WeakChannel {
        weak var channel: (any Channel)?
    }

    func markTimedOut(_ channel: any Channel) {
        self.timedOutChannels.withLock { marks in
            marks = marks.filter { $0.value.channel != nil }
            marks[ObjectIdentifier(channel)] = WeakChannel(channel: channel)
        }
    }

    /// Whether the connection's request was answered 408 mid-route; the mark is taken (the route's result
    /// is the one entry that records it).
    func takeTimedOut(_ channel: any Channel) -> Bool {
        self.timedOutChannels.withLock { marks in
            let key = ObjectIdentifier(channel)
            guard let mark = marks[key], mark.channel === channel else { return false }
            marks[key] = nil
            return true
        }
    }

    @discardableResult
    func remember(_ channel: any Channel) -> EventLoopFuture<PeerIdentity>? {
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        let key = ObjectIdentifier(channel)
        let credentials: EventLoopFuture<casevault_ucred> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(CASEVAULT_SO_PEERCRED)
        )
        let groups: EventLoopFuture<casevault_peer_groups> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(CASEVAULT_SO_PEERGROUPS)
        )
        let identity = credentials.and(groups).map { credentials, buffer in
            PeerIdentity(credentials: credentials, groups: buffer)
        }
        identity.whenSuccess { identity in
            // Entries of channels that are gone (a read that completed after `forget`) are dropped here.
            self.identities.withLock { identities in
                identities = identities.filter { $0.value.channel.channel != nil }
                identities[key] = (WeakChannel(channel: channel), identity)
            }
        }
        return identity
    }

    func forget(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        _ = self.identities.withLock { $0.removeValue(forKey: key) }
    }

    /// The connection's peer: from the table, or read now when the table does not have it yet.
    func identity(of channel: any Channel) async throws -> PeerIdentity {
        let known = self.identities.withLock { identities -> PeerIdentity? in
            guard let entry = identities[ObjectIdentifier(channel)], entry.channel.channel === channel else {
                return nil
            }
            return entry.identity
        }
        if let known { return known }
        return try await PeerIdentity.read(from: channel)
    }
}

extension RoleMap {
    /// The roles of the peer the kernel named.
    func roles(for peer: PeerIdentity) -> Set<Role> {
        self.roles(uid: peer.uid, gid: peer.gid, groups: peer.groups)
    }
}

public import CaseVaultCore

/// Which roles a peer holds, from the configuration's mapping of uids and gids (names are resolved to ids
/// when the configuration loads). Root is an operator and nothing else unless the configuration maps
/// uid 0 itself; root's groups never add roles.
public struct RoleMap: Sendable, Equatable {
    public var byUID: [UInt32: Set<Role>]
    public var byGID: [UInt32: Set<Role>]

    public init(byUID: [UInt32: Set<Role>] = [:], byGID: [UInt32: Set<Role>] = [:]) {
        self.byUID = byUID
        self.byGID = byGID
    }

    /// The roles of a peer the kernel names by `uid`, primary `gid` and supplementary `groups`.
    public func roles(uid: UInt32, gid: UInt32, groups: [UInt32]) -> Set<Role> {
        if uid == 0 {
            return self.byUID[0] ?? [.operator]
        }
        var roles = self.byUID[uid] ?? []
        for gid in Set([gid] + groups) {
            roles.formUnion(self.byGID[gid] ?? [])
        }
        return roles
    }
}

internal import CaseVaultCore
internal import CaseVaultServer

#if canImport(Glibc)
internal import Glibc
#endif

/// The `[roles]` table: each role names the principals that hold it. Principals are `uid:N`, `gid:N`,
/// `user:NAME`, `group:NAME` (resolved through the system's user database when the configuration loads),
/// or `self`, the user the daemon runs as (the embedded default maps it so a newcomer can try every route).
enum Principals {
    static func roleMap(_ table: [String: [String]]) throws(CaseVaultError) -> RoleMap {
        var map = RoleMap()
        for (roleName, principals) in table.sorted(by: { $0.key < $1.key }) {
            guard let role = Role(name: roleName) else {
                throw CaseVaultError(
                    .invalidConfiguration,
                    "roles.\(roleName) is not a role; the roles are director, mediator, intake, submitter, "
                        + "statistician, operator and office:NAME",
                    field: "roles.\(roleName)"
                )
            }
            for principal in principals {
                switch try Self.resolve(principal, role: roleName) {
                case .uid(let uid): map.byUID[uid, default: []].insert(role)
                case .gid(let gid): map.byGID[gid, default: []].insert(role)
                }
            }
        }
        return map
    }

    enum Resolved: Equatable {
        case uid(UInt32)
        case gid(UInt32)
    }

    static func resolve(_ principal: String, role: String) throws(CaseVaultError) -> Resolved {
        let place = role.hasPrefix("server.") ? role : "roles.\(role)"
        let invalid = CaseVaultError(
            .invalidConfiguration,
            "\(place) has a principal that is not self, uid:N, gid:N, user:NAME or group:NAME",
            field: place
        )
        if principal == "self" {
            return .uid(geteuid())
        }
        let parts = principal.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[1].isEmpty else { throw invalid }
        switch parts[0] {
        case "uid":
            guard let uid = UInt32(parts[1]) else { throw invalid }
            return .uid(uid)
        case "gid":
            guard let gid = UInt32(parts[1]) else { throw invalid }
            return .gid(gid)
        case "user":
            guard let entry = getpwnam(parts[1]) else { throw Self.unknown("user", parts[1], place: place) }
            return .uid(entry.pointee.pw_uid)
        case "group":
            guard let entry = getgrnam(parts[1]) else { throw Self.unknown("group", parts[1], place: place) }
            return .gid(entry.pointee.gr_gid)
        default:
            throw invalid
        }
    }

    /// A user or group name the host does not have: which, where, and how to make it (the host
    /// configuration's groups come from the sysusers.d entry). Names of principals are configuration,
    /// not case content.
    static func unknown(_ kind: String, _ name: String, place: String) -> CaseVaultError {
        let (tool, line) = kind == "user" ? ("useradd --system", "u") : ("groupadd --system", "g")
        return CaseVaultError(
            .invalidConfiguration,
            "\(place) names the \(kind) \(name), which this host does not have; create it (\(tool) \(name), or "
                + "a line '\(line) \(name) -' in /etc/sysusers.d/casevault-local.conf, then systemd-sysusers) "
                + "or take it out of the configuration",
            field: place
        )
    }
}

internal import CaseVaultCore

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
                    "roles.\(roleName) is not a role; the roles are director, mediator, supervisor, intake, "
                        + "submitter, statistician, operator and office:NAME",
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
            errno = 0
            guard let entry = getpwnam(parts[1]) else { throw Self.notFound("user", parts[1], place: place) }
            return .uid(entry.pointee.pw_uid)
        case "group":
            errno = 0
            guard let entry = getgrnam(parts[1]) else { throw Self.notFound("group", parts[1], place: place) }
            return .gid(entry.pointee.gr_gid)
        default:
            throw invalid
        }
    }

    /// Why a lookup found nothing: the name is unknown (a configuration error, not retried), or the user
    /// database could not be read (LDAP or SSSD down: a failure the service manager retries).
    static func notFound(_ kind: String, _ name: String, place: String) -> CaseVaultError {
        let failure = errno
        guard [0, ENOENT, ESRCH, EBADF, EPERM].contains(failure) else {
            return CaseVaultError(
                .storageFailure,
                "the user database could not be read to resolve \(place) (errno \(failure)); try again when it answers"
            )
        }
        return Self.unknown(kind, name, place: place)
    }

    /// A user or group name the host does not have: which, where, and how to make it (the host
    /// configuration's groups come from the sysusers.d entry). Names of principals are configuration,
    /// not case content.
    static func unknown(_ kind: String, _ name: String, place: String) -> CaseVaultError {
        // Only a name that could be a user or group name is repeated (it reaches the journal and a
        // suggested command): nothing that could forge a log line or a shell word.
        let portable =
            name.utf8.count <= 32
            && name.utf8.allSatisfy { byte in
                (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x30 && byte <= 0x39)
                    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
            }
        guard portable else {
            return CaseVaultError(
                .invalidConfiguration, "\(place) names a \(kind) whose name is not a valid \(kind) name", field: place)
        }
        let (tool, line) = kind == "user" ? ("useradd", "u") : ("groupadd --system", "g")
        return CaseVaultError(
            .invalidConfiguration,
            "\(place) names the \(kind) \(name), which this host does not have; create it (\(tool) \(name), or "
                + "a line '\(line) \(name) -' in /etc/sysusers.d/casevault-local.conf, then systemd-sysusers) "
                + "or take it out of the configuration",
            field: place
        )
    }
}

public import CaseVaultCore

#if canImport(Glibc)
internal import Glibc
#endif

/// Readies the socket's place before binding, and fixes its mode after.
public enum SocketPath {
    /// Creates the socket's directory (0750) if missing and refuses one that its group or others can write; replaces a
    /// stale socket this user left behind (nothing answers on it); refuses a path that belongs to another
    /// user, that is not a socket, or on which a daemon is still serving.
    public static func prepare(_ path: String, group: UInt32? = nil) throws(CaseVaultError) {
        guard path.utf8.count < 108 else {
            throw CaseVaultError(.socketUnavailable, "the socket path must be shorter than 108 bytes")
        }
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        var info = stat()
        if lstat(directory, &info) != 0 {
            guard mkdir(directory, 0o750) == 0 || errno == EEXIST else {
                throw CaseVaultError(.socketUnavailable, "cannot create the socket directory \(directory)")
            }
            chmod(directory, 0o750)
            guard lstat(directory, &info) == 0 else {
                throw CaseVaultError(.socketUnavailable, "cannot read the socket directory \(directory)")
            }
        }
        // Its group may not write it either: a member could put a socket of their own in its place and
        // catch what clients send.
        guard info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid(), info.st_mode & 0o022 == 0 else {
            throw CaseVaultError(
                .socketUnavailable,
                "the socket directory \(directory) must be a directory owned by this user and not writable by its group or others (0750)"
            )
        }
        if let group, info.st_gid != group {
            guard chown(directory, uid_t.max, group) == 0 else {
                throw CaseVaultError(
                    .socketUnavailable, "cannot give the socket directory \(directory) to group \(group)")
            }
        }
        guard lstat(path, &info) == 0 else { return }
        guard info.st_mode & S_IFMT == S_IFSOCK, info.st_uid == geteuid() else {
            throw CaseVaultError(
                .socketUnavailable,
                "\(path) exists and is not a socket of this user; remove it or choose another socket_path"
            )
        }
        if Self.answers(path) {
            throw CaseVaultError(.socketUnavailable, "another daemon is serving on \(path); stop it first")
        }
        guard unlink(path) == 0 else {
            throw CaseVaultError(.socketUnavailable, "cannot remove the stale socket \(path)")
        }
    }

    /// Makes the socket 0660: its users are the daemon's user and its clients' group. In a set-group-ID
    /// directory of that group (as tmpfiles.d makes /run/casevault) the socket is born in the group and
    /// needs no chown, which systemd's `@privileged` filter would refuse.
    public static func restrict(_ path: String, group: UInt32? = nil) throws(CaseVaultError) {
        // The path must still be this user's socket (never a link put in its place), and its owner is
        // changed without following links. The directory, which only this user may write (`prepare`),
        // keeps anyone else from swapping it between these calls.
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK, info.st_uid == geteuid() else {
            throw CaseVaultError(.socketUnavailable, "\(path) is no longer this daemon's socket")
        }
        if let group, info.st_gid != group {
            guard lchown(path, uid_t.max, group) == 0 else {
                throw CaseVaultError(
                    .socketUnavailable,
                    "cannot give \(path) to group \(group); make its directory set-group-ID and of that group (chmod 2750)"
                )
            }
        }
        guard chmod(path, 0o660) == 0 else {
            throw CaseVaultError(.socketUnavailable, "cannot set the mode of \(path) to 0660")
        }
    }

    /// Whether something accepts connections on the socket at `path`.
    static func answers(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        } == 0
    }
}

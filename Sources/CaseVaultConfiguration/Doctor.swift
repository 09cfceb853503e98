internal import CCaseVaultShims
internal import CaseVaultAudit
public import CaseVaultCore
internal import CaseVaultFiles
internal import CaseVaultStore
public import Foundation

#if canImport(Glibc)
internal import Glibc
#endif

/// `casevaultctl doctor`: what the host does to the guarantees the daemon gives, checked from outside the
/// daemon: the filesystem under the data (and so what a shred's overwrite really does), the modes and
/// owners of the data and socket directories and of the key, swap, and core dumps.
public enum Doctor {
    public enum Status: String, Sendable, Comparable {
        case pass, warn, fail

        public static func < (lhs: Status, rhs: Status) -> Bool {
            [.pass, .warn, .fail].firstIndex(of: lhs)! < [.pass, .warn, .fail].firstIndex(of: rhs)!
        }
    }

    public struct Check: Sendable {
        public var name: String
        public var status: Status
        public var detail: String
    }

    /// Every check for the daemon `configuration` describes, relative paths resolved against `base`.
    public static func checks(_ configuration: DaemonConfiguration, base: URL) throws(CaseVaultError) -> [Check] {
        let store = try configuration.storeConfiguration(relativeTo: base)
        let server = try configuration.serverConfiguration(relativeTo: base)
        let data = store.dataDirectory.path
        let socketDirectory = (server.socketPath as NSString).deletingLastPathComponent
        let checks = [
            Self.privateDirectory("data directory", data, groupMayRead: false),
            Self.filesystem(data),
            Self.privateDirectory("socket directory", socketDirectory, groupMayRead: true),
            store.keySource == .file
                ? Self.keyFile(store.rootKeyFile.path, dataDirectory: data)
                : Check(
                    name: "key source", status: .pass,
                    detail:
                        "systemd credential \(configuration.keys.credential ?? "casevault-root-key"), read from $CREDENTIALS_DIRECTORY at start (LoadCredentialEncrypted= binds it to this host's TPM)"
                ),
            Self.auditLog(data + "/audit/log"),
            Self.auditAnchor(data),
            Self.backupKeys(configuration.backupKeyFile(relativeTo: base), dataDirectory: data),
            Self.swap(),
            Self.coreDumps(),
        ]
        // A vault in PostgreSQL bears its mark in the database, among the database's checks.
        return configuration.storage.backend == .postgresql ? checks : checks + [Self.moved(store)]
    }

    // MARK: The checks

    /// A directory only its owner (and, for the socket's, its group) can reach.
    static func privateDirectory(_ name: String, _ path: String, groupMayRead: Bool) -> Check {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            return Check(
                name: name, status: .warn, detail: "\(path) does not exist yet (casevaultd creates it on first start)")
        }
        let mode = info.st_mode & 0o7777
        let owner = Self.userName(info.st_uid)
        let text = "\(path): \(owner), mode \(String(mode, radix: 8))"
        guard info.st_mode & S_IFMT == S_IFDIR else {
            return Check(name: name, status: .fail, detail: "\(path) is not a directory")
        }
        let forbidden: mode_t = groupMayRead ? 0o027 : 0o077
        if mode & forbidden != 0 {
            let wanted = groupMayRead ? "0750" : "0700"
            return Check(
                name: name, status: .fail,
                detail: "\(text): others can reach it; chmod \(wanted) (casevaultd refuses to start)")
        }
        return Check(name: name, status: .pass, detail: text)
    }

    /// What a shred's in-place overwrite is worth on the data directory's filesystem (docs/ARCHITECTURE.md).
    static func filesystem(_ path: String) -> Check {
        let name = "shred guarantee"
        var type: UInt = 0
        guard casevault_filesystem_type(path, &type) == 0 else {
            return Check(
                name: name, status: .warn,
                detail: "cannot read the filesystem of \(path) (\(String(cString: strerror(errno))))")
        }
        switch type {
        case 0xEF53:
            return Check(
                name: name, status: .pass,
                detail: "ext4: key slots and ciphertext are overwritten in place (crypto-erase and overwrite)")
        case 0x5846_5342:
            return Check(
                name: name, status: .pass,
                detail: "xfs: key slots and ciphertext are overwritten in place (crypto-erase and overwrite)")
        case 0x9123_683E:
            var flags: CInt = 0
            let slots = path + "/keyslots"
            let fd = open(slots, O_RDONLY | O_CLOEXEC)
            defer { if fd >= 0 { close(fd) } }
            if fd >= 0, casevault_inode_flags(fd, &flags) == 0, flags & CASEVAULT_FS_NOCOW_FL != 0 {
                return Check(
                    name: name, status: .pass,
                    detail:
                        "btrfs: the key-slot file is no-copy-on-write, so slots are overwritten in place; ciphertext regions may keep old copies until the space is reused: crypto-erase holds"
                )
            }
            return Check(
                name: name, status: .fail,
                detail:
                    "btrfs: the key-slot file is not no-copy-on-write (it was created elsewhere and copied?): old key slots may survive a shred; recreate the data directory on this filesystem"
            )
        case 0x2FC1_2FC1:
            return Check(
                name: name, status: .warn,
                detail:
                    "ZFS: copy-on-write, nothing is overwritten in place; a shred is a crypto-erase only (the wrapped key is gone, old blocks remain until reused)"
            )
        case 0x794C_7630:
            return Check(
                name: name, status: .warn,
                detail: "overlayfs: writes land in an upper layer; a shred is a crypto-erase only")
        case 0x0102_1994:
            return Check(
                name: name, status: .warn,
                detail: "tmpfs: in memory, overwritten in place, but lost at reboot and swappable")
        default:
            return Check(
                name: name, status: .warn,
                detail:
                    "an unrecognised filesystem (type 0x\(String(type, radix: 16))): a shred is a crypto-erase only, as far as anyone can tell"
            )
        }
    }

    /// What `lstat` finds at a file that must be private: nothing, something else than a regular file
    /// with mode 0600 (its mode), or the file (its status).
    enum PrivateFile {
        case missing
        case exposed(mode: String)
        case found(stat, mode: String)

        var mode: String {
            switch self {
            case .missing: return "-"
            case .exposed(let mode), .found(_, let mode): return mode
            }
        }
    }

    static func privateFile(_ path: String) -> PrivateFile {
        var info = stat()
        guard lstat(path, &info) == 0 else { return .missing }
        let mode = String(info.st_mode & 0o7777, radix: 8)
        guard info.st_mode & S_IFMT == S_IFREG, info.st_mode & 0o077 == 0 else { return .exposed(mode: mode) }
        return .found(info, mode: mode)
    }

    /// The root key file: 0600, its owner only, outside the data directory.
    static func keyFile(_ path: String, dataDirectory: String) -> Check {
        let name = "key source"
        let file = Self.privateFile(path)
        if case .missing = file {
            return Check(
                name: name, status: .warn,
                detail: "file \(path) does not exist yet (casevaultd creates it on first start)")
        }
        if path.hasPrefix(dataDirectory + "/") {
            return Check(
                name: name, status: .fail,
                detail: "file \(path) is inside the data directory: a copy of the data would carry the key")
        }
        guard case .found(let info, let mode) = file else {
            return Check(
                name: name, status: .fail,
                detail: "file \(path): mode \(file.mode); it must be a regular file with mode 0600")
        }
        if let tree = Self.sharedTree(path, dataDirectory: dataDirectory) {
            return Check(
                name: name, status: .warn,
                detail:
                    "file \(path) shares \(tree) with the data: a backup of that tree carries the key with the data; keep keys in a tree of their own (as /var/lib/casevault-keys in Config/casevault.host.toml)"
            )
        }
        return Check(
            name: name, status: .pass,
            detail: "file \(path): \(Self.userName(info.st_uid)), mode \(mode); back it up apart from the data")
    }

    /// The directory holding the data directory, when `path` lies under it too (and it is not `/`): a copy
    /// of that directory, the natural unit of a host's backups, carries both.
    static func sharedTree(_ path: String, dataDirectory: String) -> String? {
        let parent = (dataDirectory as NSString).deletingLastPathComponent
        guard parent != "/", !parent.isEmpty, path.hasPrefix(parent + "/") else { return nil }
        return parent
    }

    /// The audit log: casevaultd refuses every request it cannot record, so the log must stay writable: a
    /// private regular file, not immutable or append-only (chattr), on a filesystem with room to grow.
    static func auditLog(_ path: String) -> Check {
        let name = "audit log writable"
        let file = Self.privateFile(path)
        if case .missing = file {
            return Check(
                name: name, status: .warn, detail: "\(path) does not exist yet (casevaultd creates it on first start)")
        }
        guard case .found(let info, let mode) = file else {
            return Check(
                name: name, status: .fail,
                detail:
                    "\(path): mode \(file.mode); it must be a regular file with mode 0600 (casevaultd refuses to start)"
            )
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        defer { if fd >= 0 { close(fd) } }
        var flags: CInt = 0
        if fd >= 0, casevault_inode_flags(fd, &flags) == 0 {
            // FS_IMMUTABLE_FL and FS_APPEND_FL (linux/fs.h): either stops the daemon's writes.
            if flags & 0x10 != 0 || flags & 0x20 != 0 {
                return Check(
                    name: name, status: .fail,
                    detail:
                        "\(path) is marked \(flags & 0x10 != 0 ? "immutable" : "append-only") (lsattr); casevaultd would refuse every request; chattr -i -a it"
                )
            }
        }
        var space = statvfs()
        if statvfs(path, &space) == 0 {
            let free = UInt64(space.f_bavail) * UInt64(space.f_frsize)
            if free < 64 << 20 {
                return Check(
                    name: name, status: .warn,
                    detail: "\(free >> 20) MiB free under \(path): when it fills, casevaultd refuses every request")
            }
        }
        return Check(
            name: name, status: .pass,
            detail: "\(path): \(Self.userName(info.st_uid)), mode \(mode), \(info.st_size) bytes")
    }

    /// Whether the audit log holds the entry the index's anchor names: a log cut short, replaced or deleted
    /// stops the daemon's start (exit 4), and this says how to go on.
    static func auditAnchor(_ data: String) -> Check {
        let name = "audit anchor"
        guard FileManager.default.fileExists(atPath: data + "/index.sqlite") else {
            return Check(name: name, status: .pass, detail: "no index yet (the first start writes the anchor)")
        }
        let anchor: AuditAnchor?
        do {
            anchor = try RecordStore.auditAnchor(ofDataDirectory: data, signer: nil)
        } catch {
            return Check(name: name, status: .fail, detail: error.message)
        }
        guard let anchor else {
            return Check(
                name: name, status: .pass, detail: "no anchor yet (the first start with the root key writes one)")
        }
        guard
            let problem = AuditLog.filesProblem(directory: data + "/audit")
                ?? AuditVerifier.anchorProblem(directory: data + "/audit", anchor: anchor)
        else {
            return Check(
                name: name, status: .pass,
                detail:
                    "the log's files follow one another and hold entry \(anchor.seq), as the index remembers (the start checks the entries after it under the root key)"
            )
        }
        return Check(
            name: name, status: .fail,
            detail:
                "\(problem). casevaultd will not start on it (exit 4). Keep a copy of \(data)/audit for investigation, "
                + "then start casevaultd once with --accept-audit-break: the log records the break, and casevaultctl audit verify lists it"
        )
    }

    /// Whether `casevaultctl migrate` moved the vault away from this data directory: casevaultd then
    /// refuses to start (exit 2), and this says where it went and how to take the move back.
    static func moved(_ store: StoreConfiguration) -> Check {
        do throws(CaseVaultError) {
            try RecordStore.refuseMoved(store)
            return Check(name: "vault moved", status: .pass, detail: "no move marked the data directory")
        } catch  where error.code == .vaultMoved {
            return Check(name: "vault moved", status: .fail, detail: error.message + " (casevaultd exits 2)")
        } catch {
            return Check(
                name: "vault moved", status: .warn,
                detail:
                    "cannot tell whether a move marked the data directory (\(error.message)); casevaultd refuses to start until it can"
            )
        }
    }

    /// The backup key file: private, outside the data directory (a copy of the data must not carry it).
    static func backupKeys(_ path: String, dataDirectory: String) -> Check {
        let name = "backup keys"
        if path.hasPrefix(dataDirectory + "/") {
            return Check(
                name: name, status: .fail,
                detail: "\(path) is inside the data directory: a copy of the data would carry the backups' keys")
        }
        switch Self.privateFile(path) {
        case .missing:
            return Check(name: name, status: .pass, detail: "\(path) does not exist yet (the first backup creates it)")
        case .exposed(let mode):
            return Check(
                name: name, status: .fail, detail: "\(path): mode \(mode); it must be a regular file with mode 0600")
        case .found(let info, let mode):
            if let tree = Self.sharedTree(path, dataDirectory: dataDirectory) {
                return Check(
                    name: name, status: .warn,
                    detail:
                        "\(path) shares \(tree) with the data: a backup of that tree carries the backups' keys with the data; keep keys in a tree of their own"
                )
            }
            return Check(
                name: name, status: .pass,
                detail: "\(path): \(Self.userName(info.st_uid)), mode \(mode); keep it apart from the backups")
        }
    }

    /// Swap: none, in memory (zram) or encrypted (dm-crypt); anything else may carry plaintext to disk.
    static func swap() -> Check {
        let name = "swap"
        guard let text = try? String(contentsOfFile: "/proc/swaps", encoding: .utf8) else {
            return Check(name: name, status: .warn, detail: "cannot read /proc/swaps")
        }
        let devices = text.split(separator: "\n").dropFirst().compactMap {
            $0.split(separator: " ").first.map(String.init)
        }
        if devices.isEmpty {
            return Check(name: name, status: .pass, detail: "no swap")
        }
        let unencrypted = devices.filter { device in
            let base = (device as NSString).lastPathComponent
            if base.hasPrefix("zram") { return false }
            let resolved =
                (try? FileManager.default.destinationOfSymbolicLink(atPath: device)).map {
                    ($0 as NSString).lastPathComponent
                } ?? base
            let uuid = (try? String(contentsOfFile: "/sys/block/\(resolved)/dm/uuid", encoding: .utf8)) ?? ""
            return !uuid.hasPrefix("CRYPT-")
        }
        if unencrypted.isEmpty {
            return Check(
                name: name, status: .pass, detail: "swap is encrypted or in memory: \(devices.joined(separator: ", "))")
        }
        return Check(
            name: name, status: .warn,
            detail:
                "unencrypted swap (\(unencrypted.joined(separator: ", "))): keys are locked in memory, but decrypted content in buffers could be written to disk; encrypt swap or turn it off"
        )
    }

    /// Core dumps: casevaultd makes itself non-dumpable at start; fs.suid_dumpable must not override that.
    static func coreDumps() -> Check {
        let name = "core dumps"
        let value = (try? String(contentsOfFile: "/proc/sys/fs/suid_dumpable", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard let value else {
            return Check(name: name, status: .warn, detail: "cannot read /proc/sys/fs/suid_dumpable")
        }
        if value == "0" {
            return Check(
                name: name, status: .pass,
                detail: "casevaultd sets RLIMIT_CORE 0 and makes itself non-dumpable; fs.suid_dumpable = 0 keeps it so")
        }
        return Check(
            name: name, status: .fail,
            detail:
                "fs.suid_dumpable = \(value): non-dumpable processes are dumped anyway; set it to 0 (sysctl fs.suid_dumpable=0)"
        )
    }

    static func userName(_ uid: uid_t) -> String {
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return "uid \(uid)" }
        return "owner \(String(cString: name))"
    }
}

import CCaseVaultShims
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A directory only this user can enter, on a filesystem kept in memory (tmpfs or ramfs), for text that
/// must never reach a disk: a record being written in an editor. `$XDG_RUNTIME_DIR` (systemd's per-user
/// tmpfs) is tried first, then `/dev/shm`; with neither, nothing is written and the command fails. Its
/// name carries the process id, so that the next run removes one whose process is gone (killed with
/// SIGKILL, which nothing can catch).
final class PrivateScratch: Sendable {
    static let prefix = "casevaultctl-edit-"

    let path: String

    private init(path: String) {
        self.path = path
    }

    /// Makes the directory (mode 0700, as mkdtemp(3) does), after removing those of this user's runs that
    /// have ended.
    static func make() throws(CLIError) -> PrivateScratch {
        let environment = ProcessInfo.processInfo.environment
        let candidates = [environment["XDG_RUNTIME_DIR"], "/dev/shm"].compactMap { $0 }.filter { !$0.isEmpty }
        guard let base = candidates.first(where: Self.isMemoryBacked) else {
            throw CLIError.usage(
                "no directory kept in memory to edit in: \(candidates.joined(separator: " and ")) "
                    + "\(candidates.count == 1 ? "is not" : "are not") tmpfs; set XDG_RUNTIME_DIR to a tmpfs "
                    + "directory of your own, or file from a file with --from")
        }
        Self.removeAbandoned(in: base)
        var template = Array((base + "/" + Self.prefix + "\(getpid())-XXXXXX").utf8CString)
        guard mkdtemp(&template) != nil else {
            throw CLIError.usage("cannot make a private directory in \(base): \(String(cString: strerror(errno)))")
        }
        return PrivateScratch(path: cString(template))
    }

    /// Whether `path` is a directory on tmpfs or ramfs (statfs(2)'s TMPFS_MAGIC, RAMFS_MAGIC).
    static func isMemoryBacked(_ path: String) -> Bool {
        var type: UInt = 0
        guard casevault_filesystem_type(path, &type) == 0 else { return false }
        return [0x0102_1994, 0x8584_58f6].contains(type)
    }

    /// Removes the directories in `base` that this user's earlier runs made and whose process has ended.
    private static func removeAbandoned(in base: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: base) else { return }
        for name in names where name.hasPrefix(Self.prefix) {
            let digits = name.dropFirst(Self.prefix.count).prefix { $0.isNumber }
            guard let pid = pid_t(digits), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            var info = stat()
            guard lstat(base + "/" + name, &info) == 0, info.st_uid == geteuid(),
                info.st_mode & S_IFMT == S_IFDIR
            else { continue }
            PrivateScratch(path: base + "/" + name).remove()
        }
    }

    /// Removes the directory and everything in it, whatever the editor left there (swap and backup files
    /// included): each regular file is overwritten with zeros first. Whether the directory is gone.
    @discardableResult
    func remove() -> Bool {
        if let walker = FileManager.default.enumerator(atPath: self.path) {
            for case let name as String in walker {
                Self.zero(self.path + "/" + name)
            }
        }
        try? FileManager.default.removeItem(atPath: self.path)
        var info = stat()
        return lstat(self.path, &info) != 0 && errno == ENOENT
    }

    private static func zero(_ path: String) {
        let descriptor = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_size > 0 else { return }
        let zeros = [UInt8](repeating: 0, count: 64 << 10)
        var offset: off_t = 0
        while offset < info.st_size {
            let count = Int(min(off_t(zeros.count), info.st_size - offset))
            let written = pwrite(descriptor, zeros, count, offset)
            guard written > 0 else { return }
            offset += off_t(written)
        }
    }
}

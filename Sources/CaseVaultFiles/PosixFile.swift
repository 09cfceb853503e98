internal import CCaseVaultShims
package import CaseVaultCore

#if canImport(Glibc)
package import Glibc
#endif

/// A POSIX file descriptor with the few calls the store needs, each turning errno into a `CaseVaultError`.
/// Hand-written rather than swift-system's `FileDescriptor` to keep `O_EXCL|O_NOFOLLOW`, `fdatasync` and
/// exact errno handling in one small file.
package final class PosixFile: Sendable {
    package let descriptor: Int32

    package init(path: String, flags: Int32, mode: mode_t = 0o600) throws(CaseVaultError) {
        let fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw POSIXFailure.error("open", path: path) }
        self.descriptor = fd
    }

    deinit {
        close(self.descriptor)
    }

    /// Takes an advisory lock on the whole file (`flock`: `LOCK_EX`, `LOCK_SH`, with `LOCK_NB` not to
    /// wait), held until it is released or the file is closed. Returns `false` only when `LOCK_NB` was
    /// given and someone else holds it.
    @discardableResult
    package func lock(_ operation: Int32, path: String? = nil) throws(CaseVaultError) -> Bool {
        while flock(self.descriptor, operation) != 0 {
            switch errno {
            case EINTR: continue
            case EWOULDBLOCK where operation & LOCK_NB != 0: return false
            default: throw POSIXFailure.error("flock", path: path)
            }
        }
        return true
    }

    package func write(_ bytes: [UInt8], at offset: Int64) throws(CaseVaultError) {
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { buffer in
                pwrite(
                    self.descriptor, buffer.baseAddress! + written, buffer.count - written,
                    off_t(offset) + off_t(written))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw POSIXFailure.error("pwrite")
            }
            written += result
        }
    }

    /// The largest write `writeZeros` makes, and the chunk in which the store fills its files.
    package static let fillChunk = 64 << 10

    /// Writes `count` zero bytes at `offset`, in writes of at most `fillChunk` bytes. Space reserved ahead
    /// of small writes is filled this way, not in one write: the page cache keeps a region in folios as
    /// large as the write that created it (up to 2 MiB), and a later write of a few hundred bytes into a
    /// large folio costs the kernel a walk over every block of it (`casevault-bench --audit-only` prints the
    /// CPU a read's audit entries cost).
    package func writeZeros(count: Int64, at offset: Int64) throws(CaseVaultError) {
        let chunk = [UInt8](repeating: 0, count: Int(min(Int64(Self.fillChunk), max(count, 0))))
        var done: Int64 = 0
        while done < count {
            let length = Int(min(Int64(chunk.count), count - done))
            try self.write(length == chunk.count ? chunk : Array(chunk[..<length]), at: offset + done)
            done += Int64(length)
        }
    }

    package func read(count: Int, at offset: Int64) throws(CaseVaultError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var total = 0
        while total < count {
            let result = bytes.withUnsafeMutableBytes { buffer in
                pread(self.descriptor, buffer.baseAddress! + total, count - total, off_t(offset) + off_t(total))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw POSIXFailure.error("pread")
            }
            if result == 0 { break }
            total += result
        }
        bytes.removeLast(count - total)
        return bytes
    }

    package func size() throws(CaseVaultError) -> Int64 {
        var info = stat()
        guard fstat(self.descriptor, &info) == 0 else { throw POSIXFailure.error("fstat") }
        return Int64(info.st_size)
    }

    package func status() throws(CaseVaultError) -> stat {
        var info = stat()
        guard fstat(self.descriptor, &info) == 0 else { throw POSIXFailure.error("fstat") }
        return info
    }

    package func flushData() throws(CaseVaultError) {
        guard fdatasync(self.descriptor) == 0 else { throw POSIXFailure.error("fdatasync") }
    }

    /// One step of writing the file's dirty pages back to the device, without a device flush
    /// (`FlushRider`).
    package enum WriteBack: Int32 {
        /// Starts writing every dirty page that is not being written already. Reports no failed write.
        case start = 0
        /// Waits for the pages being written, then starts every dirty page that no one has begun to write
        /// meanwhile: every byte written before the call is then on its way to the device, in a write that
        /// `finish` waits for. Reports a write that failed.
        case startAll = 1
        /// Waits until the pages being written are written, starting none, and reports a write that failed.
        case finish = 2
    }

    package func writeBack(_ step: WriteBack) throws(CaseVaultError) {
        guard casevault_write_back(self.descriptor, step.rawValue) == 0 else {
            throw POSIXFailure.error("sync_file_range")
        }
    }

    package func flush() throws(CaseVaultError) {
        guard fsync(self.descriptor) == 0 else { throw POSIXFailure.error("fsync") }
    }

    package func readAll() throws(CaseVaultError) -> [UInt8] {
        let length = try self.size()
        return try self.read(count: Int(length), at: 0)
    }
}

/// errno → `CaseVaultError`, with the path only when it is one of the store's own (never content).
package enum POSIXFailure {
    package static func error(_ call: String, path: String? = nil, code: Int32 = errno) -> CaseVaultError {
        let reason = String(cString: strerror(code))
        let place = path.map { " on \($0)" } ?? ""
        let kind: CaseVaultError.Code = code == EACCES || code == EPERM ? .insecurePermissions : .storageFailure
        return CaseVaultError(
            kind,
            "\(call) failed\(place): \(reason); check the disk, free space and the data directory's ownership",
            cause: POSIXErrorCode(code)
        )
    }
}

/// errno as an error value that is Sendable.
struct POSIXErrorCode: Error, Sendable, CustomStringConvertible {
    let code: Int32
    init(_ code: Int32) { self.code = code }
    var description: String { "errno \(self.code)" }
}

extension PosixFile {
    package func truncate(to length: Int64) throws(CaseVaultError) {
        guard ftruncate(self.descriptor, off_t(length)) == 0 else { throw POSIXFailure.error("ftruncate") }
    }
}

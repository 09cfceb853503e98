public import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Dispatch
internal import Foundation
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

// The log as it stands, for the verifier while the daemon serves.
extension AuditLog {
    /// The log's files and head as they stand, for verifying while the daemon serves, without holding the
    /// writer: the head first, then (briefly under the writer's lock) the files opened, so that a rotation's
    /// retention cannot take one away, and the end of the last whole batch in `log` (never before the head's
    /// checkpoint). Each file is read when the verifier reaches it; the bytes before the end no later write
    /// changes.
    public func snapshot() throws(CaseVaultError) -> (segments: [AuditSegment], head: [UInt8]?) {
        let head = try Self.readHead(self.headPath)
        let (archives, end, current) = try self.chain.withLock { chain throws(CaseVaultError) in
            var archives: [AuditSegment] = []
            for archived in try AuditFiles.list(self.directory) {
                guard archived.first != nil else { continue }
                let file = try PosixFile(path: self.directory + "/" + archived.name, flags: O_RDONLY)
                archives.append(
                    AuditSegment(name: archived.name, first: archived.first) { () throws(CaseVaultError) in
                        try file.readAll()
                    })
            }
            return (archives, chain.end, self.file)
        }
        let log = AuditSegment(name: AuditFiles.current, first: nil) { () throws(CaseVaultError) in
            try current.read(count: Int(end), at: 0)
        }
        return (archives + [log], head)
    }

    /// The head file's bytes, or `nil` when there is none.
    public static func readHead(_ path: String) throws(CaseVaultError) -> [UInt8]? {
        guard DataDirectory.exists(path) else { return nil }
        return try PosixFile(path: path, flags: O_RDONLY).readAll()
    }
}

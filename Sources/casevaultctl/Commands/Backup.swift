import ArgumentParser
import CaseVaultConfiguration
import CaseVaultCore
import CaseVaultCrypto
import CaseVaultFiles
import CaseVaultStore
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    struct Backup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a backup of the vault to a file (operator), while the daemon serves.",
            discussion: """
                The file is sealed under a key of its own, kept (sealed) in the backup key file; it holds no \
                session notes. Keys older than [backup] retention_days are destroyed at each backup, which makes \
                their backups unreadable for good. The file is written as FILE.partial and renamed when complete.
                """
        )

        @Option(help: "The backup file to write (must not exist).") var out: String
        @OptionGroup var connection: Connection

        func run() async throws {
            try await runReporting { () throws(CLIError) in
                guard !FileManager.default.fileExists(atPath: self.out) else {
                    throw CLIError.usage("\(self.out) exists; name a new file")
                }
                let partial = self.out + ".partial"
                unlink(partial)
                let fd = open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                guard fd >= 0 else {
                    throw CLIError.unreadable("cannot create \(partial): \(String(cString: strerror(errno)))")
                }
                let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
                // Whatever stops the backup short (an unreachable daemon, a problem, a cut) leaves no file.
                var kept = false
                defer { if !kept { unlink(partial) } }
                var size = 0
                var head: [UInt8] = []
                var tail: [UInt8] = []
                let reply = try await self.connection.client().stream(.POST, "/v1/admin/backup") { piece in
                    let bytes = Array(piece.readableBytesView)
                    handle.write(Data(bytes))
                    size += bytes.count
                    if head.count < 22 { head += bytes.prefix(22 - head.count) }
                    tail = Array((tail + bytes).suffix(4))
                }
                guard reply.status == 200 else { throw CLIError.from(reply) }
                // A complete backup ends with an empty frame; a daemon that failed midway never writes one.
                guard size > 38, tail == [0, 0, 0, 0], fsync(fd) == 0 else {
                    throw CLIError.problem(
                        "the backup was cut off before its end; nothing was kept (see the daemon's log)")
                }
                guard rename(partial, self.out) == 0 else {
                    throw CLIError.unreadable(
                        "cannot rename \(partial) to \(self.out): \(String(cString: strerror(errno)))")
                }
                kept = true
                // The clear header names the backup: magic (6 bytes), then its id (16).
                let id = head.count == 22 ? Hex.encode(head[6..<22]) : "?"
                output(
                    json: self.connection.json, document: ["backup_id": id, "file": self.out, "bytes": size],
                    rows: [("backup", id), ("file", self.out), ("bytes", "\(size)")]
                )
            }
        }
    }
}

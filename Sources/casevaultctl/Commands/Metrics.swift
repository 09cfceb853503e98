import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension CaseVaultCtl {
    struct Metrics: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The daemon's metrics in Prometheus' text format (operator).",
            discussion: """
                Requests by route template and status, the store's puts, gets, shreds and sweeps, the audit \
                log's state and lag, the seal state and the store's size; never an id, a name or content. \
                With --textfile DIR the exposition is written to DIR/casevault.prom, replaced whole, for \
                node_exporter's textfile collector (see examples/systemd/casevault-metrics.timer); without \
                it, to standard output.
                """
        )

        @Option(help: "A directory node_exporter's textfile collector reads: writes casevault.prom there.")
        var textfile: String?
        @OptionGroup var connection: Connection

        func run() async throws {
            try await runReporting { () throws(CLIError) in
                let reply = try await self.connection.client().get("/v1/metrics")
                guard reply.status == 200 else { throw CLIError.from(reply) }
                guard let directory = self.textfile else {
                    FileHandle.standardOutput.write(reply.body)
                    return
                }
                let path = try Self.replace(directory: directory, name: "casevault.prom", with: reply.body)
                output(
                    json: self.connection.json, document: ["file": path, "bytes": reply.body.count],
                    rows: [("file", path), ("bytes", "\(reply.body.count)")])
            }
        }

        /// Writes `data` to `name` in `directory` through a new temporary file in the same directory
        /// (created exclusively, never through a link, with a random name), flushed, then renamed over
        /// `name`: a collector reading it sees the old exposition or the new one, never half of one. Mode
        /// 0644: node_exporter runs as its own user. Returns the file's path.
        static func replace(directory: String, name: String, with data: Data) throws(CLIError) -> String {
            let path = directory + "/" + name
            // node_exporter reads only names that end in .prom: the temporary one is skipped.
            let temporary = directory + "/." + name + "." + UUID().uuidString
            func failure(_ what: String) -> CLIError {
                .unreadable("cannot \(what) in \(directory): \(String(cString: strerror(errno)))")
            }
            let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else { throw failure("write") }
            var written = 0
            let complete = data.withUnsafeBytes { bytes -> Bool in
                while written < bytes.count {
                    let count = write(descriptor, bytes.baseAddress! + written, bytes.count - written)
                    if count < 0 && errno == EINTR { continue }
                    guard count > 0 else { return false }
                    written += count
                }
                return true
            }
            guard complete, fchmod(descriptor, 0o644) == 0, fsync(descriptor) == 0 else {
                let error = failure("write")
                close(descriptor)
                unlink(temporary)
                throw error
            }
            close(descriptor)
            guard rename(temporary, path) == 0 else {
                let error = failure("replace \(name)")
                unlink(temporary)
                throw error
            }
            return path
        }
    }
}

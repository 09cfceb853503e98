internal import CaseVaultCore
internal import CaseVaultStore
internal import Dispatch
internal import Foundation
internal import Hummingbird
internal import NIOCore
internal import Synchronization

/// Hands the backup's pieces from the store (on a blocking thread) to the response body, at most
/// `depth` pieces ahead, so that memory stays flat however large the vault. A client that stops reading
/// for `patience` seconds ends the backup.
final class ChunkPipe: Sendable {
    static let depth = 16
    static let patience: Double = 60
    let stream: AsyncThrowingStream<ByteBuffer, any Error>
    /// Ends when the first piece is sent (the backup's key is durable), or throws what failed before it.
    let started: AsyncThrowingStream<Void, any Error>
    private let continuation: AsyncThrowingStream<ByteBuffer, any Error>.Continuation
    private let starting: AsyncThrowingStream<Void, any Error>.Continuation
    private let space = DispatchSemaphore(value: ChunkPipe.depth)
    private let gone = Atomic<Bool>(false)

    init() {
        (self.stream, self.continuation) = AsyncThrowingStream.makeStream()
        (self.started, self.starting) = AsyncThrowingStream.makeStream()
    }

    func send(_ bytes: [UInt8]) throws(CaseVaultError) {
        guard !self.gone.load(ordering: .relaxed), self.space.wait(timeout: .now() + Self.patience) == .success else {
            throw CaseVaultError(.storageFailure, "the backup's client stopped reading")
        }
        self.continuation.yield(ByteBuffer(bytes: bytes))
        self.starting.finish()
    }

    func consumed() {
        self.space.signal()
    }

    /// The backup ended, whole or with `error` (a no-op for `started` once the first piece was sent).
    func finish(_ error: (any Error)? = nil) {
        self.starting.finish(throwing: error)
        self.continuation.finish(throwing: error)
    }

    /// The client went away: wake the producer so that it stops.
    func abandon() {
        self.gone.store(true, ordering: .relaxed)
        for _ in 0..<ChunkPipe.depth { self.space.signal() }
    }
}

extension Routes {
    /// Streams a backup (`RecordStore.backup`): sealed bytes only; the CLI writes them to a file.
    func backup(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        try request.requireNoBody()
        let store = try self.localStore
        guard let keyFile = self.configuration.backupKeyFile else {
            throw CaseVaultError(.invalidConfiguration, "no backup key file is configured ([backup] key_file)")
        }
        let id = RecordStore.newBackupID()
        context.audit?.created("backup_id", id)
        let keys = BackupKeyFile(path: keyFile)
        let retention = self.configuration.backupRetentionDays
        let pipe = ChunkPipe()
        let pool = self.pool
        let logger = context.logger
        pool.start { active in
            guard active else {
                pipe.finish(
                    CaseVaultError(.storageFailure, "the daemon is stopping; run the backup again once it serves"))
                return
            }
            do throws(CaseVaultError) {
                _ = try store.backup(id: id, keys: keys, retentionDays: retention) { bytes throws(CaseVaultError) in
                    try pipe.send(bytes)
                }
                pipe.finish()
            } catch {
                // Codes and fixed text only: an error here never carries content.
                logger.error(
                    "backup failed",
                    metadata: [
                        "backup.id": "\(id)", "error.code": "\(error.code.rawValue)",
                        "error.detail": "\(error.message)",
                    ]
                )
                pipe.finish(error)
            }
        }
        // What fails before the first byte (the ledger copy, the backup key's flush) is answered as a
        // problem; after it, only by cutting the stream short, which the client sees as a backup without its end.
        do {
            for try await _ in pipe.started {}
            // A client gone meanwhile ends the wait without an error: the backup stops too.
            try Task.checkCancellation()
        } catch {
            pipe.abandon()
            throw error
        }
        var headers = HTTPFields()
        headers[.contentType] = "application/octet-stream"
        return Response(
            status: .ok,
            headers: headers,
            body: ResponseBody { writer in
                do {
                    for try await buffer in pipe.stream {
                        try await writer.write(buffer)
                        pipe.consumed()
                    }
                    try await writer.finish(nil)
                } catch {
                    pipe.abandon()
                    throw error
                }
            }
        )
    }

    struct Ledger: Encodable {
        /// One shredded record: its id and when. Which case it was in and what type it was are left out: a
        /// restore needs only the id, and the operator who exports this needs no more.
        struct Entry: Encodable {
            var recordID: String
            var shreddedAt: String

            init(_ entry: (id: RecordID, shreddedAt: Int64)) {
                self.recordID = entry.id.rawValue
                self.shreddedAt = JSONResponse.time(entry.shreddedAt)
            }

            enum CodingKeys: String, CodingKey {
                case recordID = "record_id"
                case shreddedAt = "shredded_at"
            }
        }

        var records: [Entry]
    }

    /// The shred ledger (record ids and times), for `casevaultctl restore --ledger`; on PostgreSQL, every
    /// shred's row.
    func ledger(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let entries = try await self.run { store throws(CaseVaultError) in try store.shreddedRecords() }
        return try JSONResponse.make(Ledger(records: entries.map(Ledger.Entry.init)))
    }
}

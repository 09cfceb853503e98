internal import CaseVaultCore
internal import CaseVaultSealing
internal import CaseVaultStore
internal import Dispatch
internal import Foundation
internal import HTTPTypes
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
    /// Streams a backup (`ServedStorage.backup`): sealed bytes only; the CLI writes them to a file.
    func backup(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        try request.requireNoBody()
        let store = try self.store
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

    /// The header that says how many bytes of a restore's body are the shred ledger (`casevaultctl ledger
    /// --out`'s JSON) before the backup's.
    static var ledgerLength: HTTPField.Name { HTTPField.Name("CaseVault-Ledger-Length")! }
    /// The longest ledger a restore takes.
    static var maxLedgerBytes: Int { 64 << 20 }

    struct Restored: Encodable {
        var backupID: String
        var createdAt: String
        var records: Int
        var attachments: Int
        var holds: Int
        var certificates: Int
        var shreddedAgain: Int

        enum CodingKeys: String, CodingKey {
            case backupID = "backup_id"
            case createdAt = "created_at"
            case records, attachments, holds, certificates
            case shreddedAgain = "shredded_again"
        }
    }

    struct LedgerIn: Decodable {
        struct Entry: Decodable {
            var recordID: String
            var shreddedAt: String?
            enum CodingKeys: String, CodingKey {
                case recordID = "record_id"
                case shreddedAt = "shredded_at"
            }
        }

        /// Each record's id and time of shredding, the earliest where it is named twice; an entry without a
        /// time (a ledger written by hand) takes `now`. `invalid-field` (`ledger`) for a document that is not
        /// a ledger, or an entry whose record id or time is malformed, naming the entry.
        static func entries(_ bytes: [UInt8], now: Int64) throws(CaseVaultError) -> [RecordID: Int64] {
            guard let parsed = try? JSONDecoder().decode(Self.self, from: Data(bytes)) else {
                throw CaseVaultError(
                    .invalidField, "the ledger is not one that casevaultctl ledger --out writes", field: "ledger")
            }
            var ledger: [RecordID: Int64] = [:]
            for (index, entry) in parsed.records.enumerated() {
                guard let id = try? RecordID(entry.recordID) else {
                    throw CaseVaultError(
                        .invalidField, "the ledger's entry \(index + 1) has no valid record_id", field: "ledger")
                }
                guard let at = entry.shreddedAt.map(Timestamp.milliseconds(parsing:)) ?? now else {
                    throw CaseVaultError(
                        .invalidField, "the ledger's entry \(index + 1) has a shredded_at that is not an RFC 3339 time",
                        field: "ledger")
                }
                ledger[id] = min(at, ledger[id] ?? at)
            }
            return ledger
        }
        var records: [Entry]
    }

    /// `POST /v1/admin/restore`: restores a backup (the body, after the ledger's bytes the
    /// `CaseVault-Ledger-Length` header counts) into this vault, which must hold nothing yet
    /// (`ServedStorage.beginRestore`: a vault kept in PostgreSQL; a data directory is restored without the
    /// daemon). Kept whole or not at all.
    func restore(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let authority = try context.authority(.restore)
        guard let keyFile = self.configuration.backupKeyFile else {
            throw CaseVaultError(.invalidConfiguration, "no backup key file is configured ([backup] key_file)")
        }
        let keys = BackupKeyFile(path: keyFile)
        var ledgerLength = 0
        if let text = request.headers[Self.ledgerLength] {
            guard let length = Int(text), length >= 0, length <= Self.maxLedgerBytes else {
                throw CaseVaultError(
                    .invalidField, "CaseVault-Ledger-Length is a number of bytes up to \(Self.maxLedgerBytes)",
                    field: "CaseVault-Ledger-Length")
            }
            ledgerLength = length
        }
        var ledgerBytes: [UInt8] = []
        var restore: (any BackupRestore)?
        var batch = ByteBuffer()
        let pool = self.pool
        func begin() async throws -> any BackupRestore {
            let ledger =
                ledgerLength == 0
                ? [:] : try LedgerIn.entries(ledgerBytes, now: Int64(Date().timeIntervalSince1970 * 1000))
            return try await self.run { store throws(CaseVaultError) in
                try store.beginRestore(keys: keys, ledger: ledger, authority: authority)
            }
        }
        do {
            for try await buffer in request.body {
                var buffer = buffer
                if ledgerBytes.count < ledgerLength {
                    let take = min(buffer.readableBytes, ledgerLength - ledgerBytes.count)
                    ledgerBytes += buffer.readBytes(length: take) ?? []
                }
                guard buffer.readableBytes > 0 else { continue }
                if restore == nil { restore = try await begin() }
                batch.writeBuffer(&buffer)
                if batch.readableBytes >= 256 << 10, let restore {
                    let full = batch
                    batch = ByteBuffer()
                    try await pool.run {
                        try full.withUnsafeReadableBytes { bytes throws(CaseVaultError) in try restore.feed(bytes) }
                    }
                }
            }
            if restore == nil { restore = try await begin() }
            guard let started = restore else { throw CaseVaultError(.storageFailure, "the restore did not begin") }
            let last = batch
            let summary = try await pool.run { () throws(CaseVaultError) -> RestoredBackup in
                try last.withUnsafeReadableBytes { bytes throws(CaseVaultError) in try started.feed(bytes) }
                return try started.finish()
            }
            context.audit?.created("backup_id", summary.backupID)
            return try JSONResponse.make(
                Restored(
                    backupID: summary.backupID, createdAt: JSONResponse.time(summary.createdAt),
                    records: summary.records, attachments: summary.attachments, holds: summary.holds,
                    certificates: summary.certificates, shreddedAgain: summary.shreddedAgain))
        } catch {
            restore?.abandon()
            throw error
        }
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

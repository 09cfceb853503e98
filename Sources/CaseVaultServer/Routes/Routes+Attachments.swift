internal import CaseVaultCore
internal import CaseVaultSealing
internal import CaseVaultStore
internal import Foundation
internal import HTTPTypes
internal import Hummingbird
internal import Logging
internal import NIOCore

/// Attachments: streamed in and out through secretstream, one chunk in memory at a time.
extension Routes {
    struct Attached: Encodable {
        var recordID: String
        var mediaType: String
        var size: Int64

        enum CodingKeys: String, CodingKey {
            case recordID = "record_id"
            case mediaType = "media_type"
            case size
        }
    }

    /// `PUT /v1/records/{record_id}/attachment`: the body is the attachment, its Content-Type its media
    /// type. Whoever may file the record may attach to it; once, since records are immutable.
    func putAttachment(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let id = try self.recordID(context)
        guard let mediaType = request.headers[.contentType], Self.isMediaType(mediaType) else {
            throw CaseVaultError(
                .unsupportedMediaType, "send the attachment's media type as its Content-Type, such as application/pdf"
            )
        }
        let limit = self.configuration.maxAttachmentBytes
        let announced = request.headers[.contentLength].flatMap(Int64.init)
        if let length = announced, length > limit {
            throw CaseVaultError(
                .contentTooLarge, "the attachment is larger than the configured limit of \(limit) bytes")
        }
        let upload = try await self.runSealed { vault throws(CaseVaultError) in
            let store = vault.storage
            let metadata = try store.metadata(id)
            guard metadata.type != .caseHeader else {
                throw CaseVaultError.recordNotFound()
            }
            try Self.authorize(.filing(metadata.type), case: metadata.caseID, context, store)
            return try vault.beginAttachment(id, mediaType: mediaType, maxBytes: limit)
        }
        // Gather a few request buffers per hop to the blocking pool; the body arrives with backpressure, so
        // memory stays at about one batch.
        var batch = ByteBuffer()
        for try await buffer in request.body {
            var buffer = buffer
            batch.writeBuffer(&buffer)
            if batch.readableBytes >= 256 << 10 {
                let full = batch
                batch = ByteBuffer()
                try await self.pool.run {
                    try full.withUnsafeReadableBytes { bytes throws(CaseVaultError) in try upload.append(bytes) }
                }
            }
        }
        let last = batch
        try await self.pool.run {
            try last.withUnsafeReadableBytes { bytes throws(CaseVaultError) in try upload.append(bytes) }
        }
        // A client whose connection closes mid-body ends the body stream as if it were whole: what came is
        // not the attachment, and one stored so could never be replaced. (Found by sending a file that
        // shrank under casevaultctl.)
        if let length = announced, upload.size != length {
            throw CaseVaultError(
                .malformedRequest,
                "the body ended after \(upload.size) of the \(length) bytes its Content-Length announced; nothing was stored: send the attachment again"
            )
        }
        try await self.runSealed { vault throws(CaseVaultError) in try vault.finishAttachment(upload) }
        context.logger.info(
            "attachment stored", metadata: ["record.id": "\(id)", "attachment.bytes": "\(upload.size)"])
        return try JSONResponse.make(
            Attached(recordID: id.rawValue, mediaType: mediaType, size: upload.size), status: .created)
    }

    /// `GET /v1/records/{record_id}/attachment`: whoever may read the record. The first chunk is opened
    /// before the status is sent, so a damaged attachment gets its problem; a chunk damaged further on cuts
    /// the connection before any unauthenticated byte is sent. Served as `application/octet-stream`: the
    /// media type it was uploaded with is the uploader's word, not the daemon's, and goes in
    /// `CaseVault-Media-Type` (found by make check-api: bytes uploaded as application/json were served as
    /// JSON they were not).
    func getAttachment(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let id = try self.recordID(context)
        var record = try await self.authorizeReading(id, context)
        wipe(&record.content)
        let download = try await self.runSealed { vault throws(CaseVaultError) in try vault.openAttachment(id) }
        let first = try await self.pool.run { try download.next() }
        var headers = HTTPFields()
        headers[.contentType] = "application/octet-stream"
        headers[Self.mediaTypeField] = download.mediaType
        headers[.contentLength] = String(download.size)
        let pool = self.pool
        let (logger, integrityLog) = (context.logger, self.integrityLog)
        return Response(
            status: .ok,
            headers: headers,
            body: ResponseBody(contentLength: Int(download.size)) { writer in
                var chunk = first
                while let plaintext = chunk {
                    try await writer.write(ByteBuffer(bytes: plaintext))
                    do {
                        chunk = try await pool.run { try download.next() }
                    } catch let error as CaseVaultError {
                        // Damage a client can download again and again: logged as `ProblemMiddleware` logs
                        // what it answers, once a second at most.
                        let metadata: Logger.Metadata = ["record.id": "\(id)", "error.code": "\(error.code.rawValue)"]
                        if error.code == .integrityFailure {
                            integrityLog.error(logger, "attachment download cut off", metadata: metadata)
                        } else {
                            logger.error("attachment download cut off", metadata: metadata)
                        }
                        throw error
                    }
                }
                try await writer.finish(nil)
            }
        )
    }

    /// The header that carries an attachment's media type as it was uploaded.
    static var mediaTypeField: HTTPField.Name { HTTPField.Name("CaseVault-Media-Type")! }

    /// `type/subtype` with optional parameters, printable ASCII, at most 200 bytes.
    static func isMediaType(_ value: String) -> Bool {
        let utf8 = value.utf8
        guard utf8.count <= 200, utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else { return false }
        let media = value.split(separator: ";", maxSplits: 1).first ?? ""
        let parts = media.trimmingCharacters(in: .whitespaces).split(separator: "/")
        return parts.count == 2 && parts.allSatisfy { !$0.isEmpty && !$0.contains(" ") }
    }
}

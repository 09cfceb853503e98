internal import CaseVaultCore
internal import CaseVaultSealing
internal import CaseVaultStore
internal import Foundation
internal import Hummingbird
internal import Logging
internal import NIOCore

/// Records: read one with its content, shred one now.
extension Routes {
    /// `GET /v1/records/{record_id}`: the record and its decrypted content; 410 once shredded. A
    /// disclosure's office is named by the category inside its sealed content, so a disclosure is opened
    /// before the routed office is known, and its content is released only if the table allows it.
    func readRecord(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let id = try self.recordID(context)
        var record = try await self.authorizeReading(id, context)
        defer { wipe(&record.content) }
        return JSONResponse.raw(Self.recordBody(record))
    }

    /// Checks that the caller may read record `id` and returns it, opened. One index snapshot gives the record, its case and the caller's roster
    /// membership; the content is opened only once the table allows it, except for a disclosure, whose
    /// routed office is named by the category inside it.
    ///
    /// The read runs on the calling task, not the blocking pool (`Vault.awaitRead`): the local store answers
    /// it on this thread (it never waits on a flush: the index is in WAL mode; slots and segments are read
    /// with pread), and the hop would cost more than the read; the database's storage suspends the task
    /// until the database answers.
    func authorizeReading(_ id: RecordID, _ context: CaseVaultContext) async throws -> CaseVaultCore.Record {
        // The router has asked this already; asked again so that no caller of this function can leak which
        // ids exist to one who may read nothing.
        try context.authorizeSomewhere(API.reading)
        let rosterUID = Self.rosterUID(context)
        let vault = try self.keeper.vault()
        var record = try await Self.read(id, vault, rosterUID: rosterUID, context)
        guard record.metadata.type == .disclosure else { return record }
        let category = JSONValue.parseStored(record.content)?.string("category")
        let scope = AccessScope(routedOffice: category.flatMap { self.configuration.offices[$0] })
        do throws(CaseVaultError) {
            try context.authorize(.readDisclosure, scope: scope)
        } catch {
            wipe(&record.content)
            throw error
        }
        return record
    }

    /// Reads record `id` once the table allows the caller to read it in its case (a disclosure: anywhere,
    /// its office is decided once its category is known).
    static func read(
        _ id: RecordID, _ vault: Vault<Storage>, rosterUID: UInt32?, _ context: CaseVaultContext
    ) async throws(CaseVaultError) -> CaseVaultCore.Record {
        try await vault.awaitRead(id, rosterUID: rosterUID) { metadata, summary, onRoster throws(CaseVaultError) in
            guard metadata.type != .caseHeader else {
                throw CaseVaultError(
                    .notFound, "no record has this id; a case's participants are at /v1/cases/{case_id}/participants")
            }
            let scope = Self.scope(summary, context, onRoster: onRoster)
            if metadata.type == .disclosure {
                try context.authorizeSomewhere(.readDisclosure)
            } else {
                try context.authorize(Action.reading(metadata.type), scope: scope)
            }
        }
    }

    /// The record's metadata with its content spliced in as it was stored (already a JSON object).
    static func recordBody(_ record: CaseVaultCore.Record) -> ByteBuffer {
        let metadata = record.metadata
        var body = ByteBuffer()
        body.reserveCapacity(record.content.count + 256)
        body.writeString(#"{"record_id":"\#(metadata.id.rawValue)","case_id":"\#(metadata.caseID.rawValue)","#)
        body.writeString(
            #""type":"\#(metadata.type.rawValue)","created_at":"\#(JSONResponse.time(metadata.createdAt))","#)
        if let supersedes = metadata.supersedes {
            body.writeString(#""supersedes":"\#(supersedes.rawValue)","#)
        }
        body.writeString(#""content":"#)
        body.writeBytes(record.content)
        body.writeString("}")
        return body
    }

    struct Shredded: Encodable {
        var recordID: String
        var shredded: Bool

        enum CodingKeys: String, CodingKey {
            case recordID = "record_id"
            case shredded
        }
    }

    /// `DELETE /v1/records/{record_id}` with `{"reason": …}`: shreds the record now (docs/ARCHITECTURE.md).
    func shredRecord(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let id = try self.recordID(context)
        let body = try await request.jsonObject(self.configuration)
        try body.onlyFields(["reason"])
        let reason = try body.requireChoice("reason", in: ShredOrder.requestReasons)
        try await self.run { store throws(CaseVaultError) in
            let metadata = try store.metadata(id)
            guard metadata.type != .caseHeader else {
                throw CaseVaultError.recordNotFound()
            }
            let action: Action = metadata.type == .sessionNote ? .shredSessionNote : .shredRecord
            let authority = try Self.authorize(action, case: metadata.caseID, context, store).authority
            try store.shred([id], order: ShredOrder(method: .request, authority: authority, reason: reason))
        }
        context.logger.info(
            "record shredded on request", metadata: ["record.id": "\(id)", "shred.reason": "\(reason)"])
        return try JSONResponse.make(Shredded(recordID: id.rawValue, shredded: true))
    }
}

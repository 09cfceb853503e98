internal import CaseVaultCore
internal import CaseVaultSealing
internal import CaseVaultStore
internal import Foundation
internal import Hummingbird
internal import NIOCore

/// Cases: open, read, its participants (the sealed header), file records, close, assign mediators.
extension Routes {
    struct CaseView: Encodable {
        var caseID: String
        var state: String
        var participants: [String]
        var mediators: [String]
        var supervisors: [String]
        var createdAt: String
        var closedAt: String?
        var records: [RecordSummary]?

        init(_ summary: CaseSummary, records: [RecordMetadata]? = nil) {
            self.caseID = summary.id.rawValue
            self.state = summary.state.rawValue
            self.participants = summary.participants
            self.mediators = summary.mediators.map(Users.name)
            self.supervisors = summary.supervisors.map(Users.name)
            self.createdAt = JSONResponse.time(summary.createdAt)
            self.closedAt = summary.closedAt.map(JSONResponse.time)
            self.records = records?.map(RecordSummary.init)
        }

        enum CodingKeys: String, CodingKey {
            case caseID = "case_id"
            case state, participants, mediators, supervisors
            case createdAt = "created_at"
            case closedAt = "closed_at"
            case records
        }
    }

    struct RecordSummary: Encodable {
        var recordID: String
        var type: String
        var createdAt: String
        var supersedes: String?

        init(_ metadata: RecordMetadata) {
            self.recordID = metadata.id.rawValue
            self.type = metadata.type.rawValue
            self.createdAt = JSONResponse.time(metadata.createdAt)
            self.supersedes = metadata.supersedes?.rawValue
        }

        enum CodingKeys: String, CodingKey {
            case recordID = "record_id"
            case type
            case createdAt = "created_at"
            case supersedes
        }
    }

    /// `POST /v1/cases`: `{"participants": [{"name", "contact"?}, …], "mediators": [user, …]}`. Names and
    /// contacts go into the sealed case header; the case gets participant ids `p1`, `p2`, ….
    func openCase(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let body = try await request.jsonObject(self.configuration)
        try body.onlyFields(["participants", "mediators"])
        let participants = try body.require(
            "participants", "a list of 2 to 20 participants, each an object with a non-empty name")
        let header = JSONValue.object(["participants": participants]).encoded()
        let author = context.author
        // User names are looked up on the pool: with sssd or LDAP a lookup may wait on a directory server.
        let view = try await self.runSealed { vault throws(CaseVaultError) in
            let mediators = body["mediators"] == nil ? [] : try Users.uids(body, field: "mediators")
            try Self.requireOnRoster(mediators, vault.storage)
            return CaseView(try vault.openCase(header: header, mediators: mediators, author: author))
        }
        context.audit?.created("case_id", view.caseID)
        return try JSONResponse.make(view, status: .created)
    }

    /// `GET /v1/cases/{case_id}`: state, participant ids, mediators and the metadata of the live records of
    /// the types the caller may read.
    func readCase(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let id = try self.caseID(context)
        let view = try await self.run { store throws(CaseVaultError) in
            let (summary, _, scope) = try Self.authorize(.readCase, case: id, context, store)
            // Only the types the caller may read, as `GET /v1/cases/{case_id}/records` lists them: a session
            // note's or a disclosure's existence is itself not for everyone who may read the case.
            let readable = Self.readableTypes(context.roles, scope)
            return CaseView(summary, records: try store.records(caseID: id).filter { readable.contains($0.type) })
        }
        return try JSONResponse.make(view)
    }

    /// `GET /v1/cases/{case_id}/participants`: the sealed case header, opened.
    func readParticipants(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let id = try self.caseID(context)
        var header = try await self.runSealed { vault throws(CaseVaultError) in
            try Self.authorize(.readCase, case: id, context, vault.storage)
            return try vault.caseHeader(id)
        }
        defer { wipe(&header) }
        var body = ByteBuffer()
        body.writeString(#"{"case_id":"\#(id.rawValue)","header":"#)
        body.writeBytes(header)
        body.writeString("}")
        return JSONResponse.raw(body)
    }

    /// `POST /v1/cases/{case_id}/records`: `{"type", "content", "supersedes"?}` under the lifecycle rules. A
    /// final agreement's response lists the session notes it shredded.
    func fileRecord(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let caseID = try self.caseID(context)
        var raw: [UInt8] = []
        let body = try await request.jsonObject(self.configuration, raw: &raw)
        defer { wipe(&raw) }
        try body.onlyFields(["type", "content", "supersedes"])
        let type = try RecordType.parse(try body.requireText("type"))
        guard RecordType.fileable.contains(type) else {
            throw CaseVaultError(.unknownRecordType, "this type is not one a client files", field: "type")
        }
        // The content is stored as the client sent it; only a `content` key written with escapes (which the
        // byte scan does not take for it) makes us re-encode. When the body's parse read it from exactly the
        // bytes stored (`uniqueRawMember`), the validator checks that parse instead of parsing them again;
        // otherwise (two members whose names read alike, of which the parse kept the last) it parses the
        // bytes stored.
        let object = try body.requireObject("content")
        let supersedes = try body.optionalIdentifier("supersedes", as: RecordID.self)
        let unique = JSONValue.uniqueRawMember("content", of: raw, parsed: body)
        let content = unique ?? JSONValue.rawMember("content", of: raw)
        var filing = NewRecord(
            caseID: caseID, type: type, content: content.map(Array.init) ?? object.encoded(), author: context.author,
            supersedes: supersedes)
        if unique != nil { filing.parsed = object }
        let record = filing
        // The case, the roster and the decision in one trip to the index, under the case's lock (on PostgreSQL a
        // filing that only adds its record is first decided on a read without the lock, and filed in one call
        // only if that read still holds under it: `Vault.awaitFile`).
        let rosterUID = Self.rosterUID(context)
        let decide: @Sendable (CaseSummary, Bool) throws(CaseVaultError) -> Authority = {
            summary, onRoster throws(CaseVaultError) in
            try context.authority(.filing(type), scope: Self.scope(summary, context, onRoster: onRoster))
        }
        // Awaited on this event loop: the request's task is suspended, holding no thread, while the storage
        // waits for the database or for its put batch's flush (`SuspendingStorage`).
        let vault = try self.keeper.vault()
        let (stored, shredded) = try await vault.awaitFile(record, rosterUID: rosterUID, decide: decide)
        context.audit?.created("record_id", stored.id.rawValue)
        let answer = FilingAnswer(
            recordID: stored.id.rawValue, caseID: caseID.rawValue, type: type.rawValue,
            createdAt: JSONResponse.time(stored.createdAt), supersedes: stored.supersedes?.rawValue,
            shredded: shredded.map(\.rawValue))
        return JSONResponse.raw(ByteBuffer(bytes: answer.encoded()), status: .created)
    }

    struct Closed: Encodable {
        var caseID: String
        var state: String
        var outcome: String
        var shredded: [String]

        enum CodingKeys: String, CodingKey {
            case caseID = "case_id"
            case state, outcome, shredded
        }
    }

    /// `POST /v1/cases/{case_id}/close`: `{"outcome": "no_agreement" | "withdrawn"}`; shreds every note.
    func closeCase(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let id = try self.caseID(context)
        let body = try await request.jsonObject(self.configuration)
        try body.onlyFields(["outcome"])
        let outcomeName = try body.requireChoice("outcome", in: Set(ClosingOutcome.allCases.map(\.rawValue)))
        let outcome = ClosingOutcome(rawValue: outcomeName)!
        let shredded = try await self.run { store throws(CaseVaultError) in
            let authority = try Self.authorize(.closeCase, case: id, context, store).authority
            return try store.closeCase(id, outcome: outcome, authority: authority)
        }
        return try JSONResponse.make(
            Closed(
                caseID: id.rawValue, state: CaseState.closed.rawValue, outcome: outcomeName,
                shredded: shredded.map(\.rawValue))
        )
    }

    /// `PUT /v1/cases/{case_id}/mediators`: `{"mediators": [user, …]}`, each on the roster.
    func assignMediators(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        try await self.assign(.mediators, request, context)
    }

    /// `PUT /v1/cases/{case_id}/supervisors`: `{"supervisors": [user, …]}`, each on the roster; replaces the
    /// case's supervisors (who file and read its debriefs with its mediators).
    func assignSupervisors(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        try await self.assign(.supervisors, request, context)
    }

    /// Replaces the case's mediators or supervisors with the users the body's member of that name lists.
    private func assign(
        _ assignment: CaseAssignment, _ request: Request, _ context: CaseVaultContext
    ) async throws -> Response {
        let id = try self.caseID(context)
        let field = assignment.rawValue
        let body = try await request.jsonObject(self.configuration)
        try body.onlyFields([field])
        let view = try await self.run { store throws(CaseVaultError) in
            let uids = try Users.uids(body, field: field)
            try Self.requireOnRoster(uids, store, field: field)
            try store.assign(assignment, id, uids)
            return CaseView(try store.caseSummary(id))
        }
        return try JSONResponse.make(view)
    }

    static func requireOnRoster(_ uids: [UInt32], _ store: Storage, field: String = "mediators")
        throws(CaseVaultError)
    {
        for uid in uids where try !store.isOnRoster(uid) {
            throw CaseVaultError(
                .notOnRoster,
                "\(Users.name(uid)) is not on the roster; the director adds people with PUT /v1/roster/mediators/{user}",
                field: field
            )
        }
    }
}

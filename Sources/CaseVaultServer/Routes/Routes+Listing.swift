internal import CaseVaultCore
internal import CaseVaultStore
internal import Hummingbird

/// Finding cases and their records: the case list and a case's records, page by page, metadata only.
extension Routes {
    struct CaseList: Encodable {
        var cases: [Row]
        var nextCursor: String?

        struct Row: Encodable {
            var caseID: String
            var state: String
            var createdAt: String
            var closedAt: String?
            var mediators: [String]
            var supervisors: [String]
            /// Live records by type, of the types the caller may read.
            var records: [String: Int]

            enum CodingKeys: String, CodingKey {
                case caseID = "case_id"
                case state
                case createdAt = "created_at"
                case closedAt = "closed_at"
                case mediators, supervisors, records
            }
        }

        enum CodingKeys: String, CodingKey {
            case cases
            case nextCursor = "next_cursor"
        }
    }

    /// `GET /v1/cases?state=&opened_from=&opened_before=&mine=&limit=&cursor=`: the cases the caller may
    /// list, newest first. The director lists every case, intake staff the cases in intake, a mediator on
    /// the roster the cases that name them; each row is checked against the authorization table
    /// (`Action.listCases`), and counts only the record types the caller may read in that case.
    func listCases(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let query = try Listing.query(
            request, allowed: ["state", "opened_from", "opened_before", "mine", "limit", "cursor"])
        let state = try query["state"].map { text throws(CaseVaultError) in
            guard let state = CaseState(rawValue: text) else {
                throw CaseVaultError(
                    .invalidField, "state must be one of intake, agreement, session, closed", field: "state")
            }
            return state
        }
        let openedFrom = try Listing.time(query, "opened_from")
        let openedBefore = try Listing.time(query, "opened_before")
        let mine = try Listing.flag(query, "mine")
        let limit = try Listing.limit(query)
        let after = try Listing.cursor(query, CaseListCursor.init(text:))
        let (roles, uid) = (context.roles, context.uid)
        let (rows, onRoster) = try await self.run { store throws(CaseVaultError) in
            try store.listCases(rosterUID: Self.rosterUID(context)) { onRoster in
                let visibility = CaseVisibility(
                    everyCase: roles.contains(.director), inIntake: roles.contains(.intake),
                    mediator: roles.contains(.mediator) && onRoster ? uid : nil,
                    supervisor: roles.contains(.supervisor) && onRoster ? uid : nil)
                return CaseQuery(
                    visibility: visibility, state: state, openedFrom: openedFrom, openedBefore: openedBefore,
                    assignedTo: mine ? uid : nil, limit: limit, after: after)
            }
        }
        var list = CaseList(cases: [], nextCursor: nil)
        for row in rows {
            let summary = row.summary
            var scope = Self.scope(summary, context, onRoster: onRoster)
            // The table decides each row, whatever the query selected; a row it refuses means the query
            // and the table disagree, and nothing of the page is shown (its cursor would name that case).
            scope.caseState = summary.state
            guard Authorization.permits(roles, .listCases, scope: scope) else {
                context.logger.error("the case list's query selected a case the authorization table refuses")
                throw CaseVaultError(.storageFailure, "the daemon failed to list the cases; see its log")
            }
            let types = Self.readableTypes(roles, scope)
            let readable = row.liveRecords.filter { types.contains($0.key) }
            list.cases.append(
                CaseList.Row(
                    caseID: summary.id.rawValue, state: summary.state.rawValue,
                    createdAt: JSONResponse.time(summary.createdAt), closedAt: summary.closedAt.map(JSONResponse.time),
                    mediators: summary.mediators.map(Users.name), supervisors: summary.supervisors.map(Users.name),
                    records: Dictionary(uniqueKeysWithValues: readable.map { ($0.key.rawValue, $0.value) })))
        }
        if rows.count == limit, let last = rows.last?.summary {
            list.nextCursor = CaseListCursor(openedAt: last.createdAt, id: last.id).text
        }
        return try JSONResponse.make(list)
    }

    struct RecordList: Encodable {
        var caseID: String
        var records: [RecordSummary]
        var nextCursor: String?

        enum CodingKeys: String, CodingKey {
            case caseID = "case_id"
            case records
            case nextCursor = "next_cursor"
        }
    }

    /// `GET /v1/cases/{case_id}/records?type=&limit=&cursor=`: the case's live records that the caller may
    /// read, in filing order, metadata only. The director and the case's mediators and supervisors may call
    /// it (`listRecords`); each type is listed only to those the table lets read it (session notes to the
    /// case's mediators, disclosures to the director, debriefs to both and the supervisors).
    func listCaseRecords(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let id = try self.caseID(context)
        let query = try Listing.query(request, allowed: ["type", "limit", "cursor"])
        let type = try query["type"].map { text throws(CaseVaultError) in
            guard let type = RecordType(rawValue: text), RecordType.fileable.contains(type) else {
                throw CaseVaultError(.invalidField, "type must be a record type a client files", field: "type")
            }
            return type
        }
        let limit = try Listing.limit(query)
        let after = try Listing.cursor(query, RecordListCursor.init(text:))
        let roles = context.roles
        let (records, next) = try await self.run { store throws(CaseVaultError) in
            let scope = try Self.authorize(.listRecords, case: id, context, store).scope
            let readable = Self.readableTypes(roles, scope).filter { type == nil || type == $0 }
            return try store.liveRecords(caseID: id, types: readable, after: after, limit: limit)
        }
        return try JSONResponse.make(
            RecordList(caseID: id.rawValue, records: records.map(RecordSummary.init), nextCursor: next?.text))
    }
}

/// The query parameters of the list routes, each checked: an unknown one, one given twice or a value out
/// of range is a 400 `invalid-field` that names it.
enum Listing {
    static func query(_ request: Request, allowed: Set<String>) throws(CaseVaultError) -> [String: String] {
        var values: [String: String] = [:]
        for (name, value) in request.uri.queryParameters {
            let name = String(name)
            guard allowed.contains(name) else {
                throw CaseVaultError(
                    .invalidField,
                    "this route takes only the query parameters \(allowed.sorted().joined(separator: ", "))")
            }
            guard values.updateValue(String(value), forKey: name) == nil else {
                throw CaseVaultError(.invalidField, "\(name) is given more than once", field: name)
            }
        }
        return values
    }

    static func limit(_ query: [String: String]) throws(CaseVaultError) -> Int {
        guard let text = query["limit"] else { return CaseQuery.defaultLimit }
        guard text.utf8.count <= 3, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }), text.first != "0",
            let limit = Int(text), CaseQuery.limits.contains(limit)
        else {
            throw CaseVaultError(
                .invalidField,
                "limit must be a whole number from \(CaseQuery.limits.lowerBound) to \(CaseQuery.limits.upperBound)",
                field: "limit")
        }
        return limit
    }

    /// The `cursor` parameter, read by `parse`: a `next_cursor` the same route returned, or none.
    static func cursor<Cursor>(_ query: [String: String], _ parse: (String) -> Cursor?) throws(CaseVaultError)
        -> Cursor?
    {
        guard let text = query["cursor"] else { return nil }
        guard let cursor = parse(text) else {
            throw CaseVaultError(.invalidField, "cursor must be a next_cursor this route returned", field: "cursor")
        }
        return cursor
    }

    static func time(_ query: [String: String], _ name: String) throws(CaseVaultError) -> Int64? {
        try query[name].map { text throws(CaseVaultError) in
            guard let milliseconds = Timestamp.milliseconds(parsing: text) else {
                throw CaseVaultError(
                    .invalidField, "\(name) must be a date (2026-03-01) or an RFC 3339 date-time", field: name)
            }
            return milliseconds
        }
    }

    static func flag(_ query: [String: String], _ name: String) throws(CaseVaultError) -> Bool {
        switch query[name] {
        case nil, "false": return false
        case "true": return true
        default: throw CaseVaultError(.invalidField, "\(name) must be true or false", field: name)
        }
    }
}

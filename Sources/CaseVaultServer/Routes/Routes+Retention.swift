internal import CaseVaultCore
internal import CaseVaultSealing
internal import CaseVaultStore
internal import Hummingbird

/// Retention (the sweep), legal holds and aggregate statistics (docs/API.md).
extension Routes {
    // MARK: Legal holds

    struct HoldBody: Encodable {
        var holdID: String
        var caseID: String
        var placedAt: String
        var placedBy: DestructionCertificate.AuthorisedBy
        var reason: String

        init(_ hold: LegalHold) {
            self.holdID = hold.id.rawValue
            self.caseID = hold.caseID.rawValue
            self.placedAt = JSONResponse.time(hold.placedAt)
            self.placedBy = DestructionCertificate.AuthorisedBy(hold.placedBy)
            self.reason = hold.reason
        }

        enum CodingKeys: String, CodingKey {
            case holdID = "hold_id"
            case caseID = "case_id"
            case placedAt = "placed_at"
            case placedBy = "placed_by"
            case reason
        }
    }

    struct Holds: Encodable {
        var holds: [HoldBody]
    }

    struct Released: Encodable {
        var holdID: String
        var caseID: String
        var released: Bool

        enum CodingKeys: String, CodingKey {
            case holdID = "hold_id"
            case caseID = "case_id"
            case released
        }
    }

    static var maxHoldReasonCharacters: Int { 1000 }

    /// `POST /v1/holds` `{"case_id", "reason"}` → 201 with the hold. Director.
    func placeHold(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let authority = try context.authority(.manageHolds)
        let body = try await request.jsonObject(self.configuration)
        try body.onlyFields(["case_id", "reason"])
        guard let caseID = try body.optionalIdentifier("case_id", as: CaseID.self) else {
            throw CaseVaultError(.missingField, "case_id is required (the case to hold)", field: "case_id")
        }
        let reason = try body.requireText("reason")
        guard reason.count <= Self.maxHoldReasonCharacters else {
            throw body.mistyped("reason", "at most \(Self.maxHoldReasonCharacters) characters")
        }
        let hold = try await self.runSealed { vault throws(CaseVaultError) in
            try vault.placeHold(on: caseID, reason: reason, authority: authority)
        }
        context.audit?.created("hold_id", hold.id.rawValue)
        return try JSONResponse.make(HoldBody(hold), status: .created)
    }

    /// `GET /v1/holds`: the standing holds, oldest first. Director.
    func listHolds(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let holds = try await self.runSealed { vault throws(CaseVaultError) in try vault.holds() }
        return try JSONResponse.make(Holds(holds: holds.map(HoldBody.init)))
    }

    /// `DELETE /v1/holds/{hold_id}`: releases a hold; 404 for an unknown or already released one. Director.
    func releaseHold(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let id = try HoldID(context.parameters.get("hold_id") ?? "")
        let caseID = try await self.run { store throws(CaseVaultError) in try store.releaseHold(id) }
        return try JSONResponse.make(Released(holdID: id.rawValue, caseID: caseID.rawValue, released: true))
    }

    // MARK: The sweep

    struct SweepBody: Encodable {
        struct Counts: Encodable {
            var disposed: Int
            var heldBack: Int
            var alreadyGone: Int

            init(_ counts: SweepReport.Counts) {
                self.disposed = counts.disposed
                self.heldBack = counts.heldBack
                self.alreadyGone = counts.alreadyGone
            }

            enum CodingKeys: String, CodingKey {
                case disposed
                case heldBack = "held_back"
                case alreadyGone = "already_gone"
            }
        }

        var dryRun: Bool
        var asOf: String
        var complete: Bool
        var certificates: Int
        var byType: [String: Counts]
        var totals: Counts
        var backupKeysDestroyed: Int

        init(_ report: SweepReport, backupKeysDestroyed: Int) {
            self.backupKeysDestroyed = backupKeysDestroyed
            self.dryRun = report.dryRun
            self.asOf = JSONResponse.time(report.asOf)
            self.complete = report.complete
            self.certificates = report.certificates
            self.byType = Dictionary(
                uniqueKeysWithValues: RecordType.allCases.map { ($0.rawValue, Counts(report.byType[$0] ?? .init())) }
            )
            self.totals = Counts(report.totals)
        }

        enum CodingKeys: String, CodingKey {
            case dryRun = "dry_run"
            case asOf = "as_of"
            case complete, certificates
            case byType = "by_type"
            case totals
            case backupKeysDestroyed = "backup_keys_destroyed"
        }
    }

    /// `POST /v1/admin/sweep` `{"dry_run"?, "limit"?}` (an empty body is `{}`): disposes every record
    /// whose retention has run out and that no hold covers, and reports counts by type; then, on the local
    /// store, destroys the backup keys older than `[backup] retention_days` and rewrites the shred ledger's
    /// copy. Operator.
    func sweep(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let authority = try context.authority(.sweep)
        let body = try await request.optionalJSONObject(self.configuration)
        try body.onlyFields(["dry_run", "limit"])
        var dryRun = false
        if let value = body["dry_run"] {
            guard case .bool(let flag) = value else { throw body.mistyped("dry_run", "true or false") }
            dryRun = flag
        }
        let (dry, most) = (dryRun, try body.optionalCount("limit", of: "records"))
        let keys = self.configuration.backupKeyFile.map(BackupKeyFile.init(path:))
        let days = self.configuration.backupRetentionDays
        let (report, destroyed) = try await self.run { store throws(CaseVaultError) in
            let report = try store.sweep(dryRun: dry, limit: most, authority: authority)
            // This daemon's backup keys past the retention, by the store's clock, on either backend.
            let destroyed =
                try keys.map { keys throws(CaseVaultError) in
                    try keys.destroy(createdBefore: store.now() - Int64(days) * 86_400_000, dryRun: dry)
                } ?? 0
            // The ledger's copy outside the data directory is the local store's.
            if !dry, let store = store as? RecordStore {
                try store.refreshShredLedgerCopy()
            }
            return (report, destroyed)
        }
        return try JSONResponse.make(SweepBody(report, backupKeysDestroyed: destroyed))
    }

    // MARK: Statistics

    struct StatisticsBody: Encodable {
        struct Row: Encodable {
            var period: String
            var counts: [Int?]
            var total: Int?
            var satisfactionMean: Double?

            func encode(to encoder: any Encoder) throws {
                var container = encoder.container(keyedBy: CodingKeys.self)
                try container.encode(self.period, forKey: .period)
                try container.encode(self.counts, forKey: .counts)
                try container.encode(self.total, forKey: .total)
                try container.encode(self.satisfactionMean, forKey: .satisfactionMean)
            }

            enum CodingKeys: String, CodingKey {
                case period, counts, total
                case satisfactionMean = "satisfaction_mean"
            }
        }

        var table: Statistics.Table

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(self.table.period.rawValue, forKey: .period)
            try container.encode(self.table.dimension.rawValue, forKey: .by)
            try container.encode(self.table.k, forKey: .k)
            try container.encode(self.table.columns, forKey: .columns)
            let rows = self.table.rows.indices.map { index in
                Row(
                    period: self.table.rows[index], counts: self.table.cells[index], total: self.table.rowTotals[index],
                    satisfactionMean: self.table.rowSatisfaction[index]
                )
            }
            try container.encode(rows, forKey: .rows)
            try container.encode(self.table.columnTotals, forKey: .columnTotals)
            try container.encode(self.table.grandTotal, forKey: .total)
            try container.encode(self.table.satisfaction, forKey: .satisfactionMean)
        }

        enum CodingKeys: String, CodingKey {
            case period, by, k, columns, rows
            case columnTotals = "column_totals"
            case total
            case satisfactionMean = "satisfaction_mean"
        }
    }

    /// `GET /v1/stats?period=month|quarter|year&by=dispute_category|outcome`: counts of cases by period
    /// opened and category or outcome, with totals and mean satisfaction; one table of the family of six,
    /// suppressed together as of the daemon's clock (`null` where suppressed). Statistician and director.
    func statistics(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let query = request.uri.queryParameters
        for (name, _) in query where name != "period" && name != "by" {
            throw CaseVaultError(.invalidField, "the statistics take only the query parameters period and by")
        }
        let periodText = query.get("period") ?? Statistics.Period.year.rawValue
        guard let period = Statistics.Period(rawValue: periodText) else {
            throw CaseVaultError(.invalidField, "period must be one of: month, quarter, year", field: "period")
        }
        let byText = query.get("by") ?? Statistics.Dimension.category.rawValue
        guard let dimension = Statistics.Dimension(rawValue: byText) else {
            throw CaseVaultError(.invalidField, "by must be one of: dispute_category, outcome", field: "by")
        }
        let k = self.configuration.statisticsK
        let now = self.audit.clock()
        let table = try await self.runSealed { vault throws(CaseVaultError) in
            Statistics.family(try vault.statisticsFacts(), k: k, now: now).table(period, by: dimension)
        }
        return try JSONResponse.make(StatisticsBody(table: table))
    }
}

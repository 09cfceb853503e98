internal import CaseVaultAudit
internal import CaseVaultConfiguration
internal import CaseVaultCore
internal import CaseVaultSealing
internal import CaseVaultStore
internal import Foundation
internal import Hummingbird
internal import NIOCore

/// The route handlers. The router has written the request's audit entry and made the row's check before a
/// handler runs (`API.table`); a handler whose check depends on a case or record asks the table again for
/// the one it looks up (`authorize(_:case:_:_:)`). Store calls that may wait on a flush run on the blocking
/// pool.
struct Routes<Storage: ServedStorage>: Sendable {
    let keeper: VaultKeeper<Storage>
    let audit: AuditLog
    let configuration: ServerConfiguration
    let pool: BlockingPool
    let metrics: ServerMetrics
    /// Where a failed integrity check is logged: once a second at most (`LogThrottle`).
    let integrityLog: LogThrottle

    /// Runs a store call on the blocking pool.
    func run<T: Sendable>(_ body: @escaping @Sendable (Storage) throws(CaseVaultError) -> T) async throws -> T {
        let store = try self.store
        return try await self.pool.run { try body(store) }
    }

    /// Runs a call of the sealing layer (content sealed or opened) on the blocking pool.
    func runSealed<T: Sendable>(
        _ body: @escaping @Sendable (Vault<Storage>) throws(CaseVaultError) -> T
    ) async throws -> T {
        let vault = try self.keeper.vault()
        return try await self.pool.run { try body(vault) }
    }

    /// The open store; `sealed` (503) while the vault is sealed.
    var store: Storage {
        get throws(CaseVaultError) { try self.keeper.store() }
    }

    /// What the caller is to `summary`'s case: an assigned mediator or supervisor only while on the roster,
    /// so that removing them from the roster ends their access at their next request. Called inside `run`,
    /// so that the lookups and the decision take one trip to the blocking pool.
    static func scope(_ summary: CaseSummary, _ context: CaseVaultContext, _ store: Storage) throws(CaseVaultError)
        -> AccessScope
    {
        guard Self.namesMediator(summary, context) || Self.namesSupervisor(summary, context) else { return .none }
        return Self.scope(summary, context, onRoster: try store.isOnRoster(context.uid))
    }

    /// `scope` when the roster was read already (in the same trip as the case).
    static func scope(_ summary: CaseSummary, _ context: CaseVaultContext, onRoster: Bool) -> AccessScope {
        AccessScope(
            assignedMediator: onRoster && Self.namesMediator(summary, context),
            assignedSupervisor: onRoster && Self.namesSupervisor(summary, context))
    }

    /// The uid whose place on the roster a decision needs: the caller's, when a role of theirs is assigned
    /// to cases (mediator, supervisor).
    static func rosterUID(_ context: CaseVaultContext) -> UInt32? {
        context.roles.contains(.mediator) || context.roles.contains(.supervisor) ? context.uid : nil
    }

    /// Whether the caller holds the mediator role and the case names them (the roster is asked apart).
    static func namesMediator(_ summary: CaseSummary, _ context: CaseVaultContext) -> Bool {
        context.roles.contains(.mediator) && summary.mediators.contains(context.uid)
    }

    /// Whether the caller holds the supervisor role and the case names them among its supervisors.
    static func namesSupervisor(_ summary: CaseSummary, _ context: CaseVaultContext) -> Bool {
        context.roles.contains(.supervisor) && summary.supervisors.contains(context.uid)
    }

    /// Looks up case `id`, asks the table whether the caller may perform `action` on it, and returns the
    /// case, who allowed it (for destruction certificates) and what the caller is to the case (the roster
    /// read once).
    @discardableResult
    static func authorize(
        _ action: Action, case id: CaseID, _ context: CaseVaultContext, _ store: Storage
    ) throws(CaseVaultError) -> (summary: CaseSummary, authority: Authority, scope: AccessScope) {
        let summary = try store.caseSummary(id)
        let scope = try Self.scope(summary, context, store)
        return (summary, try context.authority(action, scope: scope), scope)
    }

    /// The record types a caller holding `roles` may read in a case where they are `scope`: what the case's
    /// views and lists show them, and count.
    static func readableTypes(_ roles: Set<Role>, _ scope: AccessScope) -> Set<RecordType> {
        Set(RecordType.fileable.filter { Authorization.permits(roles, .reading($0), scope: scope) })
    }

    /// The case named by the `case_id` path parameter.
    func caseID(_ context: CaseVaultContext) throws(CaseVaultError) -> CaseID {
        try CaseID(context.parameters.get("case_id") ?? "")
    }

    /// The record named by the `record_id` path parameter.
    func recordID(_ context: CaseVaultContext) throws(CaseVaultError) -> RecordID {
        try RecordID(context.parameters.get("record_id") ?? "")
    }

    // MARK: Open routes

    struct Health: Encodable {
        var status: String
        var sealed: Bool
        /// Why the daemon cannot serve, when it cannot.
        var reason: String?
    }

    /// 200 while the daemon can serve, sealed or not (`sealed` says which); 503 with the reason while it
    /// refuses everything (the audit log cannot be written, or the index lost commits and the daemon stops).
    func health(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let sealed = self.keeper.isSealed
        if let failure = self.audit.failure {
            return try JSONResponse.make(
                Health(status: "audit-unavailable", sealed: sealed, reason: Self.auditReason(failure)),
                status: .serviceUnavailable
            )
        }
        if self.indexLost {
            return try JSONResponse.make(
                Health(status: "storage-unavailable", sealed: sealed, reason: Self.storageReason),
                status: .serviceUnavailable
            )
        }
        return try JSONResponse.make(Health(status: "ok", sealed: sealed))
    }

    static func auditReason(_ failure: String) -> String {
        "the audit log cannot be written (\(failure)); every other request is refused until it can"
    }

    /// Whether the store's index lost commits the disk refused (`VaultKeeper.indexLost`).
    var indexLost: Bool { self.keeper.indexLost }

    static var storageReason: String {
        "the disk refused a write of the index; every request is refused, and the daemon stops so that its next start rebuilds the index"
    }

    struct WhoAmI: Encodable {
        var uid: UInt32
        var gid: UInt32
        var groups: [UInt32]
        var roles: [String]
    }

    func whoami(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let identity = context.identity!
        return try JSONResponse.make(
            WhoAmI(
                uid: identity.uid, gid: identity.gid, groups: identity.groups,
                roles: context.roles.sorted().map(\.description))
        )
    }

    struct Status: Encodable {
        var state: String
        var sealed: Bool
        var reason: String?
        var audit: AuditStatus
        var keys: KeyStatus
    }

    struct AuditStatus: Encodable {
        var entries: UInt64
        var writable: Bool
        /// Why the anchor in the index could not be moved on the last time it was due (the log itself is
        /// fine; the next flush tries again).
        var anchorFailure: String?
        /// Why the log could not move to a new file the last time it was due (it goes on in the same file).
        var rotationFailure: String?

        enum CodingKeys: String, CodingKey {
            case entries, writable
            case anchorFailure = "anchor_failure"
            case rotationFailure = "rotation_failure"
        }
    }

    struct KeyStatus: Encodable {
        /// `fixed` (file or credential) or `passphrase`.
        var source: String
        var initialised: Bool
        /// While an unseal by shares is under way.
        var shares: Int?
        var threshold: Int?
        /// While unsealed: the epoch new keys are wrapped under, and every epoch not yet retired (more
        /// than one while a rotation is under way); on PostgreSQL, the erase epochs (`keyEpochs`).
        var epoch: UInt64?
        var activeEpochs: [UInt64]?

        enum CodingKeys: String, CodingKey {
            case source, initialised, shares, threshold, epoch
            case activeEpochs = "active_epochs"
        }
    }

    func status(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let failure = self.audit.failure
        let sealed = self.keeper.isSealed
        let progress = self.keeper.shareProgress
        let source: String
        switch self.keeper.source {
        case .fixed: source = "fixed"
        case .passphrase: source = "passphrase"
        }
        let indexLost = self.indexLost
        let state =
            failure != nil
            ? "audit-unavailable"
            : indexLost
                ? "storage-unavailable"
                : sealed ? (self.keeper.isInitialised ? "sealed" : "uninitialised") : "serving"
        let epochs =
            sealed
            ? nil
            : try? await self.run { store throws(CaseVaultError) in try store.keyEpochs() }
        return try JSONResponse.make(
            Status(
                state: state,
                sealed: sealed,
                reason: failure.map(Self.auditReason) ?? (indexLost ? Self.storageReason : nil),
                audit: AuditStatus(
                    entries: self.audit.entries, writable: failure == nil, anchorFailure: self.audit.anchorFailure,
                    rotationFailure: self.audit.rotationFailure
                ),
                keys: KeyStatus(
                    source: source, initialised: self.keeper.isInitialised, shares: progress?.received,
                    threshold: progress?.threshold,
                    epoch: epochs?.0, activeEpochs: epochs?.1
                )
            )
        )
    }
}

/// JSON responses with sorted keys and RFC 3339 times.
enum JSONResponse {
    static func make(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Self.raw(ByteBuffer(bytes: try encoder.encode(value)), status: status)
    }

    static func raw(_ body: ByteBuffer, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: body))
    }

    /// Milliseconds since the epoch as RFC 3339.
    static func time(_ milliseconds: Int64) -> String {
        Timestamp.rfc3339(milliseconds)
    }
}

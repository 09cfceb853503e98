internal import CaseVaultAudit
internal import CaseVaultConfiguration
internal import CaseVaultCore
internal import CaseVaultSealing
internal import CaseVaultStore
public import Hummingbird
internal import NIOCore

/// Every route of the API in one table, with its policy: who may call it, whether a sealed daemon serves
/// it, and how it is audited. The router applies the policy before any handler runs, so that no handler
/// can forget it; a test holds the table against `docs/openapi.yaml` and against the audit log's list of
/// what may be logged without a MAC.
public enum API {
    public struct Route: Hashable, Sendable, CustomStringConvertible {
        public var method: HTTPRequest.Method
        /// The path with `{parameter}` placeholders, as in the OpenAPI document.
        public var path: String

        public var description: String { "\(self.method.rawValue) \(self.path)" }
    }

    /// Who may call a route: asked of the authorization table by the router, before the handler runs.
    enum Access: Sendable {
        /// The whole check: the action is decided by the caller's roles alone.
        case action(Action)
        /// The check before any id is looked up: the caller might perform one of these on some case, so
        /// that a caller who never may learns nothing about which ids exist. The handler then asks the
        /// table for the case it looks up (`Routes.authorize`, `Routes.authorizeReading`).
        case perCase([Action])
    }

    /// Whether a sealed daemon answers the route; every other route gets 503 `sealed`.
    enum WhileSealed: Sendable {
        case served
        case refused
    }

    /// How a route is audited.
    enum Auditing: Sendable {
        /// The request entry is written before the route acts, or the route does not act
        /// (503 `audit-unavailable`).
        case beforeActing
        /// The route answers even when the audit log cannot be written, so that it can say why; it acts on
        /// nothing.
        case whenWritable
    }

    typealias Handler = @Sendable (Request, CaseVaultContext) async throws -> Response

    /// One row of the table, its handler taken from the routes over a storage.
    struct Endpoint<Storage: ServedStorage>: Sendable {
        var route: Route
        var access: Access
        var whileSealed: WhileSealed
        var auditing: Auditing
        /// The store operation the route is, counted apart in the metrics.
        var operation: ServerMetrics.Operation?
        var handler: @Sendable (Routes<Storage>) -> Handler

        init(
            _ method: HTTPRequest.Method, _ path: String, _ access: Access, whileSealed: WhileSealed = .refused,
            auditing: Auditing = .beforeActing, operation: ServerMetrics.Operation? = nil,
            _ handler: @escaping @Sendable (Routes<Storage>) -> Handler
        ) {
            self.route = Route(method: method, path: path)
            self.access = access
            self.whileSealed = whileSealed
            self.auditing = auditing
            self.operation = operation
            self.handler = handler
        }
    }

    /// Filing a record of any type a client files, and attaching to one.
    static let filing: [Action] = [
        .fileIntakeForm, .fileAgreement, .fileSessionNote, .fileFinalAgreement, .fileEvaluation, .fileDisclosure,
        .fileDebrief,
    ]
    /// Reading a record of any type, and its attachment.
    static let reading: [Action] = [.readRecord, .readSessionNote, .readDisclosure, .readDebrief]

    /// The routes, their policy and the handler of each, for routes over `Storage`.
    static func table<Storage: ServedStorage>(_: Storage.Type = Storage.self) -> [Endpoint<Storage>] {
        [

            Endpoint(.get, "/v1/health", .action(.health), whileSealed: .served, auditing: .whenWritable) { $0.health },
            Endpoint(.get, "/v1/whoami", .action(.whoami)) { $0.whoami },
            Endpoint(.get, "/v1/admin/status", .action(.status), whileSealed: .served, auditing: .whenWritable) {
                $0.status
            },
            Endpoint(.get, "/v1/metrics", .action(.readMetrics), whileSealed: .served, auditing: .whenWritable) {
                $0.metricsExposition
            },
            Endpoint(.post, "/v1/admin/init", .action(.initialise), whileSealed: .served) { $0.initialise },
            Endpoint(.post, "/v1/admin/unseal", .action(.unseal), whileSealed: .served) { $0.unseal },
            Endpoint(.post, "/v1/admin/seal", .action(.seal), whileSealed: .served) { $0.seal },
            Endpoint(.post, "/v1/admin/rotate", .action(.rotate)) { $0.rotate },
            Endpoint(.post, "/v1/admin/backup", .action(.backup)) { $0.backup },
            Endpoint(.post, "/v1/admin/restore", .action(.restore)) { $0.restore },
            Endpoint(.get, "/v1/admin/ledger", .action(.backup)) { $0.ledger },
            Endpoint(.post, "/v1/admin/daemons/{daemon}/forget", .action(.forgetDaemon)) { $0.forgetDaemon },
            Endpoint(.post, "/v1/cases", .action(.openCase)) { $0.openCase },
            Endpoint(.get, "/v1/cases", .perCase([.listCases])) { $0.listCases },
            Endpoint(.get, "/v1/cases/{case_id}", .perCase([.readCase])) { $0.readCase },
            Endpoint(.get, "/v1/cases/{case_id}/participants", .perCase([.readCase])) { $0.readParticipants },
            Endpoint(.get, "/v1/cases/{case_id}/records", .perCase([.listRecords])) { $0.listCaseRecords },
            Endpoint(.post, "/v1/cases/{case_id}/records", .perCase(Self.filing), operation: .put) { $0.fileRecord },
            Endpoint(.post, "/v1/cases/{case_id}/close", .perCase([.closeCase])) { $0.closeCase },
            Endpoint(.put, "/v1/cases/{case_id}/mediators", .action(.assignMediators)) { $0.assignMediators },
            Endpoint(.put, "/v1/cases/{case_id}/supervisors", .action(.assignSupervisors)) { $0.assignSupervisors },
            Endpoint(.get, "/v1/records/{record_id}", .perCase(Self.reading), operation: .get) { $0.readRecord },
            Endpoint(
                .delete, "/v1/records/{record_id}", .perCase([.shredRecord, .shredSessionNote]), operation: .shred
            ) {
                $0.shredRecord
            },
            Endpoint(.put, "/v1/records/{record_id}/attachment", .perCase(Self.filing)) { $0.putAttachment },
            Endpoint(.get, "/v1/records/{record_id}/attachment", .perCase(Self.reading)) { $0.getAttachment },
            Endpoint(.get, "/v1/certificates", .action(.readCertificates)) { $0.listCertificates },
            Endpoint(.get, "/v1/certificates/public-key", .action(.readCertificateKey)) { $0.certificateKey },
            Endpoint(.get, "/v1/certificates/{certificate_id}", .action(.readCertificates)) { $0.readCertificate },
            Endpoint(.post, "/v1/holds", .action(.manageHolds)) { $0.placeHold },
            Endpoint(.get, "/v1/holds", .action(.manageHolds)) { $0.listHolds },
            Endpoint(.delete, "/v1/holds/{hold_id}", .action(.manageHolds)) { $0.releaseHold },
            Endpoint(.post, "/v1/admin/sweep", .action(.sweep), operation: .sweep) { $0.sweep },
            Endpoint(.get, "/v1/stats", .action(.readStatistics)) { $0.statistics },
            Endpoint(.get, "/v1/audit/verify", .action(.verifyAudit)) { $0.verifyAudit },
            Endpoint(.get, "/v1/audit/entries", .action(.readAudit)) { $0.auditEntries },
            Endpoint(.get, "/v1/roster/mediators", .action(.manageRoster)) { $0.listRoster },
            Endpoint(.get, "/v1/roster/mediators/{user}", .action(.manageRoster)) { $0.readRosterEntry },
            Endpoint(.put, "/v1/roster/mediators/{user}", .action(.manageRoster)) { $0.addToRoster },
            Endpoint(.delete, "/v1/roster/mediators/{user}", .action(.manageRoster)) { $0.removeFromRoster },
        ]
    }

    /// The routes the server answers.
    public static var routes: [Route] { Self.policy.map(\.route) }

    /// The table's policy, which is the same whatever the storage.
    static var policy: [Endpoint<RecordStore>] { Self.table(RecordStore.self) }

    /// The routes a sealed daemon answers.
    public static var servedWhileSealed: Set<Route> {
        Set(Self.policy.filter { $0.whileSealed == .served }.map(\.route))
    }

    /// The routes that answer when the audit log cannot be written.
    public static var answeredWithoutAudit: Set<Route> {
        Set(Self.policy.filter { $0.auditing == .whenWritable }.map(\.route))
    }

    /// Whether every row's access agrees with the authorization table: a whole check only for an action the
    /// caller's roles decide alone, a per-case check only when some action of it looks at the case. The
    /// descriptions of the rows that do not (none: a test holds it).
    public static var accessMismatches: [String] {
        Self.policy.compactMap { endpoint in
            switch endpoint.access {
            case .action(let action):
                return Authorization.dependsOnlyOnRoles(action)
                    ? nil : "\(endpoint.route) checks \(action) without its case"
            case .perCase(let actions):
                return actions.isEmpty || actions.allSatisfy(Authorization.dependsOnlyOnRoles)
                    ? "\(endpoint.route) defers a check no case decides" : nil
            }
        }
    }

    /// The methods a path that exists but does not take them answers with 405.
    static let methods: [HTTPRequest.Method] =
        [.get, .head, .put, .post, .delete, .patch, .options, .trace, .connect]
        + [HTTPRequest.Method("QUERY")].compactMap { $0 }
}

/// The routes, behind the problem, identity and audit middlewares, each behind its row's policy: its
/// request entry, the sealed check, then the authorization table. A method a path does not take gets 405
/// with an `Allow` header; a path no route has gets 404; both as problems.
func buildRouter<Storage: ServedStorage>(
    keeper: VaultKeeper<Storage>, audit: AuditLog, roleMap: RoleMap, configuration: ServerConfiguration,
    pool: BlockingPool,
    identities: ConnectionIdentities, budget: AuditBudget,
    identify: @escaping @Sendable (Request, any Channel) async throws -> PeerIdentity
) -> Router<CaseVaultContext> {
    let router = Router(context: CaseVaultContext.self)
    // The lines a client can bring about at will by reading damaged data: one a second at most, wherever
    // they are written.
    let integrityLog = LogThrottle(interval: .seconds(1))
    router.add(middleware: ProblemMiddleware(integrityLog: integrityLog))
    router.add(middleware: IdentityMiddleware(roleMap: roleMap, identify: identify))
    router.add(
        middleware: AuditMiddleware(
            audit: audit, budget: budget, identities: identities, readWindow: configuration.readAuditWindow))
    let metrics = ServerMetrics()
    let routes = Routes(
        keeper: keeper, audit: audit, configuration: configuration, pool: pool, metrics: metrics,
        integrityLog: integrityLog)
    var methodsByPath: [String: [HTTPRequest.Method]] = [:]
    for endpoint in API.table(Storage.self) {
        let (route, handle) = (endpoint.route, endpoint.handler(routes))
        let measured = metrics.route(route.description, operation: endpoint.operation)
        // A read's request entry is made durable within the read window (`AuditMiddleware`), not at once.
        let flushingSoon = configuration.readAuditWindow == nil || !AuditMiddleware.isRead(route.method)
        router.on(RouterPath(route.path), method: route.method) { request, context in
            let start = ContinuousClock.now
            do {
                // The request entry is written before the route acts, or the route does not act.
                try await Audited.before(endpoint, context, audit, flushingSoon: flushingSoon)
                if endpoint.whileSealed == .refused, keeper.isSealed {
                    throw CaseVaultError(
                        .sealed, "the vault is sealed: an operator must unseal it first (casevaultctl unseal)")
                }
                switch endpoint.access {
                case .action(let action): try context.authorize(action)
                case .perCase(let actions): try context.authorizeSomewhere(actions)
                }
                let response = try await handle(request, context)
                measured.record(status: Int(response.status.code), duration: ContinuousClock.now - start)
                return response
            } catch {
                measured.record(status: AuditMiddleware.classify(error).status, duration: ContinuousClock.now - start)
                throw error
            }
        }
        methodsByPath[route.path, default: []].append(route.method)
    }
    for (path, allowed) in methodsByPath {
        let allow = allowed.map(\.rawValue).joined(separator: ", ")
        for method in API.methods where !allowed.contains(method) {
            router.on(RouterPath(path), method: method) { _, _ -> Response in
                throw MethodNotAllowed(allow: allow)
            }
        }
    }
    return router
}

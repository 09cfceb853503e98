internal import CaseVaultCore
internal import CaseVaultStore
internal import CaseVaultAudit
public import Hummingbird

/// Every route of the API in one table: the router is built from it, and a test holds it against
/// `docs/openapi.yaml`. Each handler names its action and asks the authorization table before it acts.
public enum API {
    public struct Route: Hashable, Sendable, CustomStringConvertible {
        public var method: HTTPRequest.Method
        /// The path with `{parameter}` placeholders, as in the OpenAPI document.
        public var path: String

        public var description: String { "\(self.method.rawValue) \(self.path)" }
    }

    typealias Handler = @Sendable (Request, CaseVaultContext) async throws -> Response

    /// The routes and the handler of each.
    static let table: [(route: Route, handler: @Sendable (Routes) -> Handler)] = [
        (Route(method: .get, path: "/v1/health"), { routes in routes.health }),
        (Route(method: .get, path: "/v1/whoami"), { routes in routes.whoami }),
        (Route(method: .get, path: "/v1/admin/status"), { routes in routes.status }),
        (Route(method: .post, path: "/v1/admin/init"), { routes in routes.initialise }),
        (Route(method: .post, path: "/v1/admin/unseal"), { routes in routes.unseal }),
        (Route(method: .post, path: "/v1/admin/seal"), { routes in routes.seal }),
        (Route(method: .post, path: "/v1/admin/rotate"), { routes in routes.rotate }),
        (Route(method: .post, path: "/v1/admin/backup"), { routes in routes.backup }),
        (Route(method: .get, path: "/v1/admin/ledger"), { routes in routes.ledger }),
        (Route(method: .post, path: "/v1/cases"), { routes in routes.openCase }),
        (Route(method: .get, path: "/v1/cases/{case_id}"), { routes in routes.readCase }),
        (Route(method: .get, path: "/v1/cases/{case_id}/participants"), { routes in routes.readParticipants }),
        (Route(method: .post, path: "/v1/cases/{case_id}/records"), { routes in routes.fileRecord }),
        (Route(method: .post, path: "/v1/cases/{case_id}/close"), { routes in routes.closeCase }),
        (Route(method: .put, path: "/v1/cases/{case_id}/mediators"), { routes in routes.assignMediators }),
        (Route(method: .get, path: "/v1/records/{record_id}"), { routes in routes.readRecord }),
        (Route(method: .delete, path: "/v1/records/{record_id}"), { routes in routes.shredRecord }),
        (Route(method: .put, path: "/v1/records/{record_id}/attachment"), { routes in routes.putAttachment }),
        (Route(method: .get, path: "/v1/records/{record_id}/attachment"), { routes in routes.getAttachment }),
        (Route(method: .get, path: "/v1/certificates"), { routes in routes.listCertificates }),
        (Route(method: .get, path: "/v1/certificates/public-key"), { routes in routes.certificateKey }),
        (Route(method: .get, path: "/v1/certificates/{certificate_id}"), { routes in routes.readCertificate }),
        (Route(method: .post, path: "/v1/holds"), { routes in routes.placeHold }),
        (Route(method: .get, path: "/v1/holds"), { routes in routes.listHolds }),
        (Route(method: .delete, path: "/v1/holds/{hold_id}"), { routes in routes.releaseHold }),
        (Route(method: .post, path: "/v1/admin/sweep"), { routes in routes.sweep }),
        (Route(method: .get, path: "/v1/stats"), { routes in routes.statistics }),
        (Route(method: .get, path: "/v1/audit/verify"), { routes in routes.verifyAudit }),
        (Route(method: .get, path: "/v1/audit/entries"), { routes in routes.auditEntries }),
        (Route(method: .get, path: "/v1/roster/mediators"), { routes in routes.listRoster }),
        (Route(method: .get, path: "/v1/roster/mediators/{user}"), { routes in routes.readRosterEntry }),
        (Route(method: .put, path: "/v1/roster/mediators/{user}"), { routes in routes.addToRoster }),
        (Route(method: .delete, path: "/v1/roster/mediators/{user}"), { routes in routes.removeFromRoster }),
    ]

    /// What a sealed daemon answers; every other route gets 503 `sealed`. The audit log's list, so that
    /// what the daemon serves unkeyed and what the log accepts without a MAC are one list.
    static let servedWhileSealed: Set<Route> = Set(Self.routes.filter { AuditChain.servedWhileSealed.contains($0.description) })

    /// The routes the server answers.
    public static var routes: [Route] { Self.table.map(\.route) }

    /// The methods a path that exists but does not take them answers with 405.
    static let methods: [HTTPRequest.Method] = [.get, .head, .put, .post, .delete, .patch, .options, .trace, .connect]
        + [HTTPRequest.Method("QUERY")].compactMap { $0 }
}

/// The routes, behind the problem and identity middlewares. A method a path does not take gets 405 with
/// an `Allow` header; a path no route has gets 404; both as problems.
func buildRouter(
    keeper: VaultKeeper, audit: AuditLog, roleMap: RoleMap, configuration: ServerConfiguration, pool: BlockingPool,
    identities: ConnectionIdentities, budget: AuditBudget
) -> Router<CaseVaultContext> {
    let router = Router(context: CaseVaultContext.self)
    router.add(middleware: ProblemMiddleware())
    router.add(middleware: IdentityMiddleware(roleMap: roleMap, identities: identities))
    router.add(middleware: AuditMiddleware(audit: audit, budget: budget, identities: identities))
    let routes = Routes(keeper: keeper, audit: audit, configuration: configuration, pool: pool)
    var methodsByPath: [String: [HTTPRequest.Method]] = [:]
    for (route, handler) in API.table {
        let handle = handler(routes)
        router.on(RouterPath(route.path), method: route.method) { request, context in
            // The request entry is on disk before the route acts, or the route does not act.
            try await Audited.before(route, context, audit)
            if !API.servedWhileSealed.contains(route), keeper.isSealed {
                throw CaseVaultError(.sealed, "the vault is sealed: an operator must unseal it first (casevaultctl unseal)")
            }
            return try await handle(request, context)
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

public import CaseVaultCore
public import CaseVaultStore
internal import Foundation
public import Hummingbird
public import Logging

/// Builds the HTTP application over the Unix socket: the one builder that `casevaultd` and the tests use.
public func buildApplication(
    configuration: ServerConfiguration,
    store: RecordStore,
    roleMap: RoleMap,
    logger: Logger
) throws(CaseVaultError) -> some ApplicationProtocol {
    try SocketPath.prepare(configuration.socketPath, group: configuration.socketGroup)
    let router = buildRouter(store: store, roleMap: roleMap)
    let socketPath = configuration.socketPath
    let socketGroup = configuration.socketGroup
    return Application(
        router: router,
        configuration: ApplicationConfiguration(
            address: .unixDomainSocket(path: configuration.socketPath),
            serverName: nil
        ),
        onServerRunning: { _ in
            // The daemon's umask (0077) creates the socket 0600; widening it to its clients' group is the
            // one step left. If it fails the socket stays owner-only: closed, not open.
            do throws(CaseVaultError) {
                try SocketPath.restrict(socketPath, group: socketGroup)
                logger.info("serving", metadata: ["socket.path": "\(socketPath)"])
            } catch {
                logger.error("the socket stays owner-only", metadata: ["error.code": "\(error.code.rawValue)"])
            }
        },
        logger: logger
    )
}

/// The routes, behind the problem and identity middlewares.
public func buildRouter(store: RecordStore, roleMap: RoleMap) -> Router<CaseVaultContext> {
    let router = Router(context: CaseVaultContext.self)
    router.add(middleware: ProblemMiddleware())
    router.add(middleware: IdentityMiddleware(roleMap: roleMap))
    let routes = Routes(store: store)
    router.get("/v1/health") { request, context in try routes.health(request, context) }
    router.get("/v1/whoami") { request, context in try routes.whoami(request, context) }
    router.get("/v1/admin/status") { request, context in try routes.status(request, context) }
    return router
}

/// Route handlers. Each names its action and asks the authorization table first.
struct Routes: Sendable {
    let store: RecordStore

    struct Health: ResponseEncodable {
        var status: String
        var sealed: Bool
    }

    func health(_ request: Request, _ context: CaseVaultContext) throws -> Health {
        try context.authorize(.health)
        return Health(status: "ok", sealed: false)
    }

    struct WhoAmI: ResponseEncodable {
        var uid: UInt32
        var gid: UInt32
        var groups: [UInt32]
        var roles: [String]
    }

    func whoami(_ request: Request, _ context: CaseVaultContext) throws -> WhoAmI {
        try context.authorize(.whoami)
        let identity = context.identity!
        return WhoAmI(uid: identity.uid, gid: identity.gid, groups: identity.groups, roles: context.roles.sorted().map(\.description))
    }

    struct Status: ResponseEncodable {
        var state: String
        var sealed: Bool
    }

    func status(_ request: Request, _ context: CaseVaultContext) throws -> Status {
        try context.authorize(.status)
        return Status(state: "serving", sealed: false)
    }
}

package import CaseVaultAudit
package import CaseVaultConfiguration
package import CaseVaultCore
package import CaseVaultSealing
package import CaseVaultStore
internal import Foundation
package import Hummingbird
internal import HummingbirdCore
package import Logging
internal import NIOCore
package import ServiceLifecycle

/// Builds the HTTP application over the Unix socket: the one builder that `casevaultd` uses. With
/// `listeningSocket` (socket activation) it serves the socket systemd bound and leaves its path and mode
/// to systemd; otherwise it binds `configuration.socketPath` itself and makes the socket 0660.
package func buildApplication<Storage: ServedStorage>(
    configuration: CaseVaultConfiguration.ServerConfiguration,
    keeper: VaultKeeper<Storage>,
    audit: AuditLog,
    roleMap: RoleMap,
    logger: Logger,
    services: [any Service] = [],
    listeningSocket: CInt? = nil,
    onReady: @escaping @Sendable () -> Void = {}
) throws(CaseVaultError) -> any Service {
    let pool = BlockingPool(threads: configuration.blockingThreads)
    let identities = ConnectionIdentities()
    let budget = AuditBudget(audit: audit)
    let router = buildRouter(
        keeper: keeper, audit: audit, roleMap: roleMap, configuration: configuration, pool: pool,
        identities: identities, budget: budget,
        identify: { _, channel in try await identities.identity(of: channel) }
    )
    let socketPath = configuration.socketPath
    let socketGroup = configuration.socketGroup
    let limiter = ConnectionLimiter(limit: configuration.maxConnections, perUser: configuration.maxConnectionsPerUser)
    let readTimeout = TimeAmount.seconds(Int64(configuration.readTimeoutSeconds))
    let http = HTTP1Channel.Configuration(
        additionalChannelHandlers: [
            IdleStateHandler(readTimeout: readTimeout),
            ConnectionLimitHandler(
                limiter: limiter, identities: identities, readTimeout: readTimeout,
                hasRole: { !roleMap.roles(for: $0).isEmpty },
                onRefusal: { uid, status, problem in
                    // A refusal before any route: one `refused` entry, within the refused peer's budget.
                    guard budget.allow(uid) else { return }
                    var entry = AuditEntry(kind: .refused, time: audit.clock())
                    entry.uid = uid
                    entry.action = "unrouted"
                    entry.status = status
                    entry.problem = problem
                    audit.record(entry)
                }
            ),
        ],
        // Idle connections and stalled requests are timed by the IdleStateHandler above and answered by
        // ConnectionLimitHandler (408 mid-request); Hummingbird's own idle timer would close a stalled
        // request without a word.
        idleTimeout: nil,
        httpDecoderConfiguration: .init(
            maxHeaderFieldSize: configuration.maxHeaderBytes,
            maxHeaderListSize: configuration.maxHeaderBytes,
            maxHeaderFieldCount: 100
        )
    )
    if let listeningSocket {
        return InheritedSocketApplication(
            responder: router.buildResponder(), http: http, socket: listeningSocket,
            services: [pool, budget] + services,
            onServerRunning: { _ in
                logger.info("serving on the socket systemd passed", metadata: ["socket.path": "\(socketPath)"])
                onReady()
            },
            logger: logger
        )
    }
    try SocketPath.prepare(configuration.socketPath, group: configuration.socketGroup)
    return Application(
        router: router,
        server: .http1(configuration: http),
        configuration: ApplicationConfiguration(
            address: .unixDomainSocket(path: configuration.socketPath),
            serverName: nil
        ),
        services: [pool, budget] + services,
        onServerRunning: { _ in
            // The daemon's umask (0077) creates the socket 0600; widening it to its clients' group is the
            // one step left. If it fails the socket stays owner-only: closed, not open.
            do throws(CaseVaultError) {
                try SocketPath.restrict(socketPath, group: socketGroup)
                logger.info("serving", metadata: ["socket.path": "\(socketPath)"])
                onReady()
            } catch {
                logger.error("the socket stays owner-only", metadata: ["error.code": "\(error.code.rawValue)"])
            }
        },
        logger: logger
    )
}

/// The same router, middlewares and services as `buildApplication`, driven in process (HummingbirdTesting's
/// router mode) instead of over a socket, with `identify` saying who sent each request where the kernel
/// would, and every request refused as unidentified when it says nobody. For tests; the daemon never
/// builds this.
package func buildInProcessApplication<Storage: ServedStorage>(
    configuration: CaseVaultConfiguration.ServerConfiguration,
    keeper: VaultKeeper<Storage>,
    audit: AuditLog,
    roleMap: RoleMap,
    logger: Logger,
    identify: @escaping @Sendable (Request) -> PeerIdentity?
) -> some ApplicationProtocol {
    let pool = BlockingPool(threads: configuration.blockingThreads)
    let budget = AuditBudget(audit: audit)
    let router = buildRouter(
        keeper: keeper, audit: audit, roleMap: roleMap, configuration: configuration, pool: pool,
        identities: ConnectionIdentities(),
        budget: budget,
        identify: { request, _ in
            guard let identity = identify(request) else { throw PeerIdentityUnavailable() }
            return identity
        }
    )
    // Driven in process only: should anyone run it as a service, it binds nothing (a socket path in a
    // directory that cannot exist), never Hummingbird's default TCP address.
    return Application(
        router: router,
        configuration: ApplicationConfiguration(
            address: .unixDomainSocket(path: "/nonexistent/casevault-in-process.sock")),
        services: [pool, budget],
        logger: logger
    )
}

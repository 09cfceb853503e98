public import CaseVaultCore
public import CaseVaultStore
internal import Foundation
public import Hummingbird
internal import HummingbirdCore
public import Logging
public import ServiceLifecycle
internal import NIOCore

/// Builds the HTTP application over the Unix socket: the one builder that `casevaultd` uses.
public func buildApplication(
    configuration: ServerConfiguration,
    store: RecordStore,
    roleMap: RoleMap,
    logger: Logger,
    services: [any Service] = [],
    onReady: @escaping @Sendable () -> Void = {}
) throws(CaseVaultError) -> some ApplicationProtocol {
    try SocketPath.prepare(configuration.socketPath, group: configuration.socketGroup)
    let pool = BlockingPool(threads: configuration.blockingThreads)
    let identities = ConnectionIdentities()
    let router = buildRouter(store: store, roleMap: roleMap, configuration: configuration, pool: pool, identities: identities)
    let socketPath = configuration.socketPath
    let socketGroup = configuration.socketGroup
    let limiter = ConnectionLimiter(limit: configuration.maxConnections)
    return Application(
        router: router,
        server: .http1(
            configuration: HTTP1Channel.Configuration(
                additionalChannelHandlers: [
                    IdleStateHandler(readTimeout: .seconds(Int64(configuration.readTimeoutSeconds))),
                    ConnectionLimitHandler(limiter: limiter, identities: identities),
                ],
                // Idle connections and stalled requests are timed by the IdleStateHandler above and
                // answered by ConnectionLimitHandler (408 mid-request); Hummingbird's own idle timer would
                // close a stalled request without a word.
                idleTimeout: nil,
                httpDecoderConfiguration: .init(
                    maxHeaderFieldSize: configuration.maxHeaderBytes,
                    maxHeaderListSize: configuration.maxHeaderBytes,
                    maxHeaderFieldCount: 100
                )
            )
        ),
        configuration: ApplicationConfiguration(
            address: .unixDomainSocket(path: configuration.socketPath),
            serverName: nil
        ),
        services: [pool] + services,
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

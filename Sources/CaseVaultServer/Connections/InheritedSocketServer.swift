internal import Hummingbird
internal import HummingbirdCore
internal import Logging
internal import NIOCore
internal import NIOExtras
internal import NIOHTTP1
internal import NIOPosix
internal import ServiceLifecycle

#if canImport(Glibc)
internal import Glibc
#endif

/// Serves the HTTP/1.1 child channel on a listening socket the service manager handed over (socket
/// activation), where Hummingbird's `Server` only binds an address of its own. The same steps as that
/// server: NIO's `ServerBootstrap.bind(_ socket:)`, one task per connection, and a graceful shutdown that
/// stops accepting and lets requests in flight finish (NIOExtras' `ServerQuiescingHelper`).
struct InheritedSocketServer<ChildChannel: ServerChildChannel>: Service {
    let childChannel: ChildChannel
    let socket: CInt
    let onServerRunning: @Sendable (any Channel) async -> Void
    let logger: Logger

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let quiescing = ServerQuiescingHelper(group: group)
        let childChannel = self.childChannel
        let logger = self.logger
        let server = try await ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .bind(self.socket) { channel in childChannel.setup(channel: channel, logger: logger) }
        await withGracefulShutdownHandler {
            await self.onServerRunning(server.channel)
            await withDiscardingTaskGroup { connections in
                do {
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            connections.addTask { await childChannel.handle(value: connection, logger: logger) }
                        }
                    }
                } catch {
                    logger.error("the listening socket failed", metadata: ["error": "\(error)"])
                }
            }
        } onGracefulShutdown: {
            quiescing.initiateShutdown(promise: nil)
        }
    }
}

/// The application served on an inherited socket: the router's responder behind Hummingbird's HTTP/1.1
/// channel, as `Application.run` wires them, with the other services beside it.
struct InheritedSocketApplication: Service {
    let responder: RouterResponder<CaseVaultContext>
    let http: HTTP1Channel.Configuration
    let socket: CInt
    let services: [any Service]
    let onServerRunning: @Sendable (any Channel) async -> Void
    let logger: Logger

    func run() async throws {
        let responder = self.responder
        let logger = self.logger
        let channel = HTTP1Channel(
            responder: { request, writer, channel in
                let context = CaseVaultContext(
                    source: ApplicationRequestContextSource(channel: channel, logger: logger))
                var response: Response
                do {
                    response = try await responder.respond(to: request, context: context)
                } catch let error as HTTPParserError {
                    throw error
                } catch {
                    // ProblemMiddleware answers every error the routes raise; this is the last resort.
                    response = Response(status: .internalServerError)
                }
                response.headers[.date] = HTTPDate.now()
                try await writer.write(response: response.head, body: response.body)
            },
            configuration: self.http
        )
        let server = InheritedSocketServer(
            childChannel: channel, socket: self.socket, onServerRunning: self.onServerRunning, logger: logger
        )
        try await ServiceGroup(configuration: .init(services: self.services + [server], logger: logger)).run()
    }
}

/// The Date header (RFC 9110 IMF-fixdate), as Hummingbird's application adds it.
enum HTTPDate {
    static func now() -> String {
        var time = time_t(0)
        _ = Glibc.time(&time)
        var parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return
            "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}

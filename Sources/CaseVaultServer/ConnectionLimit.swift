internal import CaseVaultCore
internal import HTTPTypes
internal import NIOCore
internal import NIOHTTP1
internal import NIOHTTPTypes
internal import Synchronization

/// Counts the connections being served, shared by every connection's `ConnectionLimitHandler`.
final class ConnectionLimiter: Sendable {
    let limit: Int
    private let count = Mutex(0)

    init(limit: Int) {
        self.limit = limit
    }

    /// Takes a place; `false` when every place is taken.
    func acquire() -> Bool {
        self.count.withLock { count in
            guard count < self.limit else { return false }
            count += 1
            return true
        }
    }

    func release() {
        self.count.withLock { $0 -= 1 }
    }
}

/// Admits a connection while the limiter has room. A connection over the limit has its first request
/// answered at once with a 503 `overloaded` problem and is then closed; nothing reaches the routes. A
/// request the HTTP parser refuses (a head over `max_header_bytes`, broken syntax) is answered here too,
/// as a problem, before the connection closes. So is a request whose head or body stops arriving for
/// `read_timeout_seconds` (an `IdleStateHandler` ahead of this one reports the silence): 408
/// `request-timeout`.
final class ConnectionLimitHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let limiter: ConnectionLimiter
    let identities: ConnectionIdentities
    private var admitted = false
    private var refused = false
    /// Between a request's head and its end: silence here is a slow client, not an idle connection.
    private var inRequest = false
    /// Between a request's head and its response's end: the daemon is working, the client may be silent.
    private var awaitingResponse = false

    init(limiter: ConnectionLimiter, identities: ConnectionIdentities) {
        self.limiter = limiter
        self.identities = identities
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.admitted = self.limiter.acquire()
        if self.admitted {
            self.identities.remember(context.channel)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.identities.forget(context.channel)
        if self.admitted {
            self.admitted = false
            self.limiter.release()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.refused else { return }
        if self.admitted {
            switch self.unwrapInboundIn(data) {
            case .head:
                self.inRequest = true
                self.awaitingResponse = true
            case .end: self.inRequest = false
            case .body: break
            }
            context.fireChannelRead(data)
            return
        }
        guard case .head = self.unwrapInboundIn(data) else { return }
        self.refuse(
            context, status: .serviceUnavailable, code: "overloaded",
            detail: "the daemon is serving its configured maximum of connections; retry shortly", retryAfter: true
        )
    }

    /// Silence for `read_timeout_seconds`: in the middle of a request, 408; on a kept-alive connection
    /// between requests, close it; while the daemon works on a request, nothing.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        if self.inRequest {
            self.refuse(
                context, status: .requestTimeout, code: "request-timeout",
                detail: "the request did not arrive within the configured read time; send it without pauses"
            )
        } else if !self.awaitingResponse {
            context.close(promise: nil)
        }
    }

    /// Once this handler has answered, nothing the routes write goes out.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !self.refused else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        if case .end = self.unwrapOutboundIn(data) {
            self.awaitingResponse = false
        }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        if case .headerOverflow = parserError {
            self.refuse(
                context, status: .requestHeaderFieldsTooLarge, code: "header-too-large",
                detail: "the request line and header fields are larger than the configured limit"
            )
        } else {
            self.refuse(context, status: .badRequest, code: "malformed-request", detail: "the request is not valid HTTP/1.1")
        }
    }

    /// Answers with a problem and closes the connection; once per connection.
    private func refuse(
        _ context: ChannelHandlerContext, status: HTTPResponse.Status, code: String, detail: String, retryAfter: Bool = false
    ) {
        guard !self.refused else { return }
        let body = ByteBuffer(
            string: #"{"detail":"\#(detail)","status":\#(status.code),"title":"\#(status.reasonPhrase)","type":"urn:casevault:problem:\#(code)"}"#
        )
        var head = HTTPResponse(status: status)
        head.headerFields[.contentType] = "application/problem+json"
        head.headerFields[.contentLength] = String(body.readableBytes)
        head.headerFields[.connection] = "close"
        if retryAfter {
            head.headerFields[.retryAfter] = "1"
        }
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        context.write(self.wrapOutboundOut(.body(body)), promise: nil)
        self.refused = true
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

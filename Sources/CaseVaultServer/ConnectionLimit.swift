internal import CaseVaultCore
internal import HTTPTypes
internal import NIOCore
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
/// answered at once with a 503 `overloaded` problem and is then closed; nothing reaches the routes.
final class ConnectionLimitHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let limiter: ConnectionLimiter
    private var admitted = false
    private var refused = false

    init(limiter: ConnectionLimiter) {
        self.limiter = limiter
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.admitted = self.limiter.acquire()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if self.admitted {
            self.admitted = false
            self.limiter.release()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.admitted {
            context.fireChannelRead(data)
            return
        }
        guard case .head = self.unwrapInboundIn(data), !self.refused else { return }
        self.refused = true
        let body = ByteBuffer(
            string: #"{"detail":"the daemon is serving its configured maximum of connections; retry shortly","status":503,"title":"Service Unavailable","type":"urn:casevault:problem:overloaded"}"#
        )
        var head = HTTPResponse(status: .serviceUnavailable)
        head.headerFields[.contentType] = "application/problem+json"
        head.headerFields[.contentLength] = String(body.readableBytes)
        head.headerFields[.connection] = "close"
        head.headerFields[.retryAfter] = "1"
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        context.write(self.wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

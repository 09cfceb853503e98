internal import CaseVaultConfiguration
internal import CaseVaultCore
internal import HTTPTypes
internal import NIOCore
internal import NIOHTTP1
internal import NIOHTTPTypes
internal import Synchronization

/// Counts the connections being served, in all and per uid, shared by every connection's
/// `ConnectionLimitHandler`.
final class ConnectionLimiter: Sendable {
    let limit: Int
    let perUser: Int
    private let state = Mutex(State())

    struct State {
        var count = 0
        var users: [UInt32: Int] = [:]
    }

    init(limit: Int, perUser: Int) {
        self.limit = limit
        self.perUser = perUser
    }

    /// Takes a place; `false` when every place is taken.
    func acquire() -> Bool {
        self.state.withLock { state in
            guard state.count < self.limit else { return false }
            state.count += 1
            return true
        }
    }

    func release() {
        self.state.withLock { $0.count -= 1 }
    }

    /// Takes one of `uid`'s places; `false` when it holds `perUser` already.
    func acquire(user uid: UInt32) -> Bool {
        self.state.withLock { state in
            guard state.users[uid, default: 0] < self.perUser else { return false }
            state.users[uid, default: 0] += 1
            return true
        }
    }

    func release(user uid: UInt32) {
        self.state.withLock { state in
            let left = state.users[uid, default: 1] - 1
            state.users[uid] = left > 0 ? left : nil
        }
    }
}

/// Admits a connection while the limiter has room, in all and for its uid. A connection over either
/// limit has its first request answered at once with a 503 `overloaded` problem and is then closed;
/// nothing reaches the routes. A request the HTTP parser refuses (a head over `max_header_bytes`, broken
/// syntax) is answered here too, as a problem, before the connection closes.
///
/// Time is bounded three ways, all from `read_timeout_seconds`: silence mid-request (an `IdleStateHandler`
/// ahead of this one reports it) gets 408 `request-timeout`; a head not whole within the read time of the
/// connection opening or of the last answer closes the connection; and past the read time a request must
/// have averaged `ServerConfiguration.minimumBytesPerSecond` since its head, or it gets 408, however
/// steadily its bytes trickle in. A peer that holds no role gets its answer and the connection is closed.
final class ConnectionLimitHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let limiter: ConnectionLimiter
    let identities: ConnectionIdentities
    let readTimeout: TimeAmount
    let hasRole: @Sendable (PeerIdentity) -> Bool
    /// Records a refusal made here, before any route: the peer's uid (when known), status and problem.
    let onRefusal: @Sendable (UInt32?, Int, String) -> Void
    private var admitted = false
    private var refused = false
    /// Between a request's head and its end: silence here is a slow client, not an idle connection.
    private var inRequest = false
    /// Requests whose response has not ended: the daemon is working, the client may be silent.
    private var pendingResponses = 0
    private var awaitingResponse: Bool { self.pendingResponses > 0 }
    /// The response's head is written: its route has finished (and written its audit result).
    private var responseStarted = false
    /// The uid whose place this connection holds, once the kernel has said who the peer is.
    private var user: UInt32?
    /// The peer's uid, once known (counted or not).
    private var peer: UInt32?
    private var overUserLimit = false
    private var roleless = false
    /// Whether admission was decided (once the kernel said who the peer is, or at the first head).
    private var decided = false
    /// The bytes of the current request's body so far, and the time the client has had to send them:
    /// the time a read was waiting for its data, not the time the daemon left the body unread (a route
    /// that reads slowly holds reads back).
    private var received = 0
    private var clientTime = TimeAmount.zero
    private var waitingSince: NIODeadline?
    /// When the head or request under way runs out of time (`deadlinePassed`); nil when nothing is timed.
    private var deadline: NIODeadline?
    /// The timer that looks at `deadline`, and when it fires. One per connection at most, and set again only
    /// when it would fire after the deadline: a deadline that moves later (each request's, each answer's)
    /// is a store, not a timer cancelled and scheduled twice a request.
    private var timer: (task: Scheduled<Void>, at: NIODeadline)?
    /// Set while the client takes none of what is written: the connection is closed when it fires.
    private var writeStall: Scheduled<Void>?

    init(
        limiter: ConnectionLimiter, identities: ConnectionIdentities, readTimeout: TimeAmount,
        hasRole: @escaping @Sendable (PeerIdentity) -> Bool,
        onRefusal: @escaping @Sendable (UInt32?, Int, String) -> Void
    ) {
        self.limiter = limiter
        self.identities = identities
        self.readTimeout = readTimeout
        self.hasRole = hasRole
        self.onRefusal = onRefusal
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Every connection, admitted or not, must send a whole head in time.
        self.armHeadDeadline(context)
        guard let identity = self.identities.remember(context.channel) else {
            self.admit(nil)
            return
        }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        identity.whenComplete { result in handler.value.admit(try? result.get()) }
    }

    /// Admits the connection: a place of its uid's first, then a place of everyone's, so that a user at
    /// its limit holds none of the places others need. `nil` when the peer is unknown (it is then served
    /// as no one, with roles from nothing).
    private func admit(_ identity: PeerIdentity?) {
        guard !self.decided else { return }
        self.decided = true
        if let identity {
            self.peer = identity.uid
            self.roleless = !self.hasRole(identity)
            guard self.limiter.acquire(user: identity.uid) else {
                self.overUserLimit = true
                return
            }
            self.user = identity.uid
        }
        self.admitted = self.limiter.acquire()
        if !self.admitted, let user = self.user {
            self.user = nil
            self.limiter.release(user: user)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.deadline = nil
        self.timer?.task.cancel()
        self.timer = nil
        self.writeStall?.cancel()
        self.identities.forget(context.channel)
        if let user = self.user {
            self.user = nil
            self.limiter.release(user: user)
        }
        if self.admitted {
            self.admitted = false
            self.limiter.release()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.refused else { return }
        if let since = self.waitingSince {
            self.clientTime = self.clientTime + (.now() - since)
            self.waitingSince = nil
        }
        if !self.decided, case .head = self.unwrapInboundIn(data) { self.admit(nil) }
        guard self.admitted, !self.overUserLimit else {
            guard case .head = self.unwrapInboundIn(data) else { return }
            let detail =
                self.overUserLimit
                ? "this user holds its configured maximum of connections; close one, or retry shortly"
                : "the daemon is serving its configured maximum of connections; retry shortly"
            self.refuse(context, status: .serviceUnavailable, code: "overloaded", detail: detail, retryAfter: true)
            return
        }
        switch self.unwrapInboundIn(data) {
        case .head:
            self.inRequest = true
            self.pendingResponses += 1
            self.responseStarted = false
            self.received = 0
            self.clientTime = .zero
            self.schedule(context, at: .now() + self.readTimeout)
        case .body(let bytes):
            self.received += bytes.readableBytes
        case .end:
            self.inRequest = false
            self.deadline = nil
            if !self.awaitingResponse { self.armHeadDeadline(context) }
        }
        context.fireChannelRead(data)
    }

    /// A client that stops taking an answer (a large attachment) for the read time loses the connection:
    /// it holds a place, and the daemon's buffers, for nothing.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.writeStall?.cancel()
            self.writeStall = nil
        } else if self.writeStall == nil {
            let channel = context.channel
            self.writeStall = context.eventLoop.scheduleTask(in: self.readTimeout) { channel.close(promise: nil) }
        }
        context.fireChannelWritabilityChanged()
    }

    /// A read asked for: from now until its data arrives, the time is the client's.
    func read(context: ChannelHandlerContext) {
        if self.waitingSince == nil { self.waitingSince = .now() }
        context.read()
    }

    /// The head of the next request must be whole within the read time.
    private func armHeadDeadline(_ context: ChannelHandlerContext) {
        self.schedule(context, at: .now() + self.readTimeout)
    }

    private func schedule(_ context: ChannelHandlerContext, at time: NIODeadline) {
        self.deadline = time
        // The timer under way fires first, and looks again then.
        if let timer = self.timer, timer.at <= time { return }
        self.timer?.task.cancel()
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let task = context.eventLoop.scheduleTask(deadline: time) {
            handler.value.timerFired(bound.value)
        }
        self.timer = (task, time)
    }

    /// The timer: the deadline passed, moved later since it was set (set again for then), or was lifted.
    private func timerFired(_ context: ChannelHandlerContext) {
        self.timer = nil
        guard let deadline = self.deadline else { return }
        guard deadline <= .now() else {
            self.schedule(context, at: deadline)
            return
        }
        self.deadline = nil
        self.deadlinePassed(context)
    }

    /// Waiting for a head: close. In a request: 408 unless the client has kept up the minimum rate in the
    /// time it had, in which case the check comes again when its bytes stop covering its time.
    private func deadlinePassed(_ context: ChannelHandlerContext) {
        guard !self.refused else { return }
        if self.inRequest {
            let rate = ServerConfiguration.minimumBytesPerSecond
            let covered =
                TimeAmount.seconds(Int64(self.received / rate))
                + .nanoseconds(Int64(self.received % rate) * 1_000_000_000 / Int64(rate))
            let used = self.clientTime + (self.waitingSince.map { .now() - $0 } ?? .zero)
            let allowed = self.readTimeout + covered
            if used < allowed {
                self.schedule(context, at: .now() + max(allowed - used, .milliseconds(100)))
                return
            }
            self.refuse(
                context, status: .requestTimeout, code: "request-timeout",
                detail: "the request did not arrive in time: send it without pauses, at more than 16 KiB/s"
            )
        } else if !self.awaitingResponse {
            context.close(promise: nil)
        }
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
        if case .head = self.unwrapOutboundIn(data) { self.responseStarted = true }
        switch self.unwrapOutboundIn(data) {
        case .head(var head) where self.roleless:
            // A peer with no role gets its answer, and no further use of the connection.
            head.headerFields[.connection] = "close"
            context.write(self.wrapOutboundOut(.head(head)), promise: promise)
        case .end where self.roleless:
            self.pendingResponses = max(0, self.pendingResponses - 1)
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.cascade(to: promise)
            context.write(data, promise: written)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
        case .end:
            self.pendingResponses = max(0, self.pendingResponses - 1)
            context.write(data, promise: promise)
            if !self.inRequest, !self.awaitingResponse { self.armHeadDeadline(context) }
        default:
            context.write(data, promise: promise)
        }
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
            self.refuse(
                context, status: .badRequest, code: "malformed-request", detail: "the request is not valid HTTP/1.1")
        }
    }

    /// Answers with a problem and closes the connection; once per connection. The refusal is audited: as
    /// the result of the request a route was reading (a 408 mid-request), or as a `refused` entry.
    private func refuse(
        _ context: ChannelHandlerContext, status: HTTPResponse.Status, code: String, detail: String,
        retryAfter: Bool = false
    ) {
        guard !self.refused else { return }
        // A 408 while a route reads the body is that route's result; any other refusal, one entry here.
        if status == .requestTimeout, self.inRequest, self.pendingResponses == 1, !self.responseStarted {
            self.identities.markTimedOut(context.channel)
        } else {
            self.onRefusal(self.peer, Int(status.code), code)
        }
        let body = ByteBuffer(
            string:
                #"{"detail":"\#(detail)","status":\#(status.code),"title":"\#(status.reasonPhrase)","type":"urn:casevault:problem:\#(code)"}"#
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
        // A client that does not take the answer does not keep the connection either.
        let channel = context.channel
        context.eventLoop.scheduleTask(in: self.readTimeout) { channel.close(promise: nil) }
    }
}

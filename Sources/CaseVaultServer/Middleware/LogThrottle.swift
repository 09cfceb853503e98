package import Logging
internal import Synchronization

/// At most one log line an `interval` for an event any client can repeat at will (a damaged record read
/// again and again), each saying how many were left out since the one before (`log.left_out`): the
/// daemon's log stays readable, and journald's limit for the service, past which it drops every line of
/// the daemon's, the other lines included, is not reached through it. What a burst left out is told by the
/// next line, whenever that comes; the audit log has an entry for every request.
package final class LogThrottle: Sendable {
    private let interval: Duration
    private let state = Mutex<(last: ContinuousClock.Instant?, leftOut: Int)>((nil, 0))

    package init(interval: Duration) {
        self.interval = interval
    }

    /// Logs `message` at error unless it is left out, adding `log.left_out` when lines were.
    package func error(_ logger: Logger, _ message: Logger.Message, metadata: Logger.Metadata) {
        guard let leftOut = self.admit() else { return }
        var metadata = metadata
        if leftOut > 0 { metadata["log.left_out"] = "\(leftOut)" }
        logger.error(message, metadata: metadata)
    }

    /// How many lines were left out before this one when it is to be logged (at `now`); `nil` when it is left
    /// out.
    package func admit(at now: ContinuousClock.Instant = .now) -> Int? {
        self.state.withLock { state in
            if let last = state.last, now - last < self.interval {
                state.leftOut += 1
                return nil
            }
            defer { state = (now, 0) }
            return state.leftOut
        }
    }
}

import CaseVaultServer
import Testing

/// The daemon's log line for an event a client can repeat at will (`LogThrottle`).
@Suite("Log lines a client can repeat")
struct LogThrottleTests {
    @Test("one line a second at most, the next saying how many were left out; a quiet second lets the next through")
    func oneLineASecond() {
        let throttle = LogThrottle(interval: .seconds(1))
        let start = ContinuousClock.now
        #expect(throttle.admit(at: start) == 0)
        #expect(throttle.admit(at: start + .milliseconds(10)) == nil)
        #expect(throttle.admit(at: start + .milliseconds(999)) == nil)
        #expect(throttle.admit(at: start + .milliseconds(1000)) == 2)
        #expect(throttle.admit(at: start + .milliseconds(1500)) == nil)
        #expect(throttle.admit(at: start + .seconds(5)) == 1)
        #expect(throttle.admit(at: start + .seconds(7)) == 0)
    }
}

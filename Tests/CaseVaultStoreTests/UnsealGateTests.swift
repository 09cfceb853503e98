import CaseVaultCrypto
import CaseVaultStore
import Testing

/// The unseal protocol as a state machine, on a clock of the test's own: what an operator and an attacker
/// at the socket can rely on, without Argon2id or files.
@Suite("The unseal gate")
struct UnsealGateTests {
    let start = ContinuousClock.now

    @Test("one attempt at a time; the next begins once the last has ended")
    func oneAtATime() throws {
        var gate = UnsealGate()
        try gate.begin(at: self.start)
        #expect(throws: UnsealGate.Wait.busy) { try gate.begin(at: self.start) }
        gate.end()
        try gate.begin(at: self.start)
    }

    @Test("each refusal in a row doubles the wait, up to the maximum; opening forgets them")
    func refusalsDouble() throws {
        var gate = UnsealGate()
        var now = self.start
        var delays: [Int64] = []
        for _ in 0..<12 {
            try gate.begin(at: now)
            gate.end()
            delays.append(gate.refuse(at: now, maximumDelay: 300).delayMilliseconds)
            // Just before the delay has passed the next attempt is refused, with the seconds left.
            #expect(throws: UnsealGate.Wait.throttled(seconds: 1)) {
                try gate.begin(at: now + .milliseconds(delays.last! - 500))
            }
            now += .milliseconds(delays.last!)
        }
        #expect(delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300].map { $0 * 1000 })
        #expect(gate.refusals == 12)
        #expect(throws: UnsealGate.Wait.throttled(seconds: 300)) { try gate.begin(at: now - .seconds(300)) }
        gate.opened()
        #expect(gate.refusals == 0 && gate.nextAttempt == nil)
        try gate.begin(at: self.start)
    }

    @Test("a throttle read back after a restart holds until its time")
    func throttleSurvivesARestart() throws {
        var gate = UnsealGate(refusals: 5, waitMilliseconds: 10_000, now: self.start)
        #expect(throws: UnsealGate.Wait.throttled(seconds: 10)) { try gate.begin(at: self.start) }
        try gate.begin(at: self.start + .seconds(10))
        #expect(gate.refuse(at: self.start, maximumDelay: 300).delayMilliseconds == 32_000)
    }

    @Test("shares are collected to their threshold, a repeat counts once, another split is refused and changes nothing")
    func sharesToTheThreshold() throws {
        let first = try SecretSharing.split(SecureBytes.random(count: 32), count: 5, threshold: 3)
        let other = try SecretSharing.split(SecureBytes.random(count: 32), count: 5, threshold: 3)
        var gate = UnsealGate()
        guard case .collecting(1, 3) = try gate.add(first[0]) else {
            Issue.record("one of three")
            return
        }
        guard case .collecting(1, 3) = try gate.add(first[0]) else {
            Issue.record("a repeat counts once")
            return
        }
        #expect(throws: UnsealGate.OtherSplit.self) { try gate.add(other[1]) }
        #expect(gate.shares.count == 1)
        guard case .collecting(2, 3) = try gate.add(first[3]) else {
            Issue.record("two of three")
            return
        }
        guard case .complete(let shares) = try gate.add(first[4]) else {
            Issue.record("three of three")
            return
        }
        #expect(shares.map(\.index) == [first[0].index, first[3].index, first[4].index])
        #expect(gate.shares.isEmpty, "the gate holds no share once it handed them over")
        gate.keep(shares)
        #expect(gate.shares.count == 3)
        gate.forgetShares()
        #expect(gate.shares.isEmpty)
    }
}

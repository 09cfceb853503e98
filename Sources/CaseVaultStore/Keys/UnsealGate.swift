package import CaseVaultCrypto

/// The unseal protocol's state, apart from keys and files: one attempt at a time; none before the delay
/// after the last refusal has passed, a delay that doubles with each refusal in a row up to
/// `VaultKeeper.maximumDelay`; and the recovery shares collected towards their threshold. A value:
/// `VaultKeeper` holds one under its lock and acts on what it answers; its tests drive it with a clock of
/// their own.
package struct UnsealGate {
    /// Why an attempt may not begin now.
    package enum Wait: Equatable, Error {
        /// Another attempt is running.
        case busy
        /// Refusals came before: the next attempt may come after this many seconds (at least 1).
        case throttled(seconds: Int)
    }

    /// What adding a share gave.
    package enum Collection {
        /// More shares are needed.
        case collecting(received: Int, threshold: Int)
        /// The threshold is reached: these shares, which the gate no longer holds, are to be combined.
        case complete([SecretSharing.Share])
    }

    /// The share is of another split than the ones given so far.
    package struct OtherSplit: Error {}

    package private(set) var attempting = false
    package private(set) var refusals = 0
    package private(set) var nextAttempt: ContinuousClock.Instant?
    /// Shares given so far towards an unseal (their values stay in this process's memory only).
    package private(set) var shares: [SecretSharing.Share] = []

    package init() {}

    /// A gate that remembers `refusals` in a row, the next attempt allowed `waitMilliseconds` after `now`
    /// (the throttle a restart read back from disk).
    package init(refusals: Int, waitMilliseconds: Int64, now: ContinuousClock.Instant) {
        self.refusals = refusals
        self.nextAttempt = now + .milliseconds(waitMilliseconds)
    }

    /// Begins an attempt, or says why it may not begin.
    package mutating func begin(at now: ContinuousClock.Instant) throws(Wait) {
        if self.attempting { throw .busy }
        if let next = self.nextAttempt, next > now {
            let wait = next - now
            let seconds = Int(
                (Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18).rounded(.up))
            throw .throttled(seconds: max(1, seconds))
        }
        self.attempting = true
    }

    /// The attempt ended, whatever its outcome.
    package mutating func end() {
        self.attempting = false
    }

    /// The attempt was refused: one more refusal in a row, and the next attempt only after 2^(n-1)
    /// seconds, at most `maximumDelay`. Returns the refusals in a row and the delay in milliseconds.
    package mutating func refuse(at now: ContinuousClock.Instant, maximumDelay: Double) -> (
        refusals: Int, delayMilliseconds: Int64
    ) {
        self.refusals += 1
        let delay = Int64(min(maximumDelay, Double(sign: .plus, exponent: self.refusals - 1, significand: 1)) * 1000)
        self.nextAttempt = now + .milliseconds(delay)
        return (self.refusals, delay)
    }

    /// The vault opened: the refusals are forgotten.
    package mutating func opened() {
        self.refusals = 0
        self.nextAttempt = nil
    }

    /// Adds a share: ignored when a share of that index is in already; refused when it belongs to another
    /// split. At the threshold, hands back every share and holds none.
    package mutating func add(_ share: SecretSharing.Share) throws(OtherSplit) -> Collection {
        if let first = self.shares.first, first.threshold != share.threshold || first.commitment != share.commitment {
            throw OtherSplit()
        }
        if !self.shares.contains(where: { $0.index == share.index }) {
            self.shares.append(share)
        }
        guard self.shares.count >= Int(share.threshold) else {
            return .collecting(received: self.shares.count, threshold: Int(share.threshold))
        }
        defer { self.shares = [] }
        return .complete(self.shares)
    }

    /// Gives back shares that could not be combined for a reason that is not theirs.
    package mutating func keep(_ shares: [SecretSharing.Share]) {
        self.shares = shares
    }

    /// Forgets the shares given so far (the vault was sealed).
    package mutating func forgetShares() {
        self.shares = []
    }
}

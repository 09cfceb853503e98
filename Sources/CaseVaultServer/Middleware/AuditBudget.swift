internal import CaseVaultAudit
internal import Dispatch
internal import ServiceLifecycle
internal import Synchronization

/// How many audit entries those who may not use the vault can cause: requests from peers that hold no
/// role, and requests refused before any route (over the connection limits, malformed, too large a
/// head). Each uid (and all peers of unknown uid together) has a bucket of `burst` entries that refills
/// at `perSecond`; past it, requests are still answered, but their entries are counted instead of
/// written, and a summary entry (`refused`, problem `audit-suppressed`, `suppressed`: the count) is
/// written when the uid's bucket has room again, or with the next entry anyone causes a second after the
/// last suppression. All of them together share one more bucket (`everyoneBurst`, `everyonePerSecond`),
/// so that a user with many uids cannot multiply its share. So such peers cannot fill the disk (and refuse
/// everyone with `audit-unavailable`), and nothing they did is lost without trace.
final class AuditBudget: Sendable {
    static let burst = 20.0
    static let perSecond = 5.0
    static let everyoneBurst = 200.0
    static let everyonePerSecond = 50.0
    /// Buckets kept at most; full buckets with nothing to summarise are dropped first.
    static let maxBuckets = 4096

    struct Bucket {
        var tokens = AuditBudget.burst
        var refilled = DispatchTime.now()
        var suppressed: UInt64 = 0
        var lastSuppressed = DispatchTime.now()
    }

    let audit: AuditLog
    private let buckets = Mutex<[UInt32?: Bucket]>([:])
    /// The bucket all of them share.
    private let everyone = Mutex(Bucket(tokens: AuditBudget.everyoneBurst))
    /// Buckets holding a count not yet summarised: so that the common case checks no bucket.
    private let waiting = Atomic<Int>(0)

    init(audit: AuditLog) {
        self.audit = audit
    }

    /// Whether an entry for `uid` may be written now. When it may, the summary of what was suppressed for
    /// it before (and any other summaries that are due) are written first.
    func allow(_ uid: UInt32?) -> Bool {
        let now = DispatchTime.now()
        let (allowed, summaries) = self.buckets.withLock { buckets -> (Bool, [(UInt32?, UInt64)]) in
            var bucket = buckets[uid] ?? Bucket()
            let elapsed = Double(now.uptimeNanoseconds &- bucket.refilled.uptimeNanoseconds) / 1e9
            bucket.tokens = min(Self.burst, bucket.tokens + elapsed * Self.perSecond)
            bucket.refilled = now
            var summaries: [(UInt32?, UInt64)] = []
            let allowed =
                bucket.tokens >= 1
                && self.everyone.withLock { shared in
                    let elapsed = Double(now.uptimeNanoseconds &- shared.refilled.uptimeNanoseconds) / 1e9
                    shared.tokens = min(Self.everyoneBurst, shared.tokens + elapsed * Self.everyonePerSecond)
                    shared.refilled = now
                    guard shared.tokens >= 1 else { return false }
                    shared.tokens -= 1
                    return true
                }
            if allowed {
                bucket.tokens -= 1
                if bucket.suppressed > 0 {
                    summaries.append((uid, bucket.suppressed))
                    bucket.suppressed = 0
                    self.waiting.subtract(1, ordering: .relaxed)
                }
            } else {
                if bucket.suppressed == 0 { self.waiting.add(1, ordering: .relaxed) }
                bucket.suppressed += 1
                bucket.lastSuppressed = now
            }
            buckets[uid] = bucket
            if self.waiting.load(ordering: .relaxed) > 0 { summaries += self.due(&buckets, skipping: uid, now: now) }
            if buckets.count > Self.maxBuckets {
                for (key, value) in buckets where value.suppressed == 0 && key != uid {
                    buckets[key] = nil
                    if buckets.count <= Self.maxBuckets / 2 { break }
                }
            }
            return (allowed, summaries)
        }
        self.write(summaries)
        return allowed
    }

    /// Writes the summaries of peers that went quiet a second ago or more: called for every request, so
    /// that a count is written even when its peer never comes back.
    func summariseDue() {
        guard self.waiting.load(ordering: .relaxed) > 0 else { return }
        let now = DispatchTime.now()
        let summaries = self.buckets.withLock { buckets in self.due(&buckets, skipping: nil, now: now) }
        self.write(summaries)
    }

    /// Writes every summary still waiting: at shutdown, before the audit log's last checkpoint.
    func summariseAll() {
        let summaries = self.buckets.withLock { buckets in
            self.due(&buckets, skipping: nil, now: .distantFuture, waited: .seconds(0))
        }
        self.write(summaries)
    }

    /// The counts of buckets (but `skipping`'s, when given) last added to `waited` ago or more, taken.
    private func due(
        _ buckets: inout [UInt32?: Bucket], skipping uid: UInt32??, now: DispatchTime,
        waited: DispatchTimeInterval = .seconds(1)
    ) -> [(UInt32?, UInt64)] {
        var summaries: [(UInt32?, UInt64)] = []
        for (other, value) in buckets where value.suppressed > 0 && now >= value.lastSuppressed + waited {
            if let uid, other == uid { continue }
            summaries.append((other, value.suppressed))
            buckets[other]?.suppressed = 0
            self.waiting.subtract(1, ordering: .relaxed)
        }
        return summaries
    }

    private func write(_ summaries: [(UInt32?, UInt64)]) {
        for (who, count) in summaries {
            var entry = AuditEntry(kind: .refused, time: self.audit.clock())
            entry.uid = who
            entry.action = "unrouted"
            entry.status = 429
            entry.problem = "audit-suppressed"
            entry.suppressed = count
            self.audit.record(entry)
        }
    }
}

/// A service of the daemon only so that, when it stops, the summaries still waiting are written before the
/// audit log closes.
extension AuditBudget: Service {
    func run() async throws {
        try? await gracefulShutdown()
        self.summariseAll()
    }
}

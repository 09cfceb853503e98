import CaseVaultCore
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

/// The erase epochs turned on their schedule by two daemons' steps, against the real clusters. Time is moved
/// by ageing the epochs' rows (`turned_at`), which is the clock the schedule and doctor read.
extension EpochExchangeTests {
    /// A day's window: pairs from 6 h after a turn, the turn at 12 h less two steps.
    static let window: Int64 = 86_400

    /// Stands for the storage's answer to "is any live data key wrapped under an older epoch?".
    final class WrappedKeys: Sendable {
        let remain = Mutex(false)
    }

    func schedule(_ daemon: Daemon, keysWrapped: WrappedKeys = WrappedKeys()) -> EpochSchedule {
        EpochSchedule(
            exchange: daemon.exchange, eraseWindow: Self.window, rewrap: { _, _, _ in 0 },
            wrappedBelow: { _, _ in keysWrapped.remain.withLock { $0 } })
    }

    /// Daemons vault-a and vault-b on fresh clusters, the schema migrated.
    func withTwoDaemons(_ body: (Daemon, Daemon) async throws -> Void) async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let a = try await self.daemon("vault-a", clusters, keys: keys)
        let b = try await self.daemon("vault-b", clusters, keys: keys)
        try await PostgresSchema.migrate(a.connection, logger: self.logger)
        try await body(a, b)
    }

    /// The first steps of two daemons: a turns to epoch 1, b publishes a pair, a seals it the key, b receives.
    func bothHoldEpochOne(_ a: Daemon, _ sa: EpochSchedule, _ b: Daemon, _ sb: EpochSchedule) async throws {
        _ = try await sa.step(on: a.connection)
        _ = try await sb.step(on: b.connection)
        _ = try await sa.step(on: a.connection)
        #expect(try await sb.step(on: b.connection).received == [1])
    }

    /// Makes the newest epoch look `hours` old.
    func age(_ connection: PostgresConnection, hours: Int) async throws {
        try await connection.query(
            """
            UPDATE casevault_epochs SET turned_at = now() - make_interval(hours => \(Int32(hours)))
            WHERE number = (SELECT max(number) FROM casevault_epochs)
            """, logger: self.logger)
    }

    @Test(
        "two daemons' steps turn the epochs on the window's schedule: the first epoch at once, pairs at a quarter, the turn before half, the old epoch destroyed by both once nothing is wrapped under it"
    )
    func turnsOnSchedule() async throws {
        try await self.withTwoDaemons { a, b in
            let wrapped = WrappedKeys()
            let (sa, sb) = (self.schedule(a, keysWrapped: wrapped), self.schedule(b, keysWrapped: wrapped))
            #expect(sa.turnAge == 12 * 3600 - 120 && sa.interval == 60)

            // The first step of the first daemon turns to epoch 1; the other waits for its key, then has it.
            let first = try await sa.step(on: a.connection)
            #expect(first.turnedTo == 1 && first.publishedFor == 1, "\(first)")
            let waiting = try await sb.step(on: b.connection)
            #expect(waiting.publishedFor == 1 && waiting.turnedTo == nil && waiting.waiting != nil, "\(waiting)")
            #expect(try await sa.step(on: a.connection).sharedWith == ["vault-b"])
            #expect(try await sb.step(on: b.connection).received == [1])
            #expect(try await EpochExchange.wrapEpoch(a.connection, logger: self.logger) == 1)

            // Before a quarter of the window nothing is due; from it, each publishes a pair for epoch 2.
            try await self.age(a.connection, hours: 5)
            #expect(try await sa.step(on: a.connection) == EpochSchedule.Step())
            try await self.age(a.connection, hours: 7)
            #expect(try await sa.step(on: a.connection).publishedFor == 2)
            #expect(try await sb.step(on: b.connection).publishedFor == 2)

            // Just short of half the window, the first to step turns; the other receives and, nothing being
            // wrapped under epoch 1 any more, destroys it; the turner destroys it at its next step.
            try await self.age(a.connection, hours: 11)
            #expect(try await sb.step(on: b.connection).turnedTo == nil, "not yet at 11 h")
            try await self.age(a.connection, hours: 12)
            let turned = try await sb.step(on: b.connection)
            #expect(turned.turnedTo == 2, "\(turned)")
            #expect(turned.destroyed.isEmpty, "a's copy of epoch 2 is not received yet: wraps stay on epoch 1")
            let received = try await sa.step(on: a.connection)
            #expect(received.received == [2] && received.destroyed == [1], "\(received)")
            #expect(try await sb.step(on: b.connection).destroyed == [1])
            #expect(Set(a.exchange.file.keyEpochs()) == [2] && Set(b.exchange.file.keyEpochs()) == [2])
            let check = try await DatabaseChecks.epochCheck(
                on: a.connection, eraseWindow: Self.window, logger: self.logger)
            #expect(check.status == .pass, "\(check)")

            // A data key still wrapped under epoch 2 keeps it after the turn to 3, until it is rewrapped.
            wrapped.remain.withLock { $0 = true }
            try await self.age(a.connection, hours: 7)
            #expect(try await sa.step(on: a.connection).publishedFor == 3)
            #expect(try await sb.step(on: b.connection).publishedFor == 3)
            try await self.age(a.connection, hours: 12)
            #expect(try await sa.step(on: a.connection).turnedTo == 3)
            let receivedThird = try await sb.step(on: b.connection)
            #expect(receivedThird.received == [3] && receivedThird.destroyed.isEmpty, "\(receivedThird)")
            let kept = try await sa.step(on: a.connection)
            #expect(kept.destroyed.isEmpty && kept.waiting?.contains("rewrapped first") == true, "\(kept)")
            #expect(Set(a.exchange.file.keyEpochs()) == [2, 3] && Set(b.exchange.file.keyEpochs()) == [2, 3])
            let behind = try await DatabaseChecks.epochCheck(
                on: a.connection, eraseWindow: Self.window, logger: self.logger)
            #expect(behind.status == .warn, "a turn under way: \(behind)")
            wrapped.remain.withLock { $0 = false }
            #expect(try await sa.step(on: a.connection).destroyed == [2])
            #expect(try await sb.step(on: b.connection).destroyed == [2])
        }
    }

    @Test("a turn waits for a daemon that holds the current epoch but has not published its pair for the next")
    func turnWaitsForAHolder() async throws {
        try await self.withTwoDaemons { a, b in
            let (sa, sb) = (self.schedule(a), self.schedule(b))
            try await self.bothHoldEpochOne(a, sa, b, sb)

            // Past the turn's age at once: a publishes its pair for 2 and would turn, but b has none yet.
            try await self.age(a.connection, hours: 12)
            let refused = try await sa.step(on: a.connection)
            #expect(refused.turnedTo == nil && refused.waiting?.contains("vault-b") == true, "\(refused)")
            #expect(try await EpochExchange.currentEpoch(a.connection, logger: self.logger) == 1)
            // b's next step publishes its pair and turns itself.
            let turned = try await sb.step(on: b.connection)
            #expect(turned.publishedFor == 2 && turned.turnedTo == 2, "\(turned)")
            #expect(try await sa.step(on: a.connection).received == [2])
        }
    }

    /// Makes `daemon`'s last step look `hours` old.
    func away(_ daemon: String, hours: Int, on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            UPDATE casevault_daemons SET seen_at = now() - make_interval(hours => \(Int32(hours)))
            WHERE daemon = \(daemon)
            """, logger: self.logger)
    }

    /// Makes `daemon` look as if it had stepped without a gap for `hours`.
    func steady(_ daemon: String, hours: Int, on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            UPDATE casevault_daemons SET back_at = now() - make_interval(hours => \(Int32(hours)))
            WHERE daemon = \(daemon)
            """, logger: self.logger)
    }

    /// The epochs of the slots of a daemon's file that hold a secret (a key, or a pair's secret half).
    func slotEpochs(_ daemon: Daemon) throws -> [UInt8] {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: daemon.filePath)))
        return stride(from: 0, to: bytes.count, by: 128).filter {
            bytes[$0..<($0 + 4)].elementsEqual("CVE1".utf8)
        }.map { bytes[$0 + 8] }
    }

    @Test(
        "a daemon away longer than an eighth of the window, its presence lock not held, is retired: the other turns, wraps and destroys without it; back, it destroys at once what the vault moved past and rejoins with the current key from a live daemon"
    )
    func awayDaemonRejoins() async throws {
        try await self.withTwoDaemons { a, b in
            let (sa, sb) = (self.schedule(a), self.schedule(b))
            #expect(sa.awayAfter == 3 * 3600)
            try await self.bothHoldEpochOne(a, sa, b, sb)

            // b stops stepping before publishing a pair for epoch 2: the turn waits for it, until it has been
            // away for longer than an eighth of the window; then a retires it and turns in the same step, and
            // with no copy waiting, destroys epoch 1.
            try await self.age(a.connection, hours: 12)
            let refused = try await sa.step(on: a.connection)
            #expect(refused.turnedTo == nil && refused.waiting?.contains("vault-b") == true, "\(refused)")
            // a has stepped steadily for 2 hours, more than half of those 3.
            try await self.steady("vault-a", hours: 2, on: a.connection)
            try await self.away("vault-b", hours: 2, on: a.connection)
            #expect(try await sa.step(on: a.connection).turnedTo == nil, "away for 2 h only")
            // Not by a daemon back from being away itself (both cut off from the database, say): b could be
            // about to step again too. a retires no one until it has stepped steadily for half of 3 hours.
            try await self.away("vault-b", hours: 4, on: a.connection)
            try await self.away("vault-a", hours: 4, on: a.connection)
            for _ in 0..<2 {
                let back = try await sa.step(on: a.connection)
                #expect(back.retired.isEmpty && back.turnedTo == nil, "\(back)")
            }
            try await self.steady("vault-a", hours: 2, on: a.connection)
            let turned = try await sa.step(on: a.connection)
            #expect(
                turned.retired == ["vault-b"] && turned.turnedTo == 2 && turned.destroyed == [1], "\(turned)")
            #expect(try self.slotEpochs(a) == [2] && self.slotEpochs(b) == [1])
            let check = try await DatabaseChecks.epochCheck(
                on: a.connection, eraseWindow: Self.window, logger: self.logger)
            #expect(check.status == .warn && check.detail.contains("vault-b (epoch 1, away"), "\(check)")

            // Back, b destroys epoch 1 before it holds epoch 2 (nothing live is wrapped under 1), and waits
            // for the current key, which a seals to it.
            let back = try await sb.step(on: b.connection)
            #expect(back.destroyed == [1] && back.publishedFor == 2 && back.waiting != nil, "\(back)")
            #expect(try b.exchange.file.keyEpochs().isEmpty && self.slotEpochs(b) == [2], "only its pair for epoch 2")
            #expect(try await sa.step(on: a.connection).sharedWith == ["vault-b"])
            #expect(try await sb.step(on: b.connection).received == [2])
            #expect(try self.slotEpochs(b) == [2])

            // Both publish pairs for epoch 3 and a turns, sealing it to b; b goes away again. The copy waiting
            // for it keeps wraps on epoch 2, and a keeps epoch 2, until b is retired: not while b's presence
            // lock is held (it serves, its steps stalled), but once it is not.
            try await self.age(a.connection, hours: 7)
            #expect(try await sa.step(on: a.connection).publishedFor == 3)
            #expect(try await sb.step(on: b.connection).publishedFor == 3)
            try await self.age(a.connection, hours: 12)
            let third = try await sa.step(on: a.connection)
            #expect(third.turnedTo == 3 && third.destroyed.isEmpty, "\(third)")
            try await self.away("vault-b", hours: 4, on: a.connection)
            let presence = DaemonPresence.key(try DaemonName("vault-b"))
            try await b.connection.query("SELECT pg_advisory_lock(\(presence))", logger: self.logger)
            let present = try await sa.step(on: a.connection)
            #expect(present.retired.isEmpty && present.destroyed.isEmpty, "\(present)")
            #expect(try await EpochExchange.wrapEpoch(a.connection, logger: self.logger) == 2)
            try await b.connection.query("SELECT pg_advisory_unlock(\(presence))", logger: self.logger)
            let retired = try await sa.step(on: a.connection)
            #expect(retired.retired == ["vault-b"] && retired.destroyed == [2], "\(retired)")
            #expect(try await EpochExchange.wrapEpoch(a.connection, logger: self.logger) == 3)

            // Back, b finds no copy (it was deleted with its pair): it destroys epoch 2 at once, publishes its
            // pair again and receives epoch 3 from a. Every daemon then holds epoch 3 alone.
            let again = try await sb.step(on: b.connection)
            #expect(again.received.isEmpty && again.destroyed == [2] && again.publishedFor == 3, "\(again)")
            #expect(try await sa.step(on: a.connection).sharedWith == ["vault-b"])
            #expect(try await sb.step(on: b.connection).received == [3])
            #expect(try self.slotEpochs(a) == [3] && self.slotEpochs(b) == [3])
            let settled = try await DatabaseChecks.epochCheck(
                on: a.connection, eraseWindow: Self.window, logger: self.logger)
            #expect(settled.status == .pass, "\(settled)")
        }
    }
}

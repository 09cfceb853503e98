import CaseVaultCore
import CaseVaultPostgres
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
            _ = try await sa.step(on: a.connection)
            _ = try await sb.step(on: b.connection)
            _ = try await sa.step(on: a.connection)
            #expect(try await sb.step(on: b.connection).received == [1])

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
}

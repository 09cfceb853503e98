import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

/// Records on PostgreSQL (`PostgresRecords`) under the erase epochs, with the two daemons of
/// `EpochExchangeTests` on a primary and a synchronous standby of their own.
extension EpochExchangeTests {
    /// A record's row under `key`'s epoch for `caseID`, with a data key of its own and 4 KiB of sealed bytes
    /// (random, as sealed bytes look), and that data key.
    func newRecord(_ caseID: CaseID, under key: EpochKey) -> (row: PostgresRecords.Row, dataKey: DataKey) {
        let id = RecordID(bytes: Random.bytes(count: RecordID.byteCount))
        let dataKey = DataKey.random()
        let row = PostgresRecords.Row(
            id: id, caseID: caseID, type: .sessionNote, createdAt: 1_780_000_000_000, epoch: key.number,
            wrappedKey: key.wrap(dataKey, recordID: id), blob: Random.bytes(count: 4096))
        return (row, dataKey)
    }

    /// Both daemons publish their pairs for the epoch after `current`, `turner` turns to it and `receiver`
    /// receives it: the next epoch, ready for new wraps.
    func turn(from current: UInt64, by turner: Daemon, receivedBy receiver: Daemon) async throws {
        try await turner.exchange.publishPair(for: current + 1, on: turner.connection)
        try await receiver.exchange.publishPair(for: current + 1, on: receiver.connection)
        #expect(try await turner.exchange.turn(from: current, on: turner.connection)?.epoch == current + 1)
        #expect(try await receiver.exchange.receive(on: receiver.connection) == [current + 1])
        #expect(try await EpochExchange.wrapEpoch(turner.connection, logger: self.logger) == current + 1)
    }

    @Test(
        "records filed under epoch 1 are rewrapped to epoch 2 by a daemon's step after the turn, which then destroys epoch 1, as the other daemon's does; a filer still on epoch 1 is refused; a shredded record's wrapped key and blob stay in the primary's and the standby's files and open with no key either daemon holds"
    )
    func recordsAcrossATurn() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b) = try await self.twoDaemons(clusters, keys)
        let records = PostgresRecords(logger: self.logger)
        let caseID = CaseID(bytes: Random.bytes(count: CaseID.byteCount))
        func expectRefused(_ row: PostgresRecords.Row, sourceLocation: SourceLocation = #_sourceLocation) async {
            let error = await #expect(throws: CaseVaultError.self, sourceLocation: sourceLocation) {
                try await records.insert(row, on: a.connection)
            }
            #expect(error?.code == .keyUnavailable, sourceLocation: sourceLocation)
        }

        // Before any epoch is ready, nothing is filed.
        let early = self.newRecord(caseID, under: EpochKey.random(number: 1))
        await expectRefused(early.row)
        _ = try await a.exchange.turn(from: nil, on: a.connection)
        #expect(try await b.exchange.receive(on: b.connection) == [1])
        let epochOne = try #require(try a.exchange.file.epochKeys().first { $0.number == 1 })

        // Three records filed under epoch 1; the first is shredded: its row is gone for every reader at once.
        var filed: [(row: PostgresRecords.Row, dataKey: DataKey)] = []
        for _ in 0..<3 {
            let record = self.newRecord(caseID, under: epochOne)
            try await records.insert(record.row, on: a.connection)
            filed.append(record)
        }
        #expect(try await records.row(filed[1].row.id, on: b.connection) == filed[1].row)
        let shredded = filed[0].row
        #expect(try await records.delete(shredded.id, on: b.connection))
        #expect(try await records.row(shredded.id, on: a.connection) == nil)
        #expect(try await !records.delete(shredded.id, on: a.connection))

        // One turn. Until the first daemon has received epoch 2, new wraps stay on epoch 1: a record under
        // epoch 2, which only the turner holds, is refused.
        try await a.exchange.publishPair(for: 2, on: a.connection)
        try await b.exchange.publishPair(for: 2, on: b.connection)
        #expect(try await b.exchange.turn(from: 1, on: b.connection)?.epoch == 2)
        let early2 = self.newRecord(
            caseID, under: try #require(try b.exchange.file.epochKeys().first { $0.number == 2 }))
        await expectRefused(early2.row)
        #expect(try await records.row(early2.row.id, on: a.connection) == nil)
        #expect(try await EpochExchange.wrapEpoch(a.connection, logger: self.logger) == 1)
        let stillOne = self.newRecord(caseID, under: epochOne)
        try await records.insert(stillOne.row, on: a.connection)
        filed.append(stillOne)
        // Received, epoch 2 is the one new wraps use.
        #expect(try await a.exchange.receive(on: a.connection) == [2])
        #expect(try await EpochExchange.wrapEpoch(a.connection, logger: self.logger) == 2)
        #expect(try await records.wrappedBelow(2, on: a.connection))
        // A filer that wrapped under epoch 1 before the turn is refused: epoch 1 may be destroyed any time now.
        let late = self.newRecord(caseID, under: epochOne)
        await expectRefused(late.row)
        #expect(try await records.row(late.row.id, on: a.connection) == nil)

        // The first daemon's step rewraps the three live records and destroys epoch 1; the other's destroys it too.
        let stepA = try await EpochSchedule(exchange: a.exchange, eraseWindow: 86_400, records: records)
            .step(on: a.connection)
        #expect(stepA.rewrapped == 3 && stepA.destroyed == [1], "\(stepA)")
        let stepB = try await EpochSchedule(exchange: b.exchange, eraseWindow: 86_400, records: records)
            .step(on: b.connection)
        #expect(stepB.rewrapped == 0 && stepB.destroyed == [1], "\(stepB)")
        #expect(try await !records.wrappedBelow(2, on: a.connection))
        // Holding no older epoch now, a daemon's step neither counts (whose lock would hold filings back) nor
        // rewraps.
        let asked = Mutex(0)
        let idle = try await EpochSchedule(
            exchange: a.exchange, eraseWindow: 86_400,
            rewrap: { _, _, _ in
                asked.withLock { $0 += 1 }
                return 0
            },
            wrappedBelow: { _, _ in
                asked.withLock { $0 += 1 }
                return true
            }
        ).step(on: a.connection)
        #expect(idle.destroyed.isEmpty && idle.waiting == nil && asked.withLock { $0 } == 0, "\(idle)")
        let epochTwo = try #require(try b.exchange.file.epochKeys().first { $0.number == 2 })
        for (row, dataKey) in filed.dropFirst() {
            let now = try #require(try await records.row(row.id, on: a.connection))
            #expect(now.epoch == 2 && now.blob == row.blob && now.wrappedKey != row.wrappedKey)
            #expect(try epochTwo.unwrap(now.wrappedKey, recordID: row.id) == dataKey)
        }
        // Filed under epoch 2, a record is kept.
        let current = self.newRecord(caseID, under: epochTwo)
        try await records.insert(current.row, on: b.connection)
        #expect(try await records.row(current.row.id, on: a.connection) == current.row)
        // Once a move out of the database marked the vault, a filing (one that waited behind the move) is
        // refused with vault-moved and files nothing; with the mark lifted, it files.
        // Not before the vault's row is there (every daemon's start makes it): a mark that marked nothing.
        let unmarked = await #expect(throws: CaseVaultError.self) {
            try await PostgresSchema.markMoved(id: "test", at: 0, on: a.connection, logger: self.logger)
        }
        #expect(unmarked?.code == .storageFailure, "\(String(describing: unmarked))")
        try await PostgresSchema.checkRootKey(1, on: a.connection, logger: self.logger)
        try await PostgresSchema.markMoved(id: "test", at: 0, on: a.connection, logger: self.logger)
        let afterMove = self.newRecord(caseID, under: epochTwo)
        let refused = await #expect(throws: CaseVaultError.self) {
            try await records.insert(afterMove.row, on: b.connection)
        }
        #expect(refused?.code == .vaultMoved, "\(String(describing: refused))")
        #expect(try await records.row(afterMove.row.id, on: a.connection) == nil)
        #expect(try await PostgresSchema.cancelMove(on: a.connection, logger: self.logger))
        try await records.insert(afterMove.row, on: b.connection)
        #expect(try await records.row(afterMove.row.id, on: a.connection) == afterMove.row)

        // The residue: the shredded record's wrapped key and sealed bytes, and the live records' keys as they
        // were wrapped under epoch 1, lie in files of the primary and of the standby.
        try await a.connection.query("CHECKPOINT", logger: self.logger)
        try clusters.waitForStandby()
        try await a.connection.close()
        try await b.connection.close()
        for data in [clusters.primaryData, clusters.standbyData] {
            let files = Self.files(under: data)
            #expect(files.contains { Self.containsInWAL($0.bytes, shredded.wrappedKey) }, "\(data)")
            // Pieces of the blob: in the WAL a record's bytes are broken by the headers of its 8 KiB pages.
            let pieces = stride(from: 0, to: shredded.blob.count, by: 512).map { Array(shredded.blob[$0..<($0 + 48)]) }
            #expect(
                pieces.contains { piece in files.contains { Self.contains($0.bytes, piece) } }, "the blob in \(data)")
            #expect(
                files.contains { Self.containsInWAL($0.bytes, filed[1].row.wrappedKey) }, "the old wrap in \(data)")
        }
        // No key either daemon holds opens any of them; each file holds epoch 2's key alone.
        for daemon in [a, b] {
            let held = try daemon.exchange.file.epochKeys()
            #expect(held.map(\.number) == [2])
            for key in held {
                for (row, _) in filed {
                    #expect(throws: CaseVaultError.self) { try key.unwrap(row.wrappedKey, recordID: row.id) }
                }
            }
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: daemon.filePath)))
            let kept = stride(from: 0, to: bytes.count, by: 128).filter {
                bytes[$0..<($0 + 4)].elementsEqual("CVE1".utf8)
            }
            #expect(kept.map { bytes[$0 + 8] } == [2])
        }
    }

    @Test(
        "the count of records under an older epoch waits for a filing under way and sees it, even where the database's default isolation is REPEATABLE READ"
    )
    func countWaitsForFilings() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b) = try await self.twoDaemons(clusters, keys)
        let records = PostgresRecords(logger: self.logger)
        _ = try await a.exchange.turn(from: nil, on: a.connection)
        _ = try await b.exchange.receive(on: b.connection)
        let epochOne = try #require(try a.exchange.file.epochKeys().first { $0.number == 1 })
        try await self.turn(from: 1, by: b, receivedBy: a)
        // At REPEATABLE READ a transaction's snapshot is taken at its first statement: before the count's lock
        // has waited out the filing.
        try await a.connection.query(
            "ALTER DATABASE \(unescaped: PostgresClusters.database) SET default_transaction_isolation = 'repeatable read'",
            logger: self.logger)
        let locator = PrimaryLocator(
            location: try clusters.location([clusters.primary]), password: clusters.password, logger: self.logger)
        let (filer, _) = try await locator.connect()
        defer { filer.closeAtExit() }
        let (counter, _) = try await locator.connect()
        defer { counter.closeAtExit() }

        // A filing that checked its epoch just before the turn was ready, still under way: it holds the lock
        // filings share, and its row is not committed yet.
        let (row, _) = self.newRecord(CaseID(bytes: Random.bytes(count: CaseID.byteCount)), under: epochOne)
        try await filer.query("BEGIN", logger: self.logger)
        try await filer.query("SELECT pg_advisory_xact_lock_shared(\(PostgresRecords.filingLock))", logger: self.logger)
        try await filer.query(
            """
            INSERT INTO casevault_records (id, case_id, type, created_at, epoch, wrapped_key, blob)
            VALUES (\(ByteBuffer(bytes: row.id.bytes)), \(ByteBuffer(bytes: row.caseID.bytes)), \(row.type.rawValue),
                \(row.createdAt), 1, \(ByteBuffer(bytes: row.wrappedKey)), \(ByteBuffer(bytes: row.blob)))
            """, logger: self.logger)
        var counterPID: Int32 = 0
        for try await pid in try await counter.query("SELECT pg_backend_pid()", logger: self.logger).decode(Int32.self)
        {
            counterPID = pid
        }
        let counting = Task { try await records.wrappedBelow(2, on: counter) }
        // The count waits for the filing's lock.
        var waiting = false
        let deadline = Date().addingTimeInterval(10)
        while !waiting && Date() < deadline {
            for try await count in try await a.connection.query(
                """
                SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = \(counterPID)
                AND classid = \(Int64(PostgresRecords.filingLock >> 32)) AND objid = \(Int64(PostgresRecords.filingLock & 0xFFFF_FFFF))
                """, logger: self.logger
            ).decode(Int64.self) {
                waiting = count == 1
            }
            if !waiting { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(waiting, "the count did not wait for the filing under way")
        try await filer.query("COMMIT", logger: self.logger)
        #expect(try await counting.value, "the count missed the record filed under epoch 1")
        try await filer.close()
        try await counter.close()
    }
}

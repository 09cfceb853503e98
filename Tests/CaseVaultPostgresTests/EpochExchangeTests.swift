import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Logging
import PostgresNIO
import Testing

/// Erase epochs between two daemons on one database, against real PostgreSQL 15 clusters (a primary and a
/// synchronous standby) that each test starts: the epoch key reaches the other daemon sealed to its pair,
/// and after a shred and one turn the residue the database kept opens for no one.
@Suite("Erase epochs between daemons on PostgreSQL", .serialized)
struct EpochExchangeTests {
    let logger = Logger(label: "casevault.test.postgres")
    static let vaultRootKey = RootKey(secret: SecureBytes.random(count: 32))

    /// One daemon's side: its name, its own root key and epoch key file, and a connection to the primary,
    /// closed when the value goes however the test ends.
    final class Daemon: Sendable {
        let exchange: EpochExchange
        let connection: PostgresConnection
        let filePath: String

        init(exchange: EpochExchange, connection: PostgresConnection, filePath: String) {
            self.exchange = exchange
            self.connection = connection
            self.filePath = filePath
        }

        deinit { self.connection.closeAtExit() }
    }

    /// A private folder of this user's for the daemons' epoch key files, removed with the value.
    final class KeyFolder {
        let path: String
        init() throws {
            var template = Array("/tmp/casevault-epochs-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw CaseVaultError(.storageFailure, "mkdtemp failed") }
            self.path = String(cString: made)
        }
        deinit { try? FileManager.default.removeItem(atPath: self.path) }
    }

    /// A daemon with its own epoch key file, under the vault's root key that every daemon of the vault holds.
    func daemon(
        _ name: String, _ clusters: PostgresClusters, keys: KeyFolder, rootKey: RootKey = Self.vaultRootKey
    ) async throws -> Daemon {
        let path = keys.path + "/\(name).epochs"
        let file = try EpochKeyFile(path: path, rootKey: rootKey)
        let (connection, _) = try await PrimaryLocator(
            location: try clusters.location([clusters.standby, clusters.primary]), password: clusters.password,
            logger: self.logger
        ).connect()
        return Daemon(
            exchange: EpochExchange(daemon: try DaemonName(name), file: file, logger: self.logger),
            connection: connection, filePath: path)
    }

    /// Daemons vault-a and vault-b on `clusters`, the schema migrated, each with a pair published for epoch 1.
    func twoDaemons(_ clusters: PostgresClusters, _ keys: KeyFolder) async throws -> (Daemon, Daemon) {
        let a = try await self.daemon("vault-a", clusters, keys: keys)
        let b = try await self.daemon("vault-b", clusters, keys: keys)
        try await PostgresSchema.migrate(a.connection, logger: self.logger)
        try await a.exchange.publishPair(for: 1, on: a.connection)
        try await b.exchange.publishPair(for: 1, on: b.connection)
        return (a, b)
    }

    /// Every regular file under `directory`, read whole.
    static func files(under directory: String) -> [(path: String, bytes: [UInt8])] {
        guard let walker = FileManager.default.enumerator(atPath: directory) else { return [] }
        var files: [(String, [UInt8])] = []
        for case let relative as String in walker {
            let path = directory + "/" + relative
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
                let data = FileManager.default.contents(atPath: path)
            else { continue }
            files.append((path, [UInt8](data)))
        }
        return files
    }

    /// Whether `needle` (a few dozen bytes or more) lies in `haystack` as the WAL keeps it: whole, or cut
    /// once by the header of the WAL page it straddles, so that its first or its second half lies whole.
    /// Which of them a run meets depends on where the record falls, which every statement before it moves.
    static func containsInWAL(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        let half = needle.count / 2
        return Self.contains(haystack, Array(needle.prefix(half)))
            || Self.contains(haystack, Array(needle.suffix(needle.count - half)))
    }

    /// Whether `needle` occurs in `haystack`, by memchr and memcmp: the generic search of a debug build takes
    /// seconds a needle over a cluster's WAL.
    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard let first = needle.first else { return true }
        return haystack.withUnsafeBytes { haystack in
            needle.withUnsafeBytes { needle in
                guard let base = haystack.baseAddress, haystack.count >= needle.count else { return false }
                var offset = 0
                let last = haystack.count - needle.count
                while offset <= last {
                    guard let found = memchr(base + offset, Int32(first), last - offset + 1) else { return false }
                    let at = base.distance(to: UnsafeRawPointer(found))
                    if memcmp(base + at, needle.baseAddress!, needle.count) == 0 { return true }
                    offset = at + 1
                }
                return false
            }
        }
    }

    @Test(
        "daemons migrate at once, one of them turns, the other receives the key sealed to its pair, and both wrap alike"
    )
    func turnAndReceive() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let a = try await self.daemon("vault-a", clusters, keys: keys)
        let b = try await self.daemon("vault-b", clusters, keys: keys)
        async let migratedA = PostgresSchema.migrate(a.connection, logger: self.logger)
        async let migratedB = PostgresSchema.migrate(b.connection, logger: self.logger)
        #expect(try await [migratedA, migratedB].sorted() == [0, PostgresSchema.currentVersion])
        #expect(try await PostgresSchema.migrate(a.connection, logger: self.logger) == PostgresSchema.currentVersion)
        #expect(try await EpochExchange.currentEpoch(a.connection, logger: self.logger) == nil)

        // No turn before the turner has a pair of its own published for the epoch.
        let early = await #expect(throws: CaseVaultError.self) {
            try await a.exchange.turn(from: nil, on: a.connection)
        }
        #expect(early?.code == .storageFailure)

        try await a.exchange.publishPair(for: 1, on: a.connection)
        try await b.exchange.publishPair(for: 1, on: b.connection)
        let turned = try #require(try await a.exchange.turn(from: nil, on: a.connection))
        #expect(turned.epoch == 1)
        #expect(try await b.exchange.turn(from: nil, on: b.connection) == nil, "a turned first: b changes nothing")
        #expect(turned.sealedTo.map(\.rawValue) == ["vault-a", "vault-b"])
        #expect(try await EpochExchange.currentEpoch(b.connection, logger: self.logger) == 1)
        #expect(try a.exchange.file.pair(epoch: 1) == nil, "the turner's pair is destroyed at once")

        #expect(try await EpochExchange.wrapEpoch(a.connection, logger: self.logger) == nil, "b has yet to receive 1")
        let behind = try await DatabaseChecks.epochCheck(on: a.connection, eraseWindow: 86_400, logger: self.logger)
        #expect(behind.status == .warn && behind.detail.contains("not yet received epoch 1: vault-b"), "\(behind)")
        #expect(try await b.exchange.receive(on: b.connection) == [1])
        #expect(try await EpochExchange.wrapEpoch(a.connection, logger: self.logger) == 1)
        #expect(
            try await DatabaseChecks.epochCheck(on: a.connection, eraseWindow: 86_400, logger: self.logger).status
                == .pass)
        #expect(try await b.exchange.receive(on: b.connection) == [], "the copy was deleted once opened")
        #expect(try b.exchange.file.pair(epoch: 1) == nil)
        let keyA = try #require(try a.exchange.file.epochKeys().first)
        let keyB = try #require(try b.exchange.file.epochKeys().first)
        let record = RecordID(bytes: Random.bytes(count: RecordID.byteCount))
        let dataKey = DataKey.random()
        #expect(try keyB.unwrap(keyA.wrap(dataKey, recordID: record), recordID: record) == dataKey)

        // A third daemon joins after the turn: a daemon that holds the epoch seals it to the newcomer's pair.
        let c = try await self.daemon("vault-c", clusters, keys: keys)
        try await c.exchange.publishPair(for: 1, on: c.connection)
        #expect(try await b.exchange.shareCurrent(on: b.connection).map(\.rawValue) == ["vault-c"])
        #expect(try await a.exchange.shareCurrent(on: a.connection).isEmpty, "a copy already waits for vault-c")
        #expect(
            try await EpochExchange.wrapEpoch(a.connection, logger: self.logger) == 1, "a newcomer moves it not back")
        #expect(try await c.exchange.receive(on: c.connection) == [1])
        let keyC = try #require(try c.exchange.file.epochKeys().first)
        #expect(try keyC.unwrap(keyA.wrap(dataKey, recordID: record), recordID: record) == dataKey)
        #expect(try await a.exchange.shareCurrent(on: a.connection).isEmpty)
        #expect(try await EpochExchange.wrapEpoch(a.connection, logger: self.logger) == 1)

        // b loses its epoch key file: it publishes a fresh pair for the current epoch, a live daemon seals the
        // key to it again, and it holds the key once more.
        try FileManager.default.removeItem(atPath: b.filePath)
        let lost = Daemon(
            exchange: EpochExchange(
                daemon: try DaemonName("vault-b"),
                file: try EpochKeyFile(path: b.filePath, rootKey: Self.vaultRootKey), logger: self.logger),
            connection: b.connection, filePath: b.filePath)
        try await lost.exchange.publishPair(for: 1, on: lost.connection)
        #expect(try await a.exchange.shareCurrent(on: a.connection).map(\.rawValue) == ["vault-b"])
        #expect(try await lost.exchange.receive(on: lost.connection) == [1])
        let again = try #require(try lost.exchange.file.epochKeys().first)
        #expect(try again.unwrap(keyA.wrap(dataKey, recordID: record), recordID: record) == dataKey)

        // No turn to 2 while a daemon that holds 1 has published no pair for 2: it would be left without it.
        try await a.exchange.publishPair(for: 2, on: a.connection)
        try await c.exchange.publishPair(for: 2, on: c.connection)
        let stranded = await #expect(throws: CaseVaultError.self) {
            try await a.exchange.turn(from: 1, on: a.connection)
        }
        #expect(stranded?.message.contains("vault-b holds epoch 1") == true)

        // A key left in b's file by a turn to 2 that did not commit is replaced by the copy b receives.
        try lost.exchange.file.keep(EpochKey.random(number: 2))
        try await lost.exchange.publishPair(for: 2, on: lost.connection)
        #expect(try lost.exchange.file.pair(epoch: 2) == nil, "b holds a key for 2, so it publishes nothing")
        try lost.exchange.file.destroyKey(epoch: 2)
        try await lost.exchange.publishPair(for: 2, on: lost.connection)
        try lost.exchange.file.keep(EpochKey.random(number: 2))
        _ = try #require(try await a.exchange.turn(from: 1, on: a.connection))
        #expect(try await lost.exchange.receive(on: lost.connection) == [2])
        let keyA2 = try #require(try a.exchange.file.epochKeys().first { $0.number == 2 })
        let keyB2 = try #require(try lost.exchange.file.epochKeys().first { $0.number == 2 })
        #expect(keyA2.isSame(as: keyB2), "the stray key was replaced by the one a sealed")
        #expect(lost.exchange.file.pairEpochs().isEmpty)

        for daemon in [a, b, c] { try await daemon.connection.close() }
    }

    @Test(
        "after a shred and one turn, the wrapped key lies in the primary's and the standby's files and opens with no daemon's key"
    )
    func residueAfterATurn() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b) = try await self.twoDaemons(clusters, keys)
        _ = try await a.exchange.turn(from: nil, on: a.connection)
        // The sealed copy as the database keeps it, in its tables' residue long after it is deleted.
        var copies: [[UInt8]] = []
        for try await sealed in try await a.connection.query(
            "SELECT sealed FROM casevault_epoch_copies", logger: self.logger
        ).decode(ByteBuffer.self) {
            copies.append(Array(sealed.readableBytesView))
        }
        #expect(copies.count == 1)
        _ = try await b.exchange.receive(on: b.connection)

        // A record filed under epoch 1, then shredded: its row is deleted at once.
        try await a.connection.query(
            "CREATE TABLE scratch_records (id bytea PRIMARY KEY, wrapped bytea NOT NULL)", logger: self.logger)
        let record = RecordID(bytes: Random.bytes(count: RecordID.byteCount))
        let epochOne = try #require(try a.exchange.file.epochKeys().first)
        let wrapped = epochOne.wrap(DataKey.random(), recordID: record)
        try await a.connection.query(
            "INSERT INTO scratch_records VALUES (\(ByteBuffer(bytes: record.bytes)), \(ByteBuffer(bytes: wrapped)))",
            logger: self.logger)
        try await a.connection.query(
            "DELETE FROM scratch_records WHERE id = \(ByteBuffer(bytes: record.bytes))", logger: self.logger)

        // One turn: both daemons on epoch 2, epoch 1 destroyed in both files.
        try await a.exchange.publishPair(for: 2, on: a.connection)
        try await b.exchange.publishPair(for: 2, on: b.connection)
        #expect(try await b.exchange.turn(from: 1, on: b.connection)?.epoch == 2)
        #expect(try await a.exchange.receive(on: a.connection) == [2])
        let holding = try await DatabaseChecks.epochCheck(on: a.connection, eraseWindow: 86_400, logger: self.logger)
        #expect(holding.status == .warn, "\(holding)")
        #expect(holding.detail.contains("vault-a (epoch 1), vault-b (epoch 1)"), "\(holding.detail)")
        // Half a window after epoch 2 was turned to, epoch 1 still held breaks the shreds' promised time.
        try await a.connection.query(
            "UPDATE casevault_epochs SET turned_at = now() - interval '13 hours' WHERE number = 2", logger: self.logger)
        let late = try await DatabaseChecks.epochCheck(on: a.connection, eraseWindow: 86_400, logger: self.logger)
        #expect(late.status == .fail, "\(late)")
        #expect(late.detail.contains("past its promised destruction") && late.detail.contains("vault-b (epoch 1)"))
        #expect(try await a.exchange.destroy(before: 2, on: a.connection) == [1])
        #expect(try await b.exchange.destroy(before: 2, on: b.connection) == [1])
        // Every older epoch destroyed, but none turned since: late too, until the next turn.
        let stale = try await DatabaseChecks.epochCheck(on: a.connection, eraseWindow: 86_400, logger: self.logger)
        #expect(stale.status == .fail && stale.detail.contains("no daemon has turned since"), "\(stale)")
        #expect(
            try await DatabaseChecks.epochCheck(on: a.connection, eraseWindow: 2 * 86_400, logger: self.logger).status
                == .pass, "a window of two days leaves a day for the turn")

        // The residue is there: the wrapped key in the WAL of the primary and of the standby.
        try await a.connection.query("CHECKPOINT", logger: self.logger)
        try clusters.waitForStandby()
        try await a.connection.close()
        try await b.connection.close()
        for data in [clusters.primaryData, clusters.standbyData] {
            let holding = Self.files(under: data).filter { Self.containsInWAL($0.bytes, wrapped) }
            #expect(!holding.isEmpty, "the wrapped key is in some file of \(data)")
            #expect(Self.files(under: data).contains { Self.containsInWAL($0.bytes, copies[0]) })
        }
        // And it opens with no key either daemon holds, nor does the sealed copy with any pair they hold.
        for daemon in [a, b] {
            let keys = try daemon.exchange.file.epochKeys()
            #expect(keys.map(\.number) == [2])
            for key in keys {
                #expect(throws: CaseVaultError.self) { try key.unwrap(wrapped, recordID: record) }
            }
            for epoch: UInt64 in [1, 2] {
                #expect(try daemon.exchange.file.pair(epoch: epoch) == nil)
            }
            // Epoch 1 is in no slot of either file: every slot holding a secret is epoch 2's key.
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: daemon.filePath)))
            let kept = stride(from: 0, to: bytes.count, by: 128).filter {
                bytes[$0..<($0 + 4)].elementsEqual("CVE1".utf8)
            }
            #expect(kept.map { bytes[$0 + 8] } == [2])
        }
    }

    @Test(
        "whoever writes the database without the vault's root key is sent no epoch key and cannot hand one to a daemon")
    func forgedPairsAndCopies() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b) = try await self.twoDaemons(clusters, keys)
        // The intruder: a daemon of its own, under a root key that is not the vault's.
        let intruder = try await self.daemon(
            "vault-x", clusters, keys: keys, rootKey: RootKey(secret: SecureBytes.random(count: 32)))

        // b's published key swapped for the intruder's pair (its tag made with the wrong key).
        try await intruder.exchange.publishPair(for: 1, on: intruder.connection)
        try await a.connection.query(
            """
            UPDATE casevault_epoch_pairs SET public_key = x.public_key, tag = x.tag
            FROM casevault_epoch_pairs x WHERE x.daemon = 'vault-x' AND casevault_epoch_pairs.daemon = 'vault-b'
            """, logger: self.logger)
        let refused = await #expect(throws: CaseVaultError.self) {
            try await a.exchange.turn(from: nil, on: a.connection)
        }
        #expect(refused?.code == .integrityFailure)
        #expect(try await EpochExchange.currentEpoch(a.connection, logger: self.logger) == nil, "nothing turned")
        #expect(try a.exchange.file.epochKeys().isEmpty)

        // With honest pairs again, a turns; then a copy for b is replaced by one the intruder sealed to b's
        // real pair, with a key of the intruder's choosing: b refuses it.
        try await a.connection.query("DELETE FROM casevault_epoch_pairs WHERE daemon = 'vault-x'", logger: self.logger)
        try await b.exchange.publishPair(for: 1, on: b.connection)
        _ = try await a.exchange.turn(from: nil, on: a.connection)
        let bPair = try #require(try b.exchange.file.pair(epoch: 1))
        let chosen = try EpochKey.random(number: 1).sealed(to: try DaemonName("vault-b"), publicKey: bPair.publicKey)
        try await a.connection.query(
            "UPDATE casevault_epoch_copies SET sealed = \(ByteBuffer(bytes: chosen)) WHERE daemon = 'vault-b'",
            logger: self.logger)
        let forged = await #expect(throws: CaseVaultError.self) { try await b.exchange.receive(on: b.connection) }
        #expect(forged?.code == .integrityFailure)
        #expect(try b.exchange.file.epochKeys().isEmpty, "b kept no key from the forged copy")
        #expect(try b.exchange.file.pair(epoch: 1) != nil, "and keeps its pair for an honest copy")
        for daemon in [a, b, intruder] { try await daemon.connection.close() }
    }

    @Test("a daemon that stopped between two steps of receiving or destroying is mended by the next call")
    func stoppedBetweenSteps() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b) = try await self.twoDaemons(clusters, keys)
        _ = try await a.exchange.turn(from: nil, on: a.connection)

        // b stopped after keeping the key and committing the copy's deletion, before destroying its pair.
        var sealed: [UInt8] = []
        for try await copy in try await b.connection.query(
            "SELECT sealed FROM casevault_epoch_copies WHERE daemon = 'vault-b'", logger: self.logger
        ).decode(ByteBuffer.self) {
            sealed = Array(copy.readableBytesView)
        }
        let pair = try #require(try b.exchange.file.pair(epoch: 1))
        try b.exchange.file.keep(
            try EpochKey.opening(sealed, number: 1, daemon: try DaemonName("vault-b"), pair: pair))
        try await b.connection.query(
            "INSERT INTO casevault_epoch_holders (epoch, daemon) VALUES (1, 'vault-b')", logger: self.logger)
        try await b.connection.query("DELETE FROM casevault_epoch_copies WHERE daemon = 'vault-b'", logger: self.logger)
        #expect(b.exchange.file.pairEpochs() == [1])
        #expect(try await b.exchange.receive(on: b.connection) == [], "no copy is left to receive")
        #expect(b.exchange.file.pairEpochs().isEmpty, "the pair left behind is destroyed all the same")

        // b stopped after destroying epoch 1 in its file, before recording it: the next call records it.
        try await a.exchange.publishPair(for: 2, on: a.connection)
        try await b.exchange.publishPair(for: 2, on: b.connection)
        _ = try await b.exchange.turn(from: 1, on: b.connection)
        let early = await #expect(throws: CaseVaultError.self, "a holds no key of 2 yet") {
            try await a.exchange.destroy(before: 2, on: a.connection)
        }
        #expect(early?.code == .keyUnavailable)
        #expect(try a.exchange.file.epochKeys().map(\.number) == [1], "and destroyed nothing")
        #expect(try await a.exchange.receive(on: a.connection) == [2])
        #expect(try a.exchange.file.destroyKey(epoch: 1))
        #expect(try await a.exchange.destroy(before: 2, on: a.connection) == [], "nothing left to destroy")
        var recorded: [String] = []
        for try await holder in try await a.connection.query(
            "SELECT daemon FROM casevault_epoch_holders WHERE epoch = 1 AND destroyed_at IS NOT NULL ORDER BY daemon",
            logger: self.logger
        ).decode(String.self) {
            recorded.append(holder)
        }
        #expect(recorded == ["vault-a"], "a's destruction is recorded; b has yet to destroy epoch 1")
        for daemon in [a, b] { try await daemon.connection.close() }
    }
}

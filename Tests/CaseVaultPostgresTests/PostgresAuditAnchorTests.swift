import CaseVaultAudit
import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Testing

/// Each daemon's audit log anchored in the vault's database (`PostgresAuditAnchor`).
extension EpochExchangeTests {
    static func auditEntry(_ number: UInt64) -> AuditEntry {
        var entry = AuditEntry(kind: .request, time: 1_700_000_000_000 + Int64(number))
        entry.request = number
        entry.uid = 4000
        entry.roles = ["mediator"]
        entry.action = "GET /v1/cases/{case_id}"
        entry.ids = ["case_id": String(repeating: "ab", count: 16)]
        return entry
    }

    @Test(
        "each daemon's audit log anchored in the database under its name: a log that checks out attaches again; one replaced whole is refused against the anchor; a row moved to another daemon's name, or read with another vault's key, does not verify; a daemon without a row starts afresh"
    )
    func auditAnchorsOnPostgres() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let anchorA = PostgresAuditAnchor(storage: vaultA.storage, daemon: a.exchange.daemon)
        let anchorB = PostgresAuditAnchor(storage: vaultB.storage, daemon: b.exchange.daemon)
        let logs = keys.path + "/audit-a"
        try FileManager.default.createDirectory(
            atPath: logs, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        #expect(try await self.blocking { try anchorA.auditAnchor() } == .none(vaultIsNew: true))

        // Daemon a's log attached, eleven entries made durable, closed: the row names its last entry.
        let log = try AuditLog.open(directory: logs, anchorInterval: .milliseconds(0), clock: { 1_700_000_000_000 }).0
        try await self.blocking { try log.attach(to: anchorA) }
        for number in UInt64(1)...10 {
            try await log.awaitDurable(try await log.append(Self.auditEntry(number)))
        }
        log.close()
        let entries = log.entries
        var anchored: UInt64 = 0
        for _ in 0..<50 {
            if case .anchored(let anchor) = try await self.blocking({ try anchorA.auditAnchor() }) {
                anchored = anchor.seq
            }
            if anchored == entries { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(entries >= 11 && anchored == entries, "anchored \(anchored) of \(entries)")

        // The same log attaches again; one replaced whole (an empty directory) is refused.
        let again = try AuditLog.open(directory: logs, clock: { 1_700_000_000_000 }).0
        try await self.blocking { try again.attach(to: anchorA) }
        again.close()
        let replaced = keys.path + "/audit-replaced"
        try FileManager.default.createDirectory(
            atPath: replaced, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        let fresh = try AuditLog.open(directory: replaced, clock: { 1_700_000_000_000 }).0
        #expect(await self.code { try fresh.attach(to: anchorA) } == .auditMismatch)
        fresh.close()

        // Daemon b has no row: its log starts afresh. Then a's row put in b's place does not verify.
        #expect(try await self.blocking { try anchorB.auditAnchor() } == .none(vaultIsNew: true))
        _ = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            """
            INSERT INTO casevault_audit_anchors SELECT \(b.exchange.daemon.rawValue.quotedForSQL), seq, hash, at, file,
                nonce, mac FROM casevault_audit_anchors WHERE daemon = \(a.exchange.daemon.rawValue.quotedForSQL)
            """)
        #expect(await self.code { _ = try anchorB.auditAnchor() } == .integrityFailure)

        // Another vault's key does not verify a's row.
        let other = RootKey(secret: SecureBytes.random(count: 32))
        let stranger = PostgresStorage(
            sealing: try SealingServices(rootKey: other),
            locator: PrimaryLocator(
                location: try clusters.location([clusters.primary]), password: clusters.password, logger: self.logger),
            epochKeys: a.exchange.file, eraseWindow: 86_400, maxContentBytes: 1 << 20, logger: self.logger)
        let strangerAnchor = PostgresAuditAnchor(storage: stranger, daemon: a.exchange.daemon)
        #expect(await self.code { _ = try strangerAnchor.auditAnchor() } == .integrityFailure)
    }
}

extension String {
    /// The string as an SQL literal, quotes doubled (daemons' names have none).
    fileprivate var quotedForSQL: String { "'" + self.replacingOccurrences(of: "'", with: "''") + "'" }
}

import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Logging
import PostgresNIO
import Testing

/// A daemon that still serves a vault a move marked (its session ended by a failover, it serves until its
/// next step) writes nothing there: what it wrote would be kept only in the copy the move left behind.
extension EpochExchangeTests {
    @Test(
        "once a move out of the database marked the vault, every write of a daemon still serving it (a shred, a closing, an assignment, a roster change, a hold placed or released, an upload begun, appended to or finished, a retention sweep, an erasure's certificate) is refused with vault-moved and changes no row; with the mark lifted, they are made; a write that waited for the filing lock behind a move finds the mark the move made meanwhile"
    )
    func everyWriteRefusedOnceMoved() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        // Intake forms are due a day after filing; this vault of a's sweeps two days from now.
        var retention = RetentionSchedule.standard
        retention.rules[.intakeForm] = RetentionRule(days: 1, after: .filed)
        let later = Int64(Date().timeIntervalSince1970 * 1000) + 2 * 86_400_000
        let sweeper = try self.vault(a, clusters, retention: retention, clock: { later })
        let intake = Array(#"{"dispute_category":"roommate","screening_notes":"n"}"#.utf8)
        let director = Authority(uid: 4100, role: "director")

        // A case in session with a note and three intake forms, two of them with an upload under way (one
        // through the vault, whose finish appends its last chunk first, one through the storage); a second
        // case under a hold; a mediator on the roster.
        let (caseID, notes, forms, upload, held, hold) = try await self.blocking {
            let (caseID, notes) = try Self.caseInSession(vaultA, vaultB, mediators: [4001], notes: ["n"])
            let forms = try (0..<3).map { _ in
                try vaultA.file(NewRecord(caseID: caseID, type: .intakeForm, content: intake)).record.id
            }
            let upload = try vaultA.beginAttachment(forms[0], mediaType: "application/pdf", maxBytes: 1 << 20)
            try Self.append(Random.bytes(count: 70_000), to: upload)
            let held = try vaultB.openCase(header: Self.header, mediators: [], author: nil).id
            let hold = try vaultB.placeHold(on: held, reason: "litigation", authority: director)
            try vaultA.storage.addToRoster(4001)
            return (caseID, notes, forms, upload, held, hold)
        }
        let sink = try await self.blocking {
            let (_, sink) = try vaultB.storage.beginAttachment(forms[2])
            try sink.append(Random.bytes(count: 1_000))
            return Sink(sink)
        }
        let rows = {
            try clusters.psql(
                clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
                """
                SELECT concat_ws(' | ',
                    (SELECT string_agg(encode(id, 'hex'), ',' ORDER BY id) FROM casevault_records),
                    (SELECT count(*) FROM casevault_shreds), (SELECT count(*) FROM casevault_certificates),
                    (SELECT string_agg(state || ':' || array_to_string(mediators, ';'), ',' ORDER BY id)
                        FROM casevault_cases),
                    (SELECT string_agg(uid::text, ',' ORDER BY uid) FROM casevault_roster),
                    (SELECT count(*) FROM casevault_holds), (SELECT count(*) FROM casevault_uploads),
                    (SELECT count(*) FROM casevault_attachments),
                    (SELECT count(*) FROM casevault_attachment_chunks))
                """)
        }
        let before = try rows()

        // The vault's row, as a daemon's start makes it, bears the mark.
        try await PostgresSchema.checkRootKey(
            vaultA.storage.sealing.rootKeyCheck, on: a.connection, logger: self.logger)
        try await PostgresSchema.markMoved(id: "test", at: 0, on: a.connection, logger: self.logger)
        let writes: [(String, @Sendable () throws -> Void)] = [
            ("filing", { _ = try vaultB.file(NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("m"))) }),
            (
                "shred on request",
                { _ = try vaultA.storage.shred([notes[0]], order: ShredOrder(method: .request, authority: director)) }
            ),
            ("closing", { _ = try vaultB.storage.closeCase(caseID, outcome: .withdrawn, authority: director) }),
            ("assignment", { try vaultA.storage.assign(.mediators, caseID, [4002]) }),
            ("roster addition", { try vaultB.storage.addToRoster(4005) }),
            ("roster removal", { try vaultB.storage.removeFromRoster(4001) }),
            ("hold placed", { _ = try vaultA.placeHold(on: caseID, reason: "second", authority: director) }),
            ("hold released", { _ = try vaultA.storage.releaseHold(hold.id) }),
            (
                "upload begun",
                { _ = try vaultB.beginAttachment(forms[1], mediaType: "application/pdf", maxBytes: 1 << 20) }
            ),
            ("upload's last chunk", { try vaultA.finishAttachment(upload) }),
            ("upload finished", { try vaultB.storage.finishAttachment(sink.file) }),
            ("retention sweep", { _ = try sweeper.storage.sweep(dryRun: false, limit: nil, authority: .daemon) }),
            ("erasures certified", { _ = try vaultB.storage.certifyErasures() }),
        ]
        for (name, write) in writes {
            #expect(await self.code(write) == .vaultMoved, "\(name)")
        }
        #expect(try rows() == before)

        // The mark lifted (migrate --cancel), the vault takes writes again.
        #expect(try await PostgresSchema.cancelMove(on: a.connection, logger: self.logger))
        let made = try await self.blocking { () throws -> (CaseID, Bool, Int, [RecordID]) in
            (
                try vaultA.storage.releaseHold(hold.id), try vaultB.storage.addToRoster(4005),
                try sweeper.storage.sweep(dryRun: false, limit: nil, authority: .daemon).disposed,
                try vaultB.storage.closeCase(caseID, outcome: .withdrawn, authority: director)
            )
        }
        #expect(made.0 == held && made.1 && made.2 == forms.count && made.3 == notes, "\(made)")
        #expect(try rows() != before)

        // The race itself: a write that waits for the filing lock while a move holds it alone reads the mark
        // the move committed meanwhile.
        try await Self.holdFilingLockAlone(true, on: a.connection, logger: self.logger)
        async let raced = self.code { try vaultB.storage.addToRoster(4006) }
        #expect(
            try await self.untilFound(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", on: b.connection))
        try await PostgresSchema.markMoved(id: "test", at: 0, on: a.connection, logger: self.logger)
        try await Self.holdFilingLockAlone(false, on: a.connection, logger: self.logger)
        #expect(await raced == .vaultMoved)
        // Asked of the roster itself: the listing's hexadecimal record ids may hold "4006" by chance.
        #expect(try await !self.blocking { try vaultA.storage.isOnRoster(4006) })
    }
}

extension EpochExchangeTests {
    @Test(
        "a write held back by the filing lock held alone (as a restore or a move holds it) answers storage-unavailable with Retry-After after about 30 s, writing nothing, rather than wait for as long as the lock is held; once it is let go, the write is made"
    )
    func writeHeldBackAnswersUnavailable() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, _, _, vaultB) = try await self.twoVaults(clusters, keys)
        let holder = a.connection
        try await Self.holdFilingLockAlone(true, on: holder, logger: self.logger)
        // Let go after 70 s at the latest, so that a write that waits without bound is seen answering late
        // (and made), not hanging the suite; at once when told.
        let logger = self.logger
        let letGo = Task { () -> Bool in
            try? await Task.sleep(for: .seconds(70))
            // Told: the test lets go itself, outside this cancelled task (PostgresNIO may refuse a statement
            // asked for in one).
            guard !Task.isCancelled else { return false }
            try await Self.holdFilingLockAlone(false, on: holder, logger: logger)
            return true
        }
        let started = ContinuousClock.now
        let refused = await #expect(throws: CaseVaultError.self) {
            try await self.blocking { try vaultB.storage.addToRoster(4008) }
        }
        let waited = ContinuousClock.now - started
        #expect(refused?.code == .storageUnavailable && refused?.retryAfter == 5, "\(String(describing: refused))")
        #expect(waited > .seconds(25) && waited < .seconds(60), "waited \(waited)")
        letGo.cancel()
        if try await !letGo.value { try await Self.holdFilingLockAlone(false, on: holder, logger: self.logger) }
        #expect(try await !self.blocking { try vaultB.storage.isOnRoster(4008) })
        #expect(try await self.blocking { try vaultB.storage.addToRoster(4008) })
        #expect(try await self.blocking { try vaultB.storage.isOnRoster(4008) })
    }
}

extension EpochExchangeTests {
    /// Takes (`true`) or lets go of the filing lock alone on `connection`'s session, as a move or a restore
    /// holds it.
    static func holdFilingLockAlone(_ hold: Bool, on connection: PostgresConnection, logger: Logger) async throws {
        let function = hold ? "pg_advisory_lock" : "pg_advisory_unlock"
        for try await _ in try await connection.query(
            "SELECT \(unescaped: function)(\(PostgresRecords.filingLock))", logger: logger)
        {}
    }
}

/// An upload of the storage's, handed from the thread that began it to the one that finishes it (the test's
/// threads take turns: never two at once).
private final class Sink: @unchecked Sendable {
    let file: any AttachmentSink
    init(_ file: any AttachmentSink) { self.file = file }
}

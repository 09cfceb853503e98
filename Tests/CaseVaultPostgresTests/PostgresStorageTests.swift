import CaseVaultCore
import CaseVaultCrypto
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

/// The sealing layer's `Vault` on PostgreSQL (`PostgresStorage`): two daemons, each with its own epoch key
/// file, keeping one case on a primary and a synchronous standby, through the same lifecycle rules as the
/// local store.
extension EpochExchangeTests {
    static let header = Array(
        #"{"participants":[{"name":"Ada Participant","contact":"ada@example.edu"},{"name":"Bo Participant"}]}"#.utf8)
    static let finalAgreement = Array(
        #"{"terms":"shared kitchen rota","outcome":"resolved","outcome_confidential":true,"consents":["p1","p2"]}"#.utf8
    )

    static func agreement(_ participant: String) -> [UInt8] {
        Array(
            #"""
            {"participant":"\#(participant)","signed_at":"2026-03-01T14:00:00Z","method":"written","online":false,
             "acknowledgements":{"confidentiality":true,"no_recording":true,"will_not_compel_mediator":true,
             "will_not_discuss_outside":true}}
            """#.utf8)
    }

    static func note(_ text: String) -> [UInt8] { Array(#"{"text":"\#(text)"}"#.utf8) }

    /// A daemon's vault on `clusters`: the vault's root key, the daemon's epoch key file, the standby listed
    /// first (the storage finds the primary).
    func vault(
        _ daemon: Daemon, _ clusters: PostgresClusters, holdsKeepSessionNotes: Bool = false,
        retention: RetentionSchedule? = nil, sweepBatch: Int = 500,
        clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    ) throws -> Vault<PostgresStorage> {
        let storage = PostgresStorage(
            sealing: try SealingServices(rootKey: Self.vaultRootKey),
            locator: PrimaryLocator(
                location: try clusters.location([clusters.standby, clusters.primary]), password: clusters.password,
                logger: self.logger),
            epochKeys: daemon.exchange.file, eraseWindow: 86_400, maxContentBytes: 1 << 20,
            retention: retention
                ?? RetentionSchedule(
                    rules: RetentionSchedule.standard.rules, holdsKeepSessionNotes: holdsKeepSessionNotes),
            sweepBatch: sweepBatch, logger: self.logger, clock: clock)
        return Vault(storage: storage)
    }

    /// Two daemons' vaults on `clusters`, the schema migrated, epoch 1 turned to by a and received by b.
    func twoVaults(_ clusters: PostgresClusters, _ keys: KeyFolder, holdsKeepSessionNotes: Bool = false) async throws
        -> (Daemon, Daemon, Vault<PostgresStorage>, Vault<PostgresStorage>)
    {
        let (a, b) = try await self.twoDaemonsOnEpochOne(clusters, keys)
        return (
            a, b, try self.vault(a, clusters, holdsKeepSessionNotes: holdsKeepSessionNotes),
            try self.vault(b, clusters, holdsKeepSessionNotes: holdsKeepSessionNotes)
        )
    }

    /// A case opened by `first`, with both agreements filed by `first` and a note for each of `notes` filed
    /// by `second`: its id and the notes'.
    static func caseInSession(
        _ first: Vault<PostgresStorage>, _ second: Vault<PostgresStorage>, mediators: [UInt32] = [], notes: [String],
        awaited: Bool = false
    ) throws -> (CaseID, [RecordID]) {
        let summary = try first.openCase(header: Self.header, mediators: mediators, author: nil)
        for participant in ["p1", "p2"] {
            _ = try first.file(
                NewRecord(caseID: summary.id, type: .agreementToMediate, content: Self.agreement(participant)),
                awaited: awaited)
        }
        let ids = try notes.map { text in
            try second.file(
                NewRecord(caseID: summary.id, type: .sessionNote, content: Self.note(text)), awaited: awaited
            ).record.id
        }
        return (summary.id, ids)
    }

    /// Runs `body` on a thread of its own: the storage blocks its caller, which must not be one of the
    /// cooperative pool's threads that run its queries.
    @discardableResult
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }

    /// Whether `count` (a statement that counts rows) finds any within ten seconds, asked every 10 ms: a
    /// session of the test's seen waiting for a lock, say.
    func untilFound(_ count: PostgresQuery, on connection: PostgresConnection) async throws -> Bool {
        for _ in 0..<1000 {
            for try await found in try await connection.query(count, logger: self.logger).decode(Int64.self)
            where found > 0 {
                return true
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    /// What `body` threw, as a `CaseVaultError`'s code; `nil` when it did not throw.
    func code(_ body: @escaping @Sendable () throws -> Void) async -> CaseVaultError.Code? {
        do {
            try await self.blocking(body)
            return nil
        } catch {
            return (error as? CaseVaultError)?.code
        }
    }

    @Test(
        "two daemons keep one case on PostgreSQL through the sealing layer: what one files the other opens; notes need every agreement; the final agreement deletes the notes' rows in its own transaction and closes the case; the notes are shredded for both; no content reaches the database's files; the same through the filings and reads the server awaits on its event loops",
        arguments: [false, true]
    )
    func caseAcrossDaemons(awaited: Bool) async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b) = try await self.twoDaemons(clusters, keys)
        let (vaultA, vaultB) = (try self.vault(a, clusters), try self.vault(b, clusters))
        // Before any epoch is ready, nothing is filed.
        #expect(
            await self.code { _ = try vaultA.openCase(header: Self.header, mediators: [4001], author: "intake") }
                == .keyUnavailable)
        _ = try await a.exchange.turn(from: nil, on: a.connection)
        #expect(try await b.exchange.receive(on: b.connection) == [1])

        let summary = try await self.blocking {
            try vaultA.openCase(header: Self.header, mediators: [4001], author: "intake")
        }
        let caseID = summary.id
        #expect(try await self.blocking { try vaultB.caseHeader(caseID) } == Self.header)
        #expect(try await self.blocking { try vaultB.storage.caseSummary(caseID) } == summary)
        #expect(
            await self.code {
                _ = try vaultB.file(
                    NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("too early")), awaited: awaited)
            } == .agreementsMissing)
        _ = try await self.blocking {
            try vaultA.file(
                NewRecord(caseID: caseID, type: .agreementToMediate, content: Self.agreement("p1")), awaited: awaited)
        }
        #expect(try await self.blocking { try vaultB.storage.caseSummary(caseID) }.state == .agreement)
        #expect(
            await self.code {
                _ = try vaultA.file(
                    NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("still early")), awaited: awaited)
            } == .agreementsMissing)
        _ = try await self.blocking {
            try vaultB.file(
                NewRecord(caseID: caseID, type: .agreementToMediate, content: Self.agreement("p2")), awaited: awaited)
        }
        // No participant is sealed beside an agreement (it would be under a subkey of the root key, outside
        // the erase window): a note's filing opens the agreements.
        let agreements = try await self.blocking { try vaultA.storage.agreements(caseID) }
        #expect(agreements.count == 2 && agreements.allSatisfy { $0.sealedParticipant == nil })
        #expect(
            try clusters.psql(
                clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
                "SELECT count(*) FROM information_schema.columns WHERE column_name LIKE '%participant%' AND table_name = 'casevault_records'"
            ) == "0")

        var notes: [RecordID] = []
        let waitsBefore = PostgresStorage.blockingWaitCount
        for (number, vault) in [vaultA, vaultB, vaultA].enumerated() {
            notes.append(
                try await self.blocking {
                    try vault.file(
                        NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("said in session \(number)")),
                        awaited: awaited)
                }.record.id)
        }
        // The awaited filings (each opening the case's agreements) blocked no thread on the database.
        let waitsAfter = PostgresStorage.blockingWaitCount
        #expect(awaited ? waitsAfter == waitsBefore : waitsAfter > waitsBefore, "\(waitsAfter - waitsBefore)")
        #expect(try await self.blocking { try vaultA.storage.caseSummary(caseID) }.state == .session)
        let second = notes[1]
        #expect(
            try await self.blocking { try vaultA.get(second, awaited: awaited) }.content
                == Self.note("said in session 1"))
        // What a read's decision sees, in one trip: the record, its case, and whether the reader is on the
        // mediator roster.
        try await self.blocking { try vaultA.storage.addToRoster(4001) }
        for (uid, listed) in [(UInt32(4001), true), (4002, false)] {
            let seen = try await self.blocking {
                let seen = Mutex<(RecordType, CaseID, Bool)?>(nil)
                _ = try vaultB.read(second, rosterUID: uid, awaited: awaited) {
                    record, summary, onRoster throws(CaseVaultError) in
                    seen.withLock { $0 = (record.type, summary.id, onRoster) }
                }
                return seen.withLock { $0 }
            }
            #expect(seen?.0 == .sessionNote && seen?.1 == caseID && seen?.2 == listed)
        }
        #expect(
            await self.code {
                _ = try vaultB.read(second, rosterUID: nil, awaited: awaited) { _, _, _ throws(CaseVaultError) in
                    throw CaseVaultError(.forbidden, "refused")
                }
            } == .forbidden)

        let filed = try await self.blocking {
            try vaultB.file(
                NewRecord(caseID: caseID, type: .finalAgreement, content: Self.finalAgreement), awaited: awaited)
        }
        #expect(filed.shredded == notes)
        #expect(try await self.blocking { try vaultA.storage.caseSummary(caseID) }.state == .closed)
        for note in notes {
            #expect(await self.code { _ = try vaultA.get(note, awaited: awaited) } == .shredded)
            #expect(await self.code { _ = try vaultB.storage.metadata(note) } == .shredded)
        }
        #expect(
            await self.code { _ = try vaultA.get(RecordID(bytes: Random.bytes(count: 16)), awaited: awaited) }
                == .notFound)
        #expect(
            await self.code {
                _ = try vaultA.file(
                    NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("late")), awaited: awaited)
            } == .caseClosed)
        let final = filed.record.id
        // The shreds' certificate, issued with them: erasure by destroying epoch 1, promised within the window.
        let publicKey = try SealingServices(rootKey: Self.vaultRootKey).certificatePublicKey
        let documents = try await self.blocking { try vaultB.storage.certificates(caseID: caseID) }
        let certificate = try #require(
            documents.count == 1 ? DestructionCertificate.verify(document: documents[0], publicKey: publicKey) : nil)
        #expect(certificate.method == "final_agreement" && certificate.version == 2)
        #expect(Set(certificate.records.map(\.recordID)) == Set(notes.map(\.rawValue)))
        #expect(certificate.records.allSatisfy { $0.type == "session_note" })
        let erasure = try #require(certificate.erasure)
        #expect(erasure.method == "key_destruction" && erasure.epoch == 1 && erasure.completes == nil)
        let issued = try #require(Timestamp.milliseconds(parsing: certificate.issuedAt))
        #expect(erasure.completeBy.flatMap(Timestamp.milliseconds(parsing:)) == issued + 86_400_000)
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 0)
        #expect(try await self.blocking { try vaultA.get(final) }.content == Self.finalAgreement)

        // Through a turn: a filing after it is wrapped under epoch 2; once the live records are rewrapped and
        // both daemons have destroyed epoch 1, what was filed under it opens at either daemon under epoch 2.
        // A third daemon that joined while epoch 1 was current: a copy of its key waits for it.
        let c = try await self.daemon("vault-c", clusters, keys: keys)
        try await c.exchange.publishPair(for: 1, on: c.connection)
        #expect(try await a.exchange.shareCurrent(on: a.connection).map(\.rawValue) == ["vault-c"])
        try await self.turn(from: 1, by: b, receivedBy: a)
        let evaluation = try await self.blocking {
            try vaultB.file(
                NewRecord(
                    caseID: caseID, type: .evaluation,
                    content: Array(#"{"satisfaction":5,"would_recommend":true}"#.utf8)),
                awaited: awaited)
        }.record.id
        // An amendment must replace a record of its own case and type: refused, whichever path files it.
        #expect(
            await self.code {
                _ = try vaultA.file(
                    NewRecord(
                        caseID: caseID, type: .evaluation,
                        content: Array(#"{"satisfaction":4,"would_recommend":true}"#.utf8), supersedes: final),
                    awaited: awaited)
            } == .invalidField)
        let records = PostgresRecords(logger: self.logger)
        #expect(try await records.row(evaluation, on: a.connection)?.epoch == 2)
        #expect(try await records.row(final, on: a.connection)?.epoch == 1)
        #expect(try await records.rewrap(below: 2, keys: try a.exchange.file.epochKeys(), on: a.connection) == 4)
        #expect(try await a.exchange.destroy(before: 2, on: a.connection) == [1])
        // Not complete while daemon b still holds epoch 1; complete, and certified once, when it does not.
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 0)
        #expect(try await b.exchange.destroy(before: 2, on: b.connection) == [1])
        // Not complete while a copy of epoch 1 waits for daemon c, nor once c holds it; complete once c, sealed
        // epoch 2 in its turn, has destroyed epoch 1 too.
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 0)
        #expect(try await c.exchange.receive(on: c.connection) == [1])
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 0)
        try await c.exchange.publishPair(for: 2, on: c.connection)
        #expect(try await a.exchange.shareCurrent(on: a.connection).map(\.rawValue) == ["vault-c"])
        #expect(try await c.exchange.receive(on: c.connection) == [2])
        #expect(try await c.exchange.destroy(before: 2, on: c.connection) == [1])
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 1)
        #expect(try await self.blocking { try vaultB.storage.certifyErasures() } == 0)
        let both = try await self.blocking { try vaultA.storage.certificates(caseID: caseID) }
        let completion = try #require(
            both.count == 2 ? DestructionCertificate.verify(document: both[1], publicKey: publicKey) : nil)
        #expect(completion.erasure?.completes == certificate.certificateID && completion.erasure?.epoch == 1)
        // Every daemon destroyed its own key: nothing rests on an operator's word.
        #expect(completion.erasure?.attested == nil && completion.version == 2)
        #expect(completion.records == certificate.records && completion.certificateID != certificate.certificateID)
        let completed = try #require(completion.erasure?.completedAt.flatMap(Timestamp.milliseconds(parsing:)))
        #expect(completed >= issued)
        #expect(try await records.row(final, on: a.connection)?.epoch == 2)
        for vault in [vaultA, vaultB] {
            #expect(try await self.blocking { try vault.get(final, awaited: awaited) }.content == Self.finalAgreement)
            #expect(try await self.blocking { try vault.caseHeader(caseID) } == Self.header)
        }

        // Each shred left its row: under the epoch its key was wrapped in, by the final agreement.
        let shreds = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            "SELECT count(*) FROM casevault_shreds WHERE epoch = 1 AND method = 'final_agreement' AND case_id = '\\x\(caseID)'"
        )
        #expect(shreds == "3")
        // Not yet on PostgreSQL, and saying so.

        #expect(await self.code { _ = try vaultA.openAttachment(final) } == .notFound)

        // No content, name or contact in any file of either cluster: everything was sealed first.
        try await a.connection.query("CHECKPOINT", logger: self.logger)
        try clusters.waitForStandby()
        var found: [String] = []
        var plain = 0
        for data in [clusters.primaryData, clusters.standbyData] {
            for file in Self.files(under: data) {
                // The search's control: a record's type and a shred's method are kept in the clear, and found.
                if Self.contains(file.bytes, Array("final_agreement".utf8)) { plain += 1 }
                for secret in ["Ada Participant", "ada@example.edu", "kitchen rota", "said in session"]
                where Self.contains(file.bytes, Array(secret.utf8)) {
                    found.append("\(secret) in \(file.path)")
                }
            }
        }
        #expect(plain >= 2)
        #expect(found.isEmpty)
    }

    @Test(
        "a final agreement and notes filed at once from two daemons: the case lock orders them, so no note outlives the final agreement in a closed case; the same through the filings the server awaits on its event loops",
        arguments: [false, true]
    )
    func caseLockAcrossDaemons(awaited: Bool) async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (_, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)

        var interleaved = 0
        for round in 0..<8 {
            let caseID = try await self.blocking {
                try Self.caseInSession(vaultA, vaultA, notes: ["first"], awaited: awaited).0
            }
            // Daemon b files notes until the case is closed under it; daemon a files the final agreement.
            async let notes: Int? = try? self.blocking {
                var filed = 0
                while true {
                    do {
                        _ = try vaultB.file(
                            NewRecord(caseID: caseID, type: .sessionNote, content: Self.note("more")), awaited: awaited)
                        filed += 1
                    } catch {
                        guard (error as? CaseVaultError)?.code == .caseClosed else { throw error }
                        return filed
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(20))
            let final = try await self.blocking {
                try vaultA.file(
                    NewRecord(caseID: caseID, type: .finalAgreement, content: Self.finalAgreement), awaited: awaited)
            }
            let filedNotes = await notes
            #expect(final.shredded.count == (filedNotes ?? -1) + 1, "round \(round)")
            interleaved += filedNotes ?? 0
            let live = try clusters.psql(
                clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
                "SELECT count(*) FROM casevault_records WHERE type = 'session_note' AND case_id = '\\x\(caseID)'")
            #expect(live == "0", "round \(round): session notes outlived the final agreement")
        }

        // Daemon b's notes did go in between: the rounds raced.
        #expect(interleaved > 0)
    }

    @Test(
        "legal holds on PostgreSQL: a reason placed by one daemon opens at the other; a hold keeps a case's notes from its final agreement; its reason key is rewrapped at a turn, and a released hold's residue opens for no one once its epoch is destroyed"
    )
    func holdsAcrossATurn() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b, vaultA, vaultB) = try await self.twoVaults(clusters, keys, holdsKeepSessionNotes: true)
        let (caseID, notes) = try await self.blocking {
            try Self.caseInSession(vaultA, vaultB, notes: ["kept", "kept"])
        }
        let reason = "litigation hold for Ada Participant"
        let first = try await self.blocking {
            try vaultA.placeHold(on: caseID, reason: reason, authority: Authority(uid: 4100, role: "director"))
        }
        #expect(try await self.blocking { try vaultB.holds() } == [first])
        #expect(
            await self.code {
                _ = try vaultA.placeHold(
                    on: CaseID(bytes: Random.bytes(count: 16)), reason: "x", authority: .daemon)
            } == .notFound)

        // Held: the final agreement shreds no note, and both stay readable.
        let filed = try await self.blocking {
            try vaultB.file(NewRecord(caseID: caseID, type: .finalAgreement, content: Self.finalAgreement))
        }
        #expect(filed.shredded.isEmpty)
        for note in notes {
            #expect(try await self.blocking { try vaultA.get(note) }.content == Self.note("kept"))
        }

        // Released: gone for every reader at once; what the database kept of it is its wrapped reason key and
        // its sealed reason, under epoch 1.
        let residue = try await self.holdRow(first.id, on: a.connection)
        #expect(residue?.epoch == 1)
        #expect(try await self.blocking { try vaultB.storage.releaseHold(first.id) } == caseID)
        #expect(try await self.blocking { try vaultA.holds() }.isEmpty)
        #expect(await self.code { _ = try vaultA.storage.releaseHold(first.id) } == .notFound)
        let second = try await self.blocking {
            try vaultB.placeHold(on: caseID, reason: "second \(reason)", authority: .daemon)
        }

        // One turn: the standing hold's reason key is rewrapped with the live records (header, two agreements,
        // two notes, the final agreement), and once both daemons destroyed epoch 1 it opens under epoch 2 at
        // either daemon.
        try await self.turn(from: 1, by: b, receivedBy: a)
        let records = PostgresRecords(logger: self.logger)
        #expect(try await records.wrappedBelow(2, on: a.connection))
        #expect(try await records.rewrap(below: 2, keys: try a.exchange.file.epochKeys(), on: a.connection) == 7)
        #expect(try await !records.wrappedBelow(2, on: a.connection))
        #expect(try await a.exchange.destroy(before: 2, on: a.connection) == [1])
        #expect(try await b.exchange.destroy(before: 2, on: b.connection) == [1])
        #expect(try await self.holdRow(second.id, on: b.connection)?.epoch == 2)
        for vault in [vaultA, vaultB] {
            #expect(try await self.blocking { try vault.holds() } == [second])
        }

        // The released hold's residue: its sealed reason is in the primary's and the standby's files, and its
        // reason key opens under no key either daemon holds; the reason in clear is in no file.
        let released = try #require(residue)
        try await a.connection.query("CHECKPOINT", logger: self.logger)
        try clusters.waitForStandby()
        for data in [clusters.primaryData, clusters.standbyData] {
            let files = Self.files(under: data)
            #expect(files.contains { Self.containsInWAL($0.bytes, released.sealedReason) }, "\(data)")
            #expect(!files.contains { Self.contains($0.bytes, Array("Ada Participant".utf8)) }, "\(data)")
        }
        // Epoch 1's key, the only one its reason key opens under, is in neither daemon's file.
        for daemon in [a, b] {
            #expect(try daemon.exchange.file.epochKeys().map(\.number) == [2])
        }
        #expect(released.wrapped.count == EpochKey.wrappedByteCount)
    }

    @Test(
        "a shred on request on PostgreSQL: refused whole for an unknown id, one already shredded or one a hold covers (a note is not covered), changing nothing; otherwise the rows go in one transaction and each case gets a certificate naming the request"
    )
    func shredOnRequest() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (_, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let intakeForm = Array(#"{"dispute_category":"roommate","screening_notes":"quiet hours"}"#.utf8)
        let (caseID, intake, note) = try await self.blocking {
            let summary = try vaultA.openCase(header: Self.header, mediators: [], author: nil)
            let intake = try vaultA.file(NewRecord(caseID: summary.id, type: .intakeForm, content: intakeForm))
            for participant in ["p1", "p2"] {
                _ = try vaultA.file(
                    NewRecord(caseID: summary.id, type: .agreementToMediate, content: Self.agreement(participant)))
            }
            let note = try vaultB.file(NewRecord(caseID: summary.id, type: .sessionNote, content: Self.note("n")))
            return (summary.id, intake.record.id, note.record.id)
        }
        let order = ShredOrder(
            method: .request, authority: Authority(uid: 4100, role: "director"), reason: "filed_in_error")
        let hold = try await self.blocking { try vaultB.placeHold(on: caseID, reason: "audit", authority: .daemon) }

        // Held: the intake form is covered, alone or with the note, and nothing changes.
        #expect(await self.code { _ = try vaultA.storage.shred([intake], order: order) } == .held)
        #expect(await self.code { _ = try vaultA.storage.shred([note, intake], order: order) } == .held)
        #expect(try await self.blocking { try vaultB.get(note) }.content == Self.note("n"))
        // A note is not covered (without holds_keep_session_notes).
        let gone = try await self.blocking { try vaultA.storage.shred([note], order: order) }
        #expect(gone.map(\.id) == [note] && gone.first?.type == .sessionNote)
        #expect(await self.code { _ = try vaultB.get(note) } == .shredded)

        // Released: an unknown id with it refuses the whole call, as does one already shredded.
        _ = try await self.blocking { try vaultA.storage.releaseHold(hold.id) }
        let unknown = RecordID(bytes: Random.bytes(count: 16))
        #expect(await self.code { _ = try vaultA.storage.shred([intake, unknown], order: order) } == .notFound)
        #expect(await self.code { _ = try vaultA.storage.shred([intake, note], order: order) } == .shredded)
        #expect(try await self.blocking { try vaultB.get(intake) }.content == intakeForm)
        #expect(try await self.blocking { try vaultB.storage.shred([intake], order: order) }.map(\.id) == [intake])
        #expect(await self.code { _ = try vaultA.get(intake) } == .shredded)
        #expect(await self.code { _ = try vaultA.storage.shred([intake], order: order) } == .shredded)

        // A shred waits for the case's lock: a hold placed while another daemon holds the lock, and the shred
        // waits, is there when the shred goes on, which then refuses.
        let late = try await self.blocking {
            try vaultA.file(NewRecord(caseID: caseID, type: .intakeForm, content: intakeForm)).record.id
        }
        let raced = RacedShred()
        let finishedEarly = try await self.blocking {
            try vaultB.storage.withCaseLock(caseID) { () throws(CaseVaultError) -> Bool in
                Thread {
                    do {
                        _ = try vaultA.storage.shred([late], order: order)
                        raced.finish(nil)
                    } catch {
                        raced.finish((error as? CaseVaultError)?.code ?? .storageFailure)
                    }
                }.start()
                Thread.sleep(forTimeInterval: 0.3)
                let finishedEarly = raced.isFinished
                _ = try vaultB.placeHold(on: caseID, reason: "late", authority: .daemon)
                return finishedEarly
            }
        }
        #expect(!finishedEarly, "the shred did not wait for the case's lock")
        #expect(try await self.blocking { raced.wait() } == .held)
        #expect(try await self.blocking { try vaultB.get(late) }.content == intakeForm)

        // Two certificates, one a shred, each naming the request, its reason and who ordered it.
        let publicKey = try SealingServices(rootKey: Self.vaultRootKey).certificatePublicKey
        let certificates = try await self.blocking { try vaultA.storage.certificates(caseID: caseID) }.compactMap {
            DestructionCertificate.verify(document: $0, publicKey: publicKey)
        }
        #expect(certificates.map { $0.records.map(\.recordID) } == [[note.rawValue], [intake.rawValue]])
        for certificate in certificates {
            #expect(certificate.method == "shred_request" && certificate.reason == "filed_in_error")
            #expect(certificate.authorisedBy.uid == 4100 && certificate.authorisedBy.role == "director")
            #expect(certificate.erasure?.epoch == 1)
        }
    }

    @Test(
        "attachments on PostgreSQL: sealed in 64 KiB rows, read back whole at the other daemon; a second upload of the same record is refused at its finish and its rows go; a shred removes the attachment and stops an upload under way"
    )
    func attachmentsOnPostgres() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (_, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let intakeForm = Array(#"{"dispute_category":"roommate","screening_notes":"see the scan"}"#.utf8)
        let (first, other) = try await self.blocking {
            let summary = try vaultA.openCase(header: Self.header, mediators: [], author: nil)
            let first = try vaultA.file(NewRecord(caseID: summary.id, type: .intakeForm, content: intakeForm))
            let other = try vaultA.file(NewRecord(caseID: summary.id, type: .intakeForm, content: intakeForm))
            return (first.record.id, other.record.id)
        }
        let payload = Random.bytes(count: 200_000)
        let upload = try await self.blocking {
            let upload = try vaultA.beginAttachment(first, mediaType: "application/pdf", maxBytes: 1 << 20)
            try Self.append(Array(payload), to: upload)
            return upload
        }
        // Another daemon's upload of the same record, while the first is under way, is refused at its start.
        #expect(
            await self.code { _ = try vaultB.beginAttachment(first, mediaType: "text/plain", maxBytes: 1 << 20) }
                == .attachmentExists)
        try await self.blocking { try vaultA.finishAttachment(upload) }
        #expect(
            await self.code { _ = try vaultB.beginAttachment(first, mediaType: "text/plain", maxBytes: 1 << 20) }
                == .attachmentExists)
        let (mediaType, size, read) = try await self.blocking {
            let download = try vaultB.openAttachment(first)
            var read: [UInt8] = []
            while let chunk = try download.next() { read += chunk }
            return (download.mediaType, download.size, read)
        }
        #expect(mediaType == "application/pdf" && size == 200_000 && read == payload)
        // The head and four chunks of the one upload kept, and no upload under way.
        let rows = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            """
            SELECT count(*), count(DISTINCT upload), (SELECT count(*) FROM casevault_uploads)
            FROM casevault_attachment_chunks
            """)
        #expect(rows == "5|1|0")
        #expect(await self.code { _ = try vaultA.openAttachment(other) } == .notFound)

        // A shred: the attachment goes with its record, and an upload under way is stopped.
        let pending = try await self.blocking {
            let upload = try vaultB.beginAttachment(other, mediaType: "image/png", maxBytes: 1 << 20)
            try Self.append(Array(payload.prefix(70_000)), to: upload)
            return upload
        }
        _ = try await self.blocking {
            try vaultA.storage.shred([first, other], order: ShredOrder(method: .request, authority: .daemon))
        }
        #expect(
            try clusters.psql(
                clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
                "SELECT (SELECT count(*) FROM casevault_attachment_chunks) + (SELECT count(*) FROM casevault_attachments)"
            ) == "0")
        #expect(
            await self.code {
                try Self.append(Array(payload.prefix(70_000)), to: pending)
            } == .shredded)
        #expect(await self.code { try vaultB.finishAttachment(pending) } == .shredded)
        #expect(await self.code { _ = try vaultA.openAttachment(first) } == .shredded)
    }

    @Test(
        "uploads on PostgreSQL: one dropped unfinished leaves no rows; one idle past the limit is taken over by the next, and its own appends and finish are refused; a download cut by a shred reports the shred"
    )
    func uploadsOnPostgres() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (_, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let intakeForm = Array(#"{"dispute_category":"roommate","screening_notes":"see the scan"}"#.utf8)
        let record = try await self.blocking {
            let summary = try vaultA.openCase(header: Self.header, mediators: [], author: nil)
            return try vaultA.file(NewRecord(caseID: summary.id, type: .intakeForm, content: intakeForm)).record.id
        }
        let uploadRows = {
            try clusters.psql(
                clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
                "SELECT (SELECT count(*) FROM casevault_attachment_chunks) + (SELECT count(*) FROM casevault_uploads)")
        }
        let payload = Random.bytes(count: 150_000)

        // Dropped unfinished (a failed request): its rows go, and the next upload may begin.
        try await self.blocking {
            let upload = try vaultA.beginAttachment(record, mediaType: "application/pdf", maxBytes: 1 << 20)
            try Self.append(Array(payload), to: upload)
        }
        var rows = try uploadRows()
        for _ in 0..<100 where rows != "0" {
            try await Task.sleep(for: .milliseconds(100))
            rows = try uploadRows()
        }
        #expect(rows == "0", "a dropped upload's rows were not deleted")

        // Idle past the limit: the next upload takes its place; the first one's appends and finish are refused.
        let idle = try await self.blocking {
            let upload = try vaultA.beginAttachment(record, mediaType: "application/pdf", maxBytes: 1 << 20)
            try Self.append(Array(payload.prefix(70_000)), to: upload)
            return upload
        }
        #expect(
            await self.code { _ = try vaultB.beginAttachment(record, mediaType: "text/plain", maxBytes: 1 << 20) }
                == .attachmentExists)
        // Its last append 16 minutes ago by the database's clock, which times uploads whatever the daemons'
        // clocks say.
        _ = try clusters.psql(
            clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
            "UPDATE casevault_uploads SET touched_at = touched_at - \(PostgresStorage.staleUpload + 60_000)")
        let second = Random.bytes(count: 100_000)
        try await self.blocking {
            let upload = try vaultB.beginAttachment(record, mediaType: "image/png", maxBytes: 1 << 20)
            try Self.append(second, to: upload)
            try vaultB.finishAttachment(upload)
        }
        #expect(await self.code { try Self.append(Array(payload.prefix(70_000)), to: idle) } == .requestTimeout)
        #expect(await self.code { try vaultA.finishAttachment(idle) } == .requestTimeout)
        let (mediaType, read) = try await self.blocking {
            let download = try vaultA.openAttachment(record)
            var read: [UInt8] = []
            while let chunk = try download.next() { read += chunk }
            return (download.mediaType, read)
        }
        #expect(mediaType == "image/png" && read == second)
        // The head and two chunks of the upload that finished, nothing of the idle one.
        #expect(try uploadRows() == "3")

        // A download under way when the record is shredded: its next chunk reports the shred.
        let download = try await self.blocking {
            let download = try vaultA.openAttachment(record)
            _ = try download.next()
            return download
        }
        _ = try await self.blocking {
            try vaultB.storage.shred([record], order: ShredOrder(method: .request, authority: .daemon))
        }
        #expect(await self.code { _ = try download.next() } == .shredded)
        #expect(try uploadRows() == "0")
    }

    @Test(
        "statistics on PostgreSQL: each case's facts taken from its intake form, final agreement and evaluations at the other daemon, afresh for every report, none kept in the database; a shredded form no longer counts"
    )
    func statisticsOnPostgres() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (_, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        @Sendable func intake(_ category: String) -> [UInt8] {
            Array(#"{"dispute_category":"\#(category)","screening_notes":"n"}"#.utf8)
        }
        let (closed, noisy) = try await self.blocking {
            let closed = try vaultA.openCase(header: Self.header, mediators: [], author: nil).id
            _ = try vaultA.file(NewRecord(caseID: closed, type: .intakeForm, content: intake("roommate")))
            for participant in ["p1", "p2"] {
                _ = try vaultB.file(
                    NewRecord(caseID: closed, type: .agreementToMediate, content: Self.agreement(participant)))
            }
            _ = try vaultA.file(NewRecord(caseID: closed, type: .finalAgreement, content: Self.finalAgreement))
            for score in [4, 5] {
                _ = try vaultB.file(
                    NewRecord(
                        caseID: closed, type: .evaluation,
                        content: Array(#"{"satisfaction":\#(score),"would_recommend":true}"#.utf8)))
            }
            let noisy = try vaultB.openCase(header: Self.header, mediators: [], author: nil).id
            let form = try vaultB.file(NewRecord(caseID: noisy, type: .intakeForm, content: intake("noise")))
            return (closed, (noisy, form.record.id))
        }
        let summaries = try await self.blocking {
            [try vaultA.storage.caseSummary(closed), try vaultA.storage.caseSummary(noisy.0)]
        }
        for _ in 0..<2 {
            let facts = try await self.blocking { try vaultB.statisticsFacts() }
            #expect(facts.map(\.openedAt) == summaries.map(\.createdAt))
            #expect(facts.map(\.category) == ["roommate", "noise"])
            #expect(facts.map(\.outcome) == ["resolved", nil])
            #expect(facts.map(\.satisfaction) == [[4, 5], []])
            #expect(facts.first?.closedAt == summaries.first?.closedAt && facts.first?.closedAt != nil)
        }
        _ = try await self.blocking {
            try vaultA.storage.shred([noisy.1], order: ShredOrder(method: .request, authority: .daemon))
        }
        #expect(try await self.blocking { try vaultA.statisticsFacts() }.map(\.category) == ["roommate", nil])
        // No facts are kept: no table holds any.
        #expect(
            try clusters.psql(
                clusters.primaryPort, clusters.primarySockets, PostgresClusters.database,
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND (table_name LIKE '%statistic%' OR table_name LIKE '%fact%')"
            ) == "0")
    }

    @Test(
        "closing a case without agreement on PostgreSQL shreds its notes with a certificate naming the outcome, which the statistics then report; mediators and supervisors are replaced, and a case lock's body that throws after replacing them (and after a call with a transaction of its own) writes nothing; the roster adds and removes once, and a filing and a read see the case, record and roster in one statement"
    )
    func closingAndAssignments() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (_, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let (caseID, notes) = try await self.blocking {
            try Self.caseInSession(vaultA, vaultB, mediators: [4001], notes: ["n", "n"])
        }
        let unknown = CaseID(bytes: Random.bytes(count: 16))

        // Assignments: replaced whole, read at the other daemon; an unknown case is not-found.
        try await self.blocking {
            try vaultA.storage.assign(.mediators, caseID, [4003, 4002, 4003])
            try vaultA.storage.assign(.supervisors, caseID, [5001])
        }
        let assigned = try await self.blocking { try vaultB.storage.caseSummary(caseID) }
        #expect(assigned.mediators == [4002, 4003] && assigned.supervisors == [5001])
        #expect(await self.code { try vaultB.storage.assign(.mediators, unknown, [1]) } == .notFound)

        // A case lock's body that throws writes nothing: what it wrote, seen inside, rolls back with it.
        let insideLock = try await self.blocking { () throws -> (CaseVaultError.Code?, [UInt32]) in
            let inside = Mutex<[UInt32]>([])
            do {
                try vaultA.storage.withCaseLock(caseID) { () throws(CaseVaultError) in
                    try vaultA.storage.assign(.mediators, caseID, [4009])
                    // A call that opens a transaction of its own joins the lock's: its commit is not the body's.
                    _ = try vaultA.storage.certifyErasures()
                    inside.withLock { $0 = (try? vaultA.storage.caseSummary(caseID).mediators) ?? [] }
                    throw CaseVaultError(.invalidField, "refused after writing")
                }
                return (nil, inside.withLock { $0 })
            } catch let error as CaseVaultError {
                return (error.code, inside.withLock { $0 })
            }
        }
        #expect(insideLock.0 == .invalidField && insideLock.1 == [4009])
        #expect(try await self.blocking { try vaultB.storage.caseSummary(caseID) }.mediators == [4002, 4003])

        // The roster: added once, listed, taken off once.
        let roster = try await self.blocking {
            [
                try vaultA.storage.addToRoster(4002), try vaultB.storage.addToRoster(4002),
                try vaultA.storage.addToRoster(4001),
            ]
        }
        #expect(roster == [true, false, true])
        #expect(try await self.blocking { try vaultB.storage.roster() } == [4001, 4002])
        #expect(try await self.blocking { try vaultB.storage.removeFromRoster(4002) })
        #expect(try await !self.blocking { try vaultA.storage.removeFromRoster(4002) })
        #expect(try await !self.blocking { try vaultA.storage.isOnRoster(4002) })
        #expect(try await self.blocking { try vaultA.storage.isOnRoster(4001) })

        // A filing's and a reading's one statement: the case (or the record and its case) and whether the
        // caller is on the roster, a filing's under the case's lock with the filing lock and the wrap epoch.
        let trips = try await self.blocking {
            let uids: [UInt32?] = [4001, 4002, nil]
            func filingRead(_ id: CaseID, _ uid: UInt32?) throws -> (CaseSummary?, Bool) {
                try vaultB.storage.withCaseLock(id, readingRoster: uid) {
                    summary, onRoster throws(CaseVaultError) in (summary, onRoster)
                }
            }
            let onCase = try uids.map { try filingRead(caseID, $0) }
            let unknownCase = try filingRead(unknown, 4001)
            let onRecord = try uids.map { uid in
                let seen = Mutex<(RecordID, CaseID, Bool)?>(nil)
                let stored = try vaultB.storage.storedRecord(notes[0], rosterUID: uid) {
                    metadata, summary, onRoster throws(CaseVaultError) in
                    seen.withLock { $0 = (metadata.id, summary.id, onRoster) }
                }
                #expect(stored.key.metadata.id == notes[0])
                return seen.withLock { $0 }
            }
            return (onCase.map { ($0.0?.id, $0.1) }, unknownCase.0 == nil && !unknownCase.1, onRecord)
        }
        #expect(trips.0.map(\.0) == [caseID, caseID, caseID] && trips.0.map(\.1) == [true, false, false])
        #expect(trips.1)
        #expect(
            trips.2.map { $0?.0 } == [notes[0], notes[0], notes[0]]
                && trips.2.map { $0?.1 } == [caseID, caseID, caseID])
        #expect(trips.2.map { $0?.2 } == [true, false, false])

        // Closed without agreement: the notes go, with a certificate naming the outcome.
        let closer = Authority(uid: 4001, role: "mediator")
        let shredded = try await self.blocking {
            try vaultB.storage.closeCase(caseID, outcome: .noAgreement, authority: closer)
        }
        #expect(shredded == notes)
        let closed = try await self.blocking { try vaultA.storage.caseSummary(caseID) }
        #expect(closed.state == .closed && closed.closedAt != nil)
        for note in notes {
            #expect(await self.code { _ = try vaultA.get(note) } == .shredded)
        }
        #expect(await self.code { _ = try vaultA.storage.closeCase(caseID, outcome: .withdrawn) } == .caseClosed)
        #expect(await self.code { _ = try vaultA.storage.closeCase(unknown, outcome: .withdrawn) } == .notFound)
        let publicKey = try SealingServices(rootKey: Self.vaultRootKey).certificatePublicKey
        let certificate = try #require(
            try await self.blocking { try vaultA.storage.certificates(caseID: caseID) }.first.flatMap {
                DestructionCertificate.verify(document: $0, publicKey: publicKey)
            })
        #expect(certificate.method == "case_closed" && certificate.reason == "no_agreement")
        #expect(certificate.authorisedBy.uid == 4001 && certificate.records.count == 2)
        let facts = try await self.blocking { try vaultB.statisticsFacts() }
        #expect(facts.map(\.outcome) == ["no_agreement"] && facts.first?.closedAt == closed.closedAt)
    }

    @Test(
        "listing on PostgreSQL: cases newest first by what the caller may see (every case, those in intake, a mediator's, a supervisor's), filtered and paged, with their live records counted; a case's records in filing order, paged"
    )
    func listingOnPostgres() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (_, _, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let (session, notes) = try await self.blocking {
            try Self.caseInSession(vaultA, vaultB, mediators: [4001], notes: ["one", "two"])
        }
        let (intake, supervised) = try await self.blocking {
            let intake = try vaultB.openCase(header: Self.header, mediators: [], author: nil).id
            let supervised = try vaultA.openCase(header: Self.header, mediators: [], author: nil).id
            try vaultA.storage.assign(.supervisors, supervised, [5001])
            return (intake, supervised)
        }
        let summaries = try await self.blocking {
            try [session, intake, supervised].map { id throws(CaseVaultError) in try vaultA.storage.caseSummary(id) }
        }
        /// The ids of `ids`' cases newest first, as the list orders them.
        func newestFirst(_ ids: [CaseID]) -> [CaseID] {
            summaries.filter { ids.contains($0.id) }.sorted {
                ($0.createdAt, $0.id.rawValue) > ($1.createdAt, $1.id.rawValue)
            }.map(\.id)
        }
        func list(_ query: CaseQuery, rosterUID: UInt32? = nil) async throws -> (rows: [CaseListRow], onRoster: Bool) {
            try await self.blocking { try vaultB.storage.listCases(rosterUID: rosterUID) { _ in query } }
        }

        let every = try await list(CaseQuery(visibility: CaseVisibility(everyCase: true)))
        #expect(every.rows.map(\.summary.id) == newestFirst([session, intake, supervised]))
        #expect(
            every.rows.map(\.summary)
                == newestFirst([session, intake, supervised]).map { id in summaries.first { $0.id == id }! })
        #expect(
            every.rows.first { $0.summary.id == session }?.liveRecords == [.agreementToMediate: 2, .sessionNote: 2])
        #expect(every.rows.first { $0.summary.id == intake }?.liveRecords == [:])
        #expect(
            try await list(CaseQuery(visibility: CaseVisibility(inIntake: true))).rows.map(\.summary.id)
                == newestFirst([intake, supervised]))
        #expect(
            try await list(CaseQuery(visibility: CaseVisibility(mediator: 4001))).rows.map(\.summary.id) == [session])
        #expect(
            try await list(CaseQuery(visibility: CaseVisibility(supervisor: 5001))).rows.map(\.summary.id) == [
                supervised
            ])
        #expect(try await list(CaseQuery(visibility: CaseVisibility(mediator: 4002))).rows.isEmpty)
        #expect(try await list(CaseQuery(visibility: CaseVisibility())).rows.isEmpty)
        #expect(
            try await list(CaseQuery(visibility: CaseVisibility(everyCase: true), assignedTo: 5001)).rows.map(
                \.summary.id) == [supervised])
        #expect(
            try await list(CaseQuery(visibility: CaseVisibility(everyCase: true), state: .session)).rows.map(
                \.summary.id) == [session])
        let oldest = summaries.map(\.createdAt).min()!
        #expect(
            try await list(CaseQuery(visibility: CaseVisibility(everyCase: true), openedBefore: oldest)).rows.isEmpty)
        #expect(
            try await list(CaseQuery(visibility: CaseVisibility(everyCase: true), openedFrom: oldest)).rows.count == 3)
        // Paged: two, then the rest after the second.
        let first = try await list(CaseQuery(visibility: CaseVisibility(everyCase: true), limit: 2)).rows
        #expect(first.map(\.summary.id) == Array(newestFirst([session, intake, supervised]).prefix(2)))
        let last = try #require(first.last).summary
        let rest = try await list(
            CaseQuery(
                visibility: CaseVisibility(everyCase: true), limit: 2,
                after: CaseListCursor(openedAt: last.createdAt, id: last.id)))
        #expect(rest.rows.map(\.summary.id) == Array(newestFirst([session, intake, supervised]).suffix(1)))
        // Whether the caller is on the roster is read first.
        #expect(try await !list(CaseQuery(visibility: CaseVisibility()), rosterUID: 4001).onRoster)
        try await self.blocking { try vaultA.storage.addToRoster(4001) }
        #expect(try await list(CaseQuery(visibility: CaseVisibility()), rosterUID: 4001).onRoster)

        // A case's records: every one in filing order, and paged by type.
        let all = try await self.blocking { try vaultB.storage.records(caseID: session) }
        #expect(all.map(\.type) == [.caseHeader, .agreementToMediate, .agreementToMediate, .sessionNote, .sessionNote])
        let types: Set<RecordType> = [.agreementToMediate, .sessionNote]
        let page = try await self.blocking {
            try vaultB.storage.liveRecords(caseID: session, types: types, after: nil, limit: 3)
        }
        #expect(page.records.map(\.id) == Array(all.dropFirst().prefix(3).map(\.id)))
        let next = try #require(page.next)
        let tail = try await self.blocking {
            try vaultB.storage.liveRecords(caseID: session, types: types, after: next, limit: 3)
        }
        #expect(tail.records.map(\.id) == [notes[1]] && tail.next == nil)
        let onlyNotes = try await self.blocking {
            try vaultB.storage.liveRecords(caseID: session, types: [.sessionNote], after: nil, limit: 10)
        }
        #expect(onlyNotes.records.map(\.id) == notes && onlyNotes.records.allSatisfy { $0.sealedSize > 0 })
    }

    /// Appends `bytes` to an upload.
    static func append(_ bytes: [UInt8], to upload: AttachmentUpload) throws {
        try bytes.withUnsafeBytes { try upload.append($0) }
    }

    @Test(
        "a filing through the storage holds the lock filings share from its case's lock on: after a turn, the count of records under the older epoch waits for the filing under way and sees its record"
    )
    func filingUnderCaseLockSharesTheFilingLock() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (a, b, vaultA, vaultB) = try await self.twoVaults(clusters, keys)
        let caseID = try await self.blocking { try vaultA.openCase(header: Self.header, mediators: [], author: nil).id }
        let intake = Array(#"{"dispute_category":"roommate","screening_notes":"n"}"#.utf8)

        // b files under epoch 1 inside the case's lock, and holds the lock (its transaction open) until told.
        let (filed, release) = (DispatchSemaphore(value: 0), DispatchSemaphore(value: 0))
        async let filing = self.blocking {
            try vaultB.storage.withCaseLock(caseID) { () throws(CaseVaultError) -> RecordID in
                let id = try vaultB.file(NewRecord(caseID: caseID, type: .intakeForm, content: intake)).record.id
                filed.signal()
                release.wait()
                return id
            }
        }
        try await self.blocking { filed.wait() }
        // Epoch 2 ready meanwhile, and every committed record rewrapped to it: only b's filing, not committed
        // yet, is under epoch 1, and the count of what is still under epoch 1 must wait for it.
        try await self.turn(from: 1, by: a, receivedBy: b)
        let records = PostgresRecords(logger: self.logger)
        #expect(try await records.rewrap(below: 2, keys: try a.exchange.file.epochKeys(), on: a.connection) == 1)
        for try await count in try await a.connection.query(
            "SELECT count(*) FROM casevault_records WHERE epoch < 2", logger: self.logger
        ).decode(Int64.self) {
            #expect(count == 0, "a committed record is still under epoch 1")
        }
        let locator = PrimaryLocator(
            location: try clusters.location([clusters.primary]), password: clusters.password, logger: self.logger)
        let (counter, _) = try await locator.connect()
        defer { counter.closeAtExit() }
        var counterPID: Int32 = 0
        for try await pid in try await counter.query("SELECT pg_backend_pid()", logger: self.logger).decode(Int32.self)
        {
            counterPID = pid
        }
        let counting = Task { try await records.wrappedBelow(2, on: counter) }
        let waiting = try await self.untilFound(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = \(counterPID)",
            on: a.connection)
        release.signal()
        let id = try await filing
        #expect(waiting, "the count did not wait for the filing under way")
        #expect(try await counting.value, "the count missed the record filed under epoch 1")
        #expect(try await self.blocking { try vaultA.get(id) }.content == intake)
    }

    @Test(
        "a case lock whose session the server ends (an operator's pg_terminate_backend, a restart): the next call in its body fails, once its 30 s are up at the latest, never hangs; nothing of the body is kept, and the storage files again on a new connection; the same for a case lock the server awaits, whose calls are bounded alike",
        arguments: [false, true]
    )
    func caseLockSessionEnded(awaited: Bool) async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let (_, _, vaultA, _) = try await self.twoVaults(clusters, keys)
        let caseID = try await self.blocking { try vaultA.openCase(header: Self.header, mediators: [], author: nil).id }
        let intake = Array(#"{"dispute_category":"roommate","screening_notes":"n"}"#.utf8)
        let (admin, _) = try await PrimaryLocator(
            location: try clusters.location([clusters.primary]), password: clusters.password, logger: self.logger
        ).connect()
        defer { admin.closeAtExit() }

        // The body files a form (awaited: reads; an awaited filing takes a case lock of its own and may not
        // nest), then waits while the server ends its session, then asks again.
        let (locked, ended, outcome) = (Flag(), Flag(), Outcome())
        if awaited {
            let storage = vaultA.storage
            Task { outcome.end(await Self.awaitedLockBody(storage, caseID, locked: locked, ended: ended)) }
        } else {
            Thread {
                do {
                    try vaultA.storage.withCaseLock(caseID) { () throws(CaseVaultError) -> Void in
                        _ = try vaultA.file(NewRecord(caseID: caseID, type: .intakeForm, content: intake))
                        locked.raise()
                        while !ended.isRaised { usleep(10_000) }
                        _ = try vaultA.storage.caseSummary(caseID)
                    }
                    outcome.end(nil)
                } catch {
                    outcome.end((error as? CaseVaultError)?.code ?? .storageFailure)
                }
            }.start()
        }
        while !locked.isRaised { try await Task.sleep(for: .milliseconds(10)) }
        let terminated = try await self.endSessionsIdleInTransaction(on: admin)
        ended.raise()
        #expect(terminated == 1, "one session held the case's lock")
        var code: CaseVaultError.Code??
        for _ in 0..<600 where code == nil {
            try await Task.sleep(for: .milliseconds(100))
            code = outcome.code
        }
        #expect(code != nil, "the call after the session ended did not return within 60 s")
        #expect(code == .some(.storageUnavailable) || code == .some(.storageFailure), "\(String(describing: code))")
        // Nothing of the body was kept (the awaited body wrote nothing): the case has its header alone; a filing
        // goes through on a new connection.
        if !awaited {
            #expect(
                try await self.blocking { try vaultA.storage.records(caseID: caseID) }.map(\.type) == [.caseHeader])
        }
        let filed = try await self.blocking {
            try vaultA.file(NewRecord(caseID: caseID, type: .intakeForm, content: intake), awaited: awaited)
        }
        #expect(try await self.blocking { try vaultA.storage.records(caseID: caseID) }.count == 2)
        #expect(try await self.blocking { try vaultA.get(filed.record.id, awaited: awaited) }.content == intake)
    }

    /// Ends, as an operator's `pg_terminate_backend` does, every other session idle inside a transaction (a
    /// case lock's, between its statements); how many it ended.
    func endSessionsIdleInTransaction(on admin: PostgresConnection) async throws -> Int {
        var terminated = 0
        for try await done in try await admin.query(
            """
            SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
            WHERE backend_type = 'client backend' AND state = 'idle in transaction' AND pid <> pg_backend_pid()
            """, logger: self.logger
        ).decode(Bool.self) where done {
            terminated += 1
        }
        return terminated
    }

    /// How a shred run on a thread of its own ended: its error's code, or `nil` when it shredded.
    final class RacedShred: Sendable {
        private let outcome = Mutex<(done: Bool, code: CaseVaultError.Code?)>((false, nil))
        private let done = DispatchSemaphore(value: 0)

        var isFinished: Bool { self.outcome.withLock { $0.done } }

        func finish(_ code: CaseVaultError.Code?) {
            self.outcome.withLock { $0 = (true, code) }
            self.done.signal()
        }

        func wait() -> CaseVaultError.Code? {
            self.done.wait()
            return self.outcome.withLock { $0.code }
        }
    }

    /// A hold's row as the database keeps it: its epoch, wrapped reason key and sealed reason.
    func holdRow(_ id: HoldID, on connection: PostgresConnection) async throws -> (
        epoch: Int64, wrapped: [UInt8], sealedReason: [UInt8]
    )? {
        for try await (epoch, wrapped, reason) in try await connection.query(
            "SELECT epoch, wrapped_key, sealed_reason FROM casevault_holds WHERE id = \(ByteBuffer(bytes: id.bytes))",
            logger: self.logger
        ).decode((Int64, ByteBuffer, ByteBuffer).self) {
            return (epoch, Array(wrapped.readableBytesView), Array(reason.readableBytesView))
        }
        return nil
    }
}

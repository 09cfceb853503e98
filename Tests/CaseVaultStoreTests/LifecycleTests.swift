import CaseVaultCore
import CaseVaultStore
import Foundation
import GRDB
import Testing

#if canImport(Glibc)
import Glibc
#endif

enum Lifecycle {
    static let header = Array(
        #"{"participants":[{"name":"Ada Participant","contact":"ada@example.edu"},{"name":"Bo Participant"}]}"#.utf8)

    static func agreement(_ participant: String, online: Bool = false) -> [UInt8] {
        let extra = online ? #","devices_off":true,"nobody_else_present":true"# : ""
        return Array(
            #"""
            {"participant":"\#(participant)","signed_at":"2026-03-01T14:00:00Z","method":"written","online":\#(online),
             "acknowledgements":{"confidentiality":true,"no_recording":true,"will_not_compel_mediator":true,
             "will_not_discuss_outside":true\#(extra)}}
            """#.utf8
        )
    }

    static func note(_ text: String) -> [UInt8] { Array(#"{"text":"\#(text)"}"#.utf8) }

    static let finalAgreement = Array(
        #"{"terms":"shared kitchen rota","outcome":"resolved","outcome_confidential":true,"consents":["p1","p2"]}"#.utf8
    )

    /// A case with both agreements and two notes on file.
    static func caseInSession(_ store: RecordStore) throws -> (CaseSummary, [RecordID]) {
        let summary = try store.sealed.openCase(header: Self.header, mediators: [4001], author: "intake")
        _ = try store.sealed.file(
            NewRecord(caseID: summary.id, type: .agreementToMediate, content: Self.agreement("p1")))
        _ = try store.sealed.file(
            NewRecord(caseID: summary.id, type: .agreementToMediate, content: Self.agreement("p2", online: true)))
        let notes = try (1...2).map { n in
            try store.sealed.file(NewRecord(caseID: summary.id, type: .sessionNote, content: Self.note("note \(n)")))
                .record.id
        }
        return (summary, notes)
    }
}

@Suite("Case lifecycle in the store")
struct LifecycleTests {
    @Test(
        "filing a note reads who agreed from the index, sealed, without opening the agreements; one whose sealed participant is missing or copied from another agreement is opened"
    )
    func agreedParticipantsFromTheIndex() throws {
        let vault = TestVault()
        var store = try vault.open()
        let summary = try store.sealed.openCase(header: Lifecycle.header, mediators: [], author: nil)
        let first = try store.sealed.file(
            NewRecord(caseID: summary.id, type: .agreementToMediate, content: Lifecycle.agreement("p1"))
        ).record
        let second = try store.sealed.file(
            NewRecord(caseID: summary.id, type: .agreementToMediate, content: Lifecycle.agreement("p2", online: true))
        ).record

        // Break p1's agreement's key slot: a filing that opened it would fail.
        try SlotFinder.breakSlot(of: first.id, in: vault)
        #expect(throws: CaseVaultError.self) { try store.sealed.get(first.id) }
        _ = try store.sealed.file(NewRecord(caseID: summary.id, type: .sessionNote, content: Lifecycle.note("n1")))
        store.close()

        // Nothing of who agreed is in clear in the index.
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        let kept = try index.read { db in
            try Data.fetchAll(db, sql: "SELECT participant FROM records WHERE participant IS NOT NULL")
        }
        #expect(kept.count == 2)
        for name in ["p1", "p2"] {
            #expect(!kept.contains { [UInt8]($0).contains(subsequence: Array(name.utf8)) })
        }

        // p2's agreement as an index written before it kept participants holds it: the filing opens it.
        try index.write { db in
            try db.execute(sql: "UPDATE records SET participant = NULL WHERE id = ?", arguments: [second.id.rawValue])
        }
        store = try vault.open()
        _ = try store.sealed.file(NewRecord(caseID: summary.id, type: .sessionNote, content: Lifecycle.note("n2")))
        #expect(try store.records(caseID: summary.id).filter { $0.type == .sessionNote }.count == 2)
        store.close()

        // p1's sealed participant copied onto p2's row does not open there: p2's agreement is opened.
        try index.write { db in
            try db.execute(
                sql: "UPDATE records SET participant = (SELECT participant FROM records WHERE id = ?) WHERE id = ?",
                arguments: [first.id.rawValue, second.id.rawValue])
        }
        store = try vault.open()
        defer { store.close() }
        _ = try store.sealed.file(NewRecord(caseID: summary.id, type: .sessionNote, content: Lifecycle.note("n3")))
        #expect(try store.records(caseID: summary.id).filter { $0.type == .sessionNote }.count == 3)
    }

    @Test("notes need every agreement; a final agreement shreds every note in the same operation and closes the case")
    func finalAgreementShredsNotes() throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let summary = try store.sealed.openCase(header: Lifecycle.header, mediators: [4001], author: "intake")
        #expect(summary.participants == ["p1", "p2"])
        #expect(try store.caseSummary(summary.id).state == .intake)

        do {
            _ = try store.sealed.file(
                NewRecord(caseID: summary.id, type: .sessionNote, content: Lifecycle.note("too early")))
            Issue.record("a note was filed before any agreement")
        } catch {
            #expect(error.code == .agreementsMissing)
        }
        _ = try store.sealed.file(
            NewRecord(caseID: summary.id, type: .agreementToMediate, content: Lifecycle.agreement("p1")))
        #expect(try store.caseSummary(summary.id).state == .agreement)
        do {
            _ = try store.sealed.file(
                NewRecord(caseID: summary.id, type: .sessionNote, content: Lifecycle.note("still early")))
            Issue.record("a note was filed with one agreement of two")
        } catch {
            #expect(error.code == .agreementsMissing)
        }
        _ = try store.sealed.file(
            NewRecord(caseID: summary.id, type: .agreementToMediate, content: Lifecycle.agreement("p2", online: true)))
        let notes = try (1...3).map { n in
            try store.sealed.file(NewRecord(caseID: summary.id, type: .sessionNote, content: Lifecycle.note("n\(n)")))
                .record
                .id
        }
        #expect(try store.caseSummary(summary.id).state == .session)

        let filed = try store.sealed.file(
            NewRecord(caseID: summary.id, type: .finalAgreement, content: Lifecycle.finalAgreement))
        #expect(Set(filed.shredded) == Set(notes))
        #expect(try store.caseSummary(summary.id).state == .closed)
        for note in notes {
            #expect(try store.isShredded(note))
        }
        do {
            _ = try store.sealed.file(
                NewRecord(caseID: summary.id, type: .sessionNote, content: Lifecycle.note("late")))
            Issue.record("a note was filed into a closed case")
        } catch {
            #expect(error.code == .caseClosed)
        }
        _ = try store.sealed.file(
            NewRecord(
                caseID: summary.id, type: .evaluation,
                content: Array(#"{"satisfaction":5,"would_recommend":true}"#.utf8)))
    }

    @Test("closing without a final agreement shreds the notes; an agreement must name a participant of the case")
    func closingAndParticipants() throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let (summary, notes) = try Lifecycle.caseInSession(store)
        do {
            _ = try store.sealed.file(
                NewRecord(caseID: summary.id, type: .agreementToMediate, content: Lifecycle.agreement("p3")))
            Issue.record("an agreement for a stranger was filed")
        } catch {
            #expect(error.code == .invalidField)
            #expect(error.field == "participant")
        }
        let nonConfidential = Array(
            #"{"terms":"t","outcome":"resolved","outcome_confidential":false,"consents":["p1"]}"#.utf8)
        do {
            _ = try store.sealed.file(NewRecord(caseID: summary.id, type: .finalAgreement, content: nonConfidential))
            Issue.record("a non-confidential outcome without everyone's consent was filed")
        } catch {
            #expect(error.field == "consents")
        }
        #expect(Set(try store.closeCase(summary.id, outcome: .withdrawn)) == Set(notes))
        #expect(try store.caseSummary(summary.id).state == .closed)
        #expect(try notes.allSatisfy { try store.isShredded($0) })
        do {
            _ = try store.closeCase(summary.id, outcome: .noAgreement)
            Issue.record("a closed case closed twice")
        } catch {
            #expect(error.code == .caseClosed)
        }
    }

    @Test("the case header is sealed: participants' names never reach a file of the data directory")
    func namesStaySealed() throws {
        let vault = TestVault()
        let store = try vault.open()
        _ = try Lifecycle.caseInSession(store)
        store.close()
        #expect(vault.filesContaining(Array("Ada Participant".utf8)).isEmpty)
        #expect(vault.filesContaining(Array("ada@example.edu".utf8)).isEmpty)
    }

    @Test(
        "a filer killed at any point of a final agreement leaves either no agreement and every note, or the agreement and every note shredded",
        arguments: Array(0..<21))
    func finalAgreementSurvivesSIGKILL(cycle: Int) throws {
        let points: [CrashPoint?] = [
            .putAfterFrameWrite, .putAfterFlush, .putAfterCommit, .shredAfterSlotOverwrite,
            .shredAfterCiphertextOverwrite, .shredAfterIndexRemoval, nil,
        ]
        let point = points[cycle % points.count]
        let vault = TestVault()
        let store = try vault.open()
        let (summary, notes) = try Lifecycle.caseInSession(store)
        store.close()

        var arguments = ["final-agreement", "--data", vault.data, "--key", vault.key, "--case-id", summary.id.rawValue]
        if let point {
            arguments += ["--crash-at", point.rawValue]
        } else {
            arguments += ["--die-after-microseconds", "\(Int.random(in: 0...20_000))"]
        }
        _ = try Helper.run(arguments)

        let reopened = try vault.open()
        defer { reopened.close() }
        let records = try reopened.records(caseID: summary.id)
        let agreements = records.filter { $0.type == .finalAgreement }
        if agreements.isEmpty {
            #expect(try reopened.caseSummary(summary.id).state == .session)
            for note in notes {
                #expect(
                    try reopened.sealed.get(note).content.isEmpty == false, "a note vanished without a final agreement")
            }
            #expect(try Certified.methods(reopened).isEmpty)
        } else {
            #expect(agreements.count == 1)
            #expect(try reopened.caseSummary(summary.id).state == .closed)
            for note in notes {
                #expect(try reopened.isShredded(note), "a note survived its final agreement")
            }
            let certified = try Certified.methods(reopened)
            #expect(
                Set(certified.keys) == Set(notes.map(\.rawValue)),
                "every shredded note has its certificate, after any crash")
            #expect(Set(certified.values) == ["final_agreement"])
        }
    }
}

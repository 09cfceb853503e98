import CaseVaultCore
import CaseVaultStore
import Foundation
import Testing

/// The statistical facts the store keeps per case: sealed in the index, taken again from the records only
/// when a case's records changed, so that a statistician's calls do not open every record each time.
@Suite("Statistics facts")
struct StatisticsFactsTests {
    @Test("a second call opens no record; a shred or a new filing is seen at once; nothing is in clear in the index")
    func factsFollowTheRecords() throws {
        let vault = TestVault()
        let store = try vault.open()
        defer { store.close() }
        let kase = try RetentionTests.openCase(store)
        _ = try RetentionTests.file(store, .intakeForm, in: kase.id)
        let evaluation = try RetentionTests.file(store, .evaluation, in: kase.id)
        let first = try store.sealed.statisticsFacts()
        #expect(first.count == 1 && first.first?.category == "roommate" && first.first?.satisfaction == [4], "\(first)")

        // Break the evaluation's key slot: a call that opened the record again would fail.
        try SlotFinder.breakSlot(of: evaluation.id, in: vault)
        #expect(throws: CaseVaultError.self) { try store.sealed.get(evaluation.id) }
        #expect(try store.sealed.statisticsFacts() == first, "the unchanged case's records were opened again")

        // A shred changes the case's records: its facts are taken again, without the shredded evaluation.
        try store.shred(evaluation.id)
        #expect(try store.sealed.statisticsFacts().first?.satisfaction == [])
        // A new filing is seen at once too.
        _ = try store.sealed.put(
            NewRecord(
                caseID: kase.id, type: .evaluation, content: Array(#"{"satisfaction":2,"would_recommend":false}"#.utf8))
        )
        #expect(try store.sealed.statisticsFacts().first?.satisfaction == [2])

        // The index (and its WAL) holds the facts sealed: no category in clear.
        for file in ["index.sqlite", "index.sqlite-wal"] {
            let bytes = (try? Data(contentsOf: URL(fileURLWithPath: vault.data + "/" + file))) ?? Data()
            #expect(bytes.range(of: Data("roommate".utf8)) == nil, "\(file) holds a category in clear")
        }
    }
}

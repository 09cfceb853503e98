import CaseVaultCore
import CaseVaultSealing
import CaseVaultStore
import Testing

/// The index's side of the case and record lists: pages through cases opened in the same millisecond, and
/// through a case's records after its newest ones were shredded (SQLite then gives a new row their number).
@Suite("Case and record lists in the index")
struct CaseListTests {
    static let header = Array(#"{"participants": [{"name": "A"}, {"name": "B"}]}"#.utf8)

    @Test("cases opened in one millisecond page one at a time, newest id first, without a gap or a repeat")
    func casesOfOneInstant() throws {
        let vault = TestVault()
        let clock = TestClock("2026-11-30T10:00:00Z")
        let store = try vault.open(clock: clock)
        defer { store.close() }
        var opened: [CaseID] = []
        for _ in 0..<7 {
            opened.append(try store.sealed.openCase(header: Self.header, mediators: [], author: nil).id)
        }
        var paged: [CaseID] = []
        var after: CaseListCursor?
        repeat {
            let query = CaseQuery(visibility: CaseVisibility(everyCase: true), limit: 2, after: after)
            let rows = try store.listCases(rosterUID: nil) { _ in query }.rows
            paged += rows.map(\.summary.id)
            after =
                rows.count == 2
                ? rows.last.map { CaseListCursor(openedAt: $0.summary.createdAt, id: $0.summary.id) } : nil
        } while after != nil && paged.count < 20
        #expect(paged == opened.sorted(by: >))
        // The visibility narrows the index's answer: no grant, no row.
        #expect(try store.listCases(rosterUID: nil) { _ in CaseQuery(visibility: CaseVisibility()) }.rows.isEmpty)
        #expect(
            try store.listCases(rosterUID: nil) { _ in CaseQuery(visibility: CaseVisibility(inIntake: true)) }.rows
                .count == 7)
    }

    @Test("a record filed after the newest ones were shredded is on the next page, though it takes their number")
    func recordAfterShreddedNewest() throws {
        let vault = TestVault()
        let clock = TestClock("2026-11-30T10:00:00Z")
        let store = try vault.open(clock: clock)
        defer { store.close() }
        let caseID = try store.sealed.openCase(header: Self.header, mediators: [], author: nil).id
        var filed: [RecordID] = []
        for n in 0..<3 {
            clock.now += 1
            filed.append(
                try store.sealed.put(
                    NewRecord(caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "\(n)"))
                ).id)
        }
        let types: Set<RecordType> = [.intakeForm]
        let first = try store.liveRecords(caseID: caseID, types: types, after: nil, limit: 3)
        #expect(first.records.map(\.id) == filed)
        let cursor = try #require(first.next)
        // The two newest go; the next record filed gets the number of the newest of them.
        try store.shred(filed[2])
        try store.shred(filed[1])
        clock.now += 1
        let later = try store.sealed.put(
            NewRecord(caseID: caseID, type: .intakeForm, content: Samples.content(.intakeForm, marker: "later"))
        ).id
        let next = try store.liveRecords(caseID: caseID, types: types, after: cursor, limit: 3)
        #expect(next.records.map(\.id) == [later])
        #expect(next.next == nil)
        // It did take a number at or below the cursor's, one of the shredded records' (a cursor of the number
        // alone would have missed it).
        let reused = try #require(try store.liveRecords(caseID: caseID, types: types, after: cursor, limit: 1).next)
        #expect(reused.sequence <= cursor.sequence)
    }
}

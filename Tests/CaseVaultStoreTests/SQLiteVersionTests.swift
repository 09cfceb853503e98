import Testing

@testable import CaseVaultStore

@Suite("The index's SQLite")
struct SQLiteVersionTests {
    @Test("an SQLite older than 3.35 (no DELETE ... RETURNING) is told apart from 3.35 and later")
    func versions() {
        #expect(Index.isAtLeast("3.40.1", 3, 35))
        #expect(Index.isAtLeast("3.35.0", 3, 35))
        #expect(Index.isAtLeast("4.0", 3, 35))
        #expect(!Index.isAtLeast("3.34.1", 3, 35))
        #expect(!Index.isAtLeast("2.99.0", 3, 35))
        #expect(!Index.isAtLeast("3", 3, 35))
        #expect(!Index.isAtLeast("", 3, 35))
    }
}

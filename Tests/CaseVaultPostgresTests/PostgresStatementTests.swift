import CaseVaultCore
import CaseVaultPostgres
import PostgresNIO
import Testing

/// How the vault's statements and transactions end on PostgreSQL (`PostgresConnection.perform`, `commit`).
extension EpochExchangeTests {
    @Test(
        "a statement whose rows are not read still throws its error (a division by zero after the rows' description), and a transaction a failed statement aborted is refused at its commit, never acknowledged"
    )
    func statementsRunToTheirEnd() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        let keys = try KeyFolder()
        let a = try await self.daemon("vault-a", clusters, keys: keys)

        // Run to its end, the statement's error comes out.
        await #expect(throws: PSQLError.self) {
            try await a.connection.perform("SELECT 1 / (SELECT count(*) - count(*) FROM pg_class)", logger: self.logger)
        }
        // Left unread, it is lost, and the transaction it aborted would end with PostgreSQL's ROLLBACK, which
        // `commit` refuses.
        try await a.connection.perform("BEGIN", logger: self.logger)
        try await a.connection.query("SELECT 1 / (SELECT count(*) - count(*) FROM pg_class)", logger: self.logger)
        do {
            try await a.connection.commit(logger: self.logger)
            Issue.record("a transaction rolled back at its commit was taken as committed")
        } catch let error as CaseVaultError {
            #expect(error.code == .storageFailure)
        }
        // The connection is usable again.
        try await a.connection.perform("SELECT 1", logger: self.logger)
        try await a.connection.close()
    }
}

import CaseVaultCore
import CaseVaultStore
import Foundation
import GRDB
import Testing

@Suite("Index migrations")
struct MigrationTests {
    /// Puts `vault`'s closed index back to the shape before certificates waited for their order to finish
    /// (`v10-certificates-at-finish`), with the records `marked` left `shredding` under a sweep's order, as
    /// a crash after a sweep's mark left them under the code before.
    static func rollBackToV9(_ vault: TestVault, marked: [RecordID]) throws {
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        try index.write { db in
            try db.execute(
                sql: """
                    DROP TABLE shred_certifying;
                    DROP TABLE shred_certified;
                    ALTER TABLE shred_order_list DROP COLUMN open;
                    DELETE FROM grdb_migrations WHERE identifier IN (
                        'v10-certificates-at-finish', 'v14-certifying-by-order', 'v15-certified-cases');
                    INSERT INTO shred_order_list (method, uid, role, reason)
                        VALUES ('retention_sweep', NULL, 'daemon', 'retention_expired');
                    """)
            let order = db.lastInsertedRowID
            for id in marked {
                try db.execute(
                    sql: "UPDATE records SET state = 'shredding', shred_order = ? WHERE id = ?",
                    arguments: [order, id.rawValue])
            }
        }
        try index.close()
    }

    @Test(
        "an index a later version migrated is refused at open, and opens again once that migration is gone")
    func laterIndexIsRefused() throws {
        let vault = TestVault()
        try vault.open().close()
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        try index.write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')")
        }
        try index.close()
        #expect {
            try vault.open()
        } throws: { error in
            (error as? CaseVaultError)?.code == .storageFailure && "\(error)".contains("later version")
        }
        let again = try DatabaseQueue(path: vault.data + "/index.sqlite")
        try again.write { db in
            try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v99-from-the-future'")
        }
        try again.close()
        try vault.open().close()
    }

    @Test(
        "an index from before certificates waited for their order opens: the records a crash left marked are shredded and certified under their order, the others read back, and later shreds are certified"
    )
    func indexBeforeCertificatesAtFinish() throws {
        let vault = TestVault()
        let (store, caseID, filed) = try RecordStoreTests.storeWithForms(vault, count: 6)
        let contents = try filed.map { try store.sealed.get($0).content }
        store.close()
        let marked = Array(filed.prefix(2))
        try Self.rollBackToV9(vault, marked: marked)

        let reopened = try vault.open()
        defer { reopened.close() }
        for id in marked {
            #expect(try reopened.isShredded(id), "a record left marked was not shredded at open")
        }
        let certified = try Certified.methods(reopened)
        #expect(Set(certified.keys) == Set(marked.map(\.rawValue)))
        #expect(certified.values.allSatisfy { $0 == "retention_sweep" }, "certified under another order")
        for (id, content) in zip(filed, contents).dropFirst(2) {
            #expect(try reopened.sealed.get(id).content == content)
        }
        try reopened.shred(filed[2])
        #expect(try Certified.methods(reopened)[filed[2].rawValue] == "shred_request")
        #expect(try reopened.certificates(caseID: caseID).count == 2)
    }

    @Test(
        "an index from before v14, with a killed sweep's removed records waiting for their certificates under the index keyed by case, opens: the migration keys it by order alone, the records are certified, one certificate per case, and none waits after"
    )
    func indexBeforeCertifyingByOrder() throws {
        let vault = TestVault()
        let (notes, sweepTime) = try SweepCrashTests.killSweepAfterTwoBatches(vault)
        let index = try DatabaseQueue(path: vault.data + "/index.sqlite")
        try index.write { db in
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM shred_certifying") == 8)
            try db.execute(
                sql: """
                    DROP INDEX shred_certifying_by_order;
                    CREATE INDEX shred_certifying_by_order ON shred_certifying (order_id, case_id);
                    DROP TABLE shred_certified;
                    DELETE FROM grdb_migrations
                        WHERE identifier IN ('v14-certifying-by-order', 'v15-certified-cases');
                    """)
        }
        try index.close()

        try SweepCrashTests.expectKilledSweepCertified(vault, notes: notes, at: sweepTime)
        let migrated = try DatabaseQueue(path: vault.data + "/index.sqlite")
        defer { try? migrated.close() }
        try migrated.read { db in
            let columns = try String.fetchAll(
                db, sql: "SELECT name FROM pragma_index_info('shred_certifying_by_order')")
            #expect(columns == ["order_id"])
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM shred_certifying") == 0)
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM shred_order_list") == 0)
        }
    }
}

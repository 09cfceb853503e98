package import CaseVaultCore
package import CaseVaultSealing
internal import Foundation

// What the statistics read of the index (the storage protocol's statistics calls): case rows, what each
// case's counted records are now, and the facts the sealing layer sealed.
extension RecordStore {
    package func statisticsSnapshot(types: [RecordType]) throws(CaseVaultError) -> StatisticsSnapshot {
        let names = types.map(\.rawValue)
        return try self.index.read { db in
            let cases = try Index.statisticsCases(db).map { row in
                StatisticsSnapshot.Case(
                    id: row.id, createdAt: row.createdAt, closedAt: row.closedAt, closingOutcome: row.closingOutcome)
            }
            let current = try Index.statisticsSources(db, types: names)
            var kept: [String: KeptFacts] = [:]
            for (id, facts) in try Index.keptStatisticsFacts(db) {
                kept[id] = KeptFacts(
                    caseID: id, newest: facts.newest, count: facts.count, sealed: [UInt8](facts.sealed))
            }
            return StatisticsSnapshot(cases: cases, current: current, kept: kept)
        }
    }

    package func statisticsRecordIDs(_ caseID: CaseID, types: [RecordType]) throws(CaseVaultError) -> [RecordID] {
        try self.index.read { db in
            try Index.statisticsRecords(db, caseID: caseID, types: types.map(\.rawValue))
        }.map(\.metadata.id)
    }

    package func keepStatisticsFacts(_ facts: [KeptFacts]) throws(CaseVaultError) {
        try self.index.write { db in
            for entry in facts {
                try Index.keepStatisticsFacts(
                    db, caseID: entry.caseID, newest: entry.newest, count: entry.count, sealed: entry.sealed)
            }
            // The facts of cases that are gone (disposed by retention) go with them.
            try Index.deleteStatisticsFactsOfGoneCases(db)
        }
    }
}

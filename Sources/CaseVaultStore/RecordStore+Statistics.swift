public import CaseVaultCore
internal import CaseVaultCrypto
internal import Foundation

extension RecordStore {
    /// What the statistics keep of one case's records, sealed in the index (`statistics_facts`): the
    /// latest intake form's category, the final agreement's outcome, each evaluation's satisfaction. Never
    /// in clear, and bound to its case by associated data.
    struct SealedFacts: Codable, Equatable {
        var category: String?
        var outcome: String?
        var satisfaction: [Int]
    }

    static let statisticsTypes = [
        RecordType.intakeForm.rawValue, RecordType.finalAgreement.rawValue, RecordType.evaluation.rawValue,
    ]

    /// What the statistics count of each case (docs/API.md), read inside the store; the result carries no
    /// case id. Each case's three facts are kept sealed in the index together with what they were taken
    /// from (the newest and the number of its live intake forms, final agreements and evaluations): a call
    /// opens only the records of cases whose records changed since (filed or shredded), takes the three
    /// fields, wipes the content, and seals the facts again. So repeated calls cost one small decryption a
    /// case, not one per record.
    public func statisticsFacts() throws(CaseVaultError) -> [Statistics.CaseFacts] {
        let (cases, current, kept) = try self.index.read { db in
            let cases = try Index.statisticsCases(db)
            let current = try Index.statisticsSources(db, types: Self.statisticsTypes)
            let kept = try Index.keptStatisticsFacts(db)
            return (cases, current, kept)
        }
        var result: [Statistics.CaseFacts] = []
        var resealed: [(caseID: String, newest: Int64, count: Int64, sealed: [UInt8])] = []
        for row in cases {
            let id = row.id
            guard let caseID = try? CaseID(id) else { continue }
            let closedAt = row.closedAt
            var facts = Statistics.CaseFacts(
                openedAt: row.createdAt, closedAt: closedAt, category: nil, outcome: row.closingOutcome,
                satisfaction: [])
            let now = current[id] ?? (0, 0)
            // Facts that do not open (altered, or another vault's) are derived data: taken again.
            var taken: SealedFacts?
            if let stored = kept[id], stored.newest == now.newest, stored.count == now.count,
                let opened = self.barrier.openStatisticsFacts(
                    [UInt8](stored.sealed), caseID: caseID, as: SealedFacts.self)
            {
                taken = opened
            } else if now.count > 0 {
                let fresh = try self.takeFacts(caseID)
                taken = fresh
                resealed.append((id, now.newest, now.count, self.barrier.sealStatisticsFacts(fresh, caseID: caseID)))
            }
            if let taken {
                facts.category = taken.category
                if let outcome = taken.outcome { facts.outcome = outcome }
                facts.satisfaction = taken.satisfaction
            }
            result.append(facts)
        }
        if !resealed.isEmpty || kept.count > cases.count {
            try self.index.write { db in
                for entry in resealed {
                    try Index.keepStatisticsFacts(
                        db, caseID: entry.caseID, newest: entry.newest, count: entry.count, sealed: entry.sealed)
                }
                // The facts of cases that are gone (disposed by retention) go with them.
                try Index.deleteStatisticsFactsOfGoneCases(db)
            }
        }
        return result
    }

    /// Opens `caseID`'s live intake forms, final agreements and evaluations, oldest first, and takes the
    /// three fields; the content is wiped.
    private func takeFacts(_ caseID: CaseID) throws(CaseVaultError) -> SealedFacts {
        let rows = try self.index.read { db in
            try Index.statisticsRecords(db, caseID: caseID, types: Self.statisticsTypes)
        }
        var facts = SealedFacts(category: nil, outcome: nil, satisfaction: [])
        for row in rows {
            let record: CaseVaultCore.Record
            do throws(CaseVaultError) {
                record = try self.open(row)
            } catch {
                if error.code == .shredded { continue }  // shredded while we read: no longer counted
                throw error
            }
            var content = record.content
            defer { Memory.zero(&content) }
            guard let document = JSONValue.parse(content) else { continue }
            switch row.metadata.type {
            case .intakeForm:
                // The latest intake form (an amendment supersedes) sets the category.
                if case .string(let category) = document["dispute_category"] ?? .null {
                    facts.category = String(category.prefix(64))
                }
            case .finalAgreement:
                if case .string(let outcome) = document["outcome"] ?? .null {
                    facts.outcome = outcome
                }
            case .evaluation:
                if case .integer(let score) = document["satisfaction"] ?? .null, (1...5).contains(score) {
                    facts.satisfaction.append(Int(score))
                }
            default:
                break
            }
        }
        return facts
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto

extension Vault {
    /// What the statistics keep of one case's records, sealed in the index: the latest intake form's
    /// category, the final agreement's outcome, each evaluation's satisfaction. Never in clear, and bound to
    /// its case by associated data.
    struct SealedFacts: Codable, Equatable {
        var category: String?
        var outcome: String?
        var satisfaction: [Int]
    }

    static var statisticsTypes: [RecordType] { [.intakeForm, .finalAgreement, .evaluation] }

    /// What the statistics count of each case (docs/API.md); the result carries no case id. Each case's
    /// three facts are kept sealed in the index together with what they were taken from (the newest and
    /// the number of its live intake forms, final agreements and evaluations): a call opens only the
    /// records of cases whose records changed since (filed or shredded), takes the three fields, wipes the
    /// content, and seals the facts again. So repeated calls cost one small decryption a case, not one per
    /// record.
    package func statisticsFacts() throws(CaseVaultError) -> [Statistics.CaseFacts] {
        let snapshot = try self.storage.statisticsSnapshot(types: Self.statisticsTypes)
        var result: [Statistics.CaseFacts] = []
        var resealed: [KeptFacts] = []
        for row in snapshot.cases {
            let id = row.id
            guard let caseID = try? CaseID(id) else { continue }
            var facts = Statistics.CaseFacts(
                openedAt: row.createdAt, closedAt: row.closedAt, category: nil, outcome: row.closingOutcome,
                satisfaction: [])
            let now = snapshot.current[id] ?? (0, 0)
            // Facts that do not open (altered, or another vault's) are derived data: taken again.
            var taken: SealedFacts?
            if let stored = snapshot.kept[id], stored.newest == now.newest, stored.count == now.count,
                let opened = self.barrier.openStatisticsFacts(stored.sealed, caseID: caseID, as: SealedFacts.self)
            {
                taken = opened
            } else if now.count > 0 {
                let fresh = try self.takeFacts(caseID)
                taken = fresh
                // Not kept where their residue would outlive the erase window: taken again next time.
                if !self.storage.sealsUnderEraseEpochs {
                    resealed.append(
                        KeptFacts(
                            caseID: id, newest: now.newest, count: now.count,
                            sealed: self.barrier.sealStatisticsFacts(fresh, caseID: caseID)))
                }
            }
            if let taken {
                facts.category = taken.category
                if let outcome = taken.outcome { facts.outcome = outcome }
                facts.satisfaction = taken.satisfaction
            }
            result.append(facts)
        }
        if !resealed.isEmpty || snapshot.kept.count > snapshot.cases.count {
            try self.storage.keepStatisticsFacts(resealed)
        }
        return result
    }

    /// Opens `caseID`'s live intake forms, final agreements and evaluations, oldest first, and takes the
    /// three fields; the content is wiped.
    private func takeFacts(_ caseID: CaseID) throws(CaseVaultError) -> SealedFacts {
        var facts = SealedFacts(category: nil, outcome: nil, satisfaction: [])
        for id in try self.storage.statisticsRecordIDs(caseID, types: Self.statisticsTypes) {
            let record: Record
            do throws(CaseVaultError) {
                record = try self.get(id)
            } catch {
                if error.code == .shredded { continue }  // shredded while we read: no longer counted
                throw error
            }
            var content = record.content
            defer { Memory.zero(&content) }
            guard let document = JSONValue.parseStored(content) else { continue }
            switch record.metadata.type {
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

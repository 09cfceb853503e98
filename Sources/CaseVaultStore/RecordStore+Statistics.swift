public import CaseVaultCore
internal import CaseVaultCrypto
internal import GRDB

extension RecordStore {
    /// What the statistics count of each case (DESIGN §11), read inside the store: the sealed intake forms,
    /// final agreements and evaluations are opened here, the three fields taken, and the content wiped; the
    /// index gives each case's opening and closing times. Nothing else of a record leaves, and the result
    /// carries no case id.
    public func statisticsFacts() throws(CaseVaultError) -> [Statistics.CaseFacts] {
        let (cases, rows) = try self.index.read { db in
            let cases = try GRDB.Row.fetchAll(db, sql: "SELECT id, created_at, closed_at, closing_outcome FROM cases")
            let rows = try GRDB.Row.fetchAll(
                db,
                sql: "SELECT \(Index.columns) FROM records WHERE state = 'live' AND type IN (?, ?, ?) ORDER BY seq",
                arguments: [RecordType.intakeForm.rawValue, RecordType.finalAgreement.rawValue, RecordType.evaluation.rawValue]
            ).map(Index.decode)
            return (cases, rows)
        }
        var facts: [String: Statistics.CaseFacts] = [:]
        for row in cases {
            let closedAt: Int64? = row[2]
            let outcome: String? = row[3]
            facts[row[0]] = Statistics.CaseFacts(
                openedAt: row[1], closedAt: closedAt, category: nil, outcome: outcome, satisfaction: []
            )
        }
        for row in rows {
            let caseID = row.metadata.caseID.rawValue
            guard facts[caseID] != nil else { continue }
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
                    facts[caseID]?.category = String(category.prefix(64))
                }
            case .finalAgreement:
                if case .string(let outcome) = document["outcome"] ?? .null {
                    facts[caseID]?.outcome = outcome
                }
            case .evaluation:
                if case .integer(let score) = document["satisfaction"] ?? .null, (1...5).contains(score) {
                    facts[caseID]?.satisfaction.append(Int(score))
                }
            default:
                break
            }
        }
        return Array(facts.values)
    }
}

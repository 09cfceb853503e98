/// What the statistics read of the storage in one snapshot: every case's row, what its counted records are
/// now, and the sealed facts kept from an earlier call.
package struct StatisticsSnapshot: Sendable {
    package struct Case: Sendable {
        package var id: String
        package var createdAt: Int64
        package var closedAt: Int64?
        package var closingOutcome: String?

        package init(id: String, createdAt: Int64, closedAt: Int64?, closingOutcome: String?) {
            self.id = id
            self.createdAt = createdAt
            self.closedAt = closedAt
            self.closingOutcome = closingOutcome
        }
    }

    package var cases: [Case]
    /// By case id: the newest filing time and the number of its live counted records.
    package var current: [String: (newest: Int64, count: Int64)]
    /// By case id: the facts sealed earlier and what they were taken from.
    package var kept: [String: KeptFacts]

    package init(cases: [Case], current: [String: (newest: Int64, count: Int64)], kept: [String: KeptFacts]) {
        self.cases = cases
        self.current = current
        self.kept = kept
    }
}

/// One case's statistical facts, sealed, with the newest filing time and record count they were taken at.
package struct KeptFacts: Sendable {
    package var caseID: String
    package var newest: Int64
    package var count: Int64
    package var sealed: [UInt8]

    package init(caseID: String, newest: Int64, count: Int64, sealed: [UInt8]) {
        self.caseID = caseID
        self.newest = newest
        self.count = count
        self.sealed = sealed
    }
}

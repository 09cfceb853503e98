package import CaseVaultCore

/// What a filing changes besides adding its record, in the same transaction: so that a crash leaves either
/// all of it or none of it.
package struct FilingEffects: Sendable {
    /// A case to create (opening a case files its sealed header).
    package var newCase: (summary: CaseSummary, header: RecordID)?
    /// The case's state afterwards.
    package var caseState: (id: CaseID, state: CaseState, closedAt: Int64?, outcome: String?)?
    /// Records to mark `shredding` (a final agreement's session notes); their shred finishes right after the
    /// commit, or on the next open after a crash.
    package var markShredding: [RecordID] = []
    /// Who ordered those shreds, kept with them until their certificate is issued.
    package var shredOrder: ShredOrder?

    package init() {}

    /// Whether the filing changes nothing but adds its record (an order with no records to mark changes
    /// nothing: it is written only with its marks).
    package var isEmpty: Bool {
        self.newCase == nil && self.caseState == nil && self.markShredding.isEmpty
    }
}

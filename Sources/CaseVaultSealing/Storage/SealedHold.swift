package import CaseVaultCore

/// A legal hold as the storage keeps it: the reason sealed, bound to the hold and its case.
package struct SealedHold: Sendable {
    package var id: HoldID
    package var caseID: CaseID
    package var placedAt: Int64
    package var placedBy: Authority
    package var sealedReason: [UInt8]

    package init(id: HoldID, caseID: CaseID, placedAt: Int64, placedBy: Authority, sealedReason: [UInt8]) {
        self.id = id
        self.caseID = caseID
        self.placedAt = placedAt
        self.placedBy = placedBy
        self.sealedReason = sealedReason
    }
}

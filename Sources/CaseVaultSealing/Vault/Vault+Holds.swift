package import CaseVaultCore
internal import CaseVaultCrypto
internal import Logging

extension Vault {
    /// Places a hold on a case. `not-found` for an unknown case. The reason is sealed before the storage
    /// sees it, bound to the hold and its case.
    package func placeHold(on caseID: CaseID, reason: String, authority: Authority) throws(CaseVaultError)
        -> LegalHold
    {
        let hold = try self.storage.withCaseLock(caseID) { () throws(CaseVaultError) in
            _ = try self.storage.caseSummary(caseID)
            let hold = LegalHold(
                id: HoldID(bytes: Random.bytes(count: HoldID.byteCount)), caseID: caseID,
                placedAt: self.storage.now(), placedBy: authority, reason: reason
            )
            let reasonKey = self.storage.sealsUnderEraseEpochs ? self.barrier.newDataKey() : nil
            let sealed =
                if let reasonKey {
                    self.barrier.sealHoldReason(
                        Array(reason.utf8), holdID: hold.id.rawValue, caseID: caseID, under: reasonKey)
                } else {
                    self.barrier.sealHoldReason(Array(reason.utf8), holdID: hold.id.rawValue, caseID: caseID)
                }
            try self.storage.insertHold(
                SealedHold(
                    id: hold.id, caseID: caseID, placedAt: hold.placedAt, placedBy: authority, sealedReason: sealed,
                    eraseEpoch: nil, reasonKey: reasonKey))
            return hold
        }
        self.logger.info("legal hold placed", metadata: ["hold.id": "\(hold.id)", "case.id": "\(caseID)"])
        return hold
    }

    /// The holds standing, oldest first, with their reasons opened.
    package func holds() throws(CaseVaultError) -> [LegalHold] {
        var holds: [LegalHold] = []
        for hold in try self.storage.sealedHolds() {
            var reason = try self.barrier.openHoldReason(hold)
            defer { Memory.zero(&reason) }
            holds.append(
                LegalHold(
                    id: hold.id, caseID: hold.caseID, placedAt: hold.placedAt, placedBy: hold.placedBy,
                    reason: String(decoding: reason, as: UTF8.self)
                )
            )
        }
        return holds
    }
}

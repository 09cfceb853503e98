package import CaseVaultCore

/// A legal hold as the storage keeps it: the reason sealed, bound to the hold and its case.
///
/// Where the reason's key is kept depends on the storage (`RecordStorage.sealsUnderEraseEpochs`): the
/// local store's reasons are sealed under the root key's hold subkey, and a release overwrites them in
/// place; on a storage whose residue cannot be overwritten (PostgreSQL), each reason is sealed under a key
/// of its own, which the storage keeps wrapped under the current erase epoch (`wrappedReasonKey(under:)`)
/// and gives back with that epoch's key (`eraseEpoch`), so that a released hold's residue opens for no one
/// once its epoch is destroyed.
package struct SealedHold: Sendable {
    package var id: HoldID
    package var caseID: CaseID
    package var placedAt: Int64
    package var placedBy: Authority
    package var sealedReason: [UInt8]
    /// A reason sealed under a key of its own, as the storage gives it back: the erase epoch's key it is
    /// wrapped under (an opaque value of the sealing layer's) and the wrapped key. `nil` for a reason sealed
    /// under the root key's hold subkey.
    package var eraseEpoch: (key: EpochKey, wrapped: [UInt8])?
    /// The reason's own key, while the hold is being placed on a storage that wraps it.
    let reasonKey: DataKey?

    package init(
        id: HoldID, caseID: CaseID, placedAt: Int64, placedBy: Authority, sealedReason: [UInt8],
        eraseEpoch: (key: EpochKey, wrapped: [UInt8])? = nil
    ) {
        self.init(
            id: id, caseID: caseID, placedAt: placedAt, placedBy: placedBy, sealedReason: sealedReason,
            eraseEpoch: eraseEpoch, reasonKey: nil)
    }

    init(
        id: HoldID, caseID: CaseID, placedAt: Int64, placedBy: Authority, sealedReason: [UInt8],
        eraseEpoch: (key: EpochKey, wrapped: [UInt8])?, reasonKey: DataKey?
    ) {
        self.id = id
        self.caseID = caseID
        self.placedAt = placedAt
        self.placedBy = placedBy
        self.sealedReason = sealedReason
        self.eraseEpoch = eraseEpoch
        self.reasonKey = reasonKey
    }

    /// The reason's own key wrapped under `epoch`, bound to the hold: what the storage keeps beside the
    /// sealed reason. `key-unavailable` for a hold whose reason was sealed under the root key's subkey.
    package func wrappedReasonKey(under epoch: EpochKey) throws(CaseVaultError) -> [UInt8] {
        guard let reasonKey = self.reasonKey else {
            throw CaseVaultError(.keyUnavailable, "this hold's reason was not sealed under a key of its own")
        }
        return epoch.wrap(reasonKey, holdID: self.id)
    }
}

package import CaseVaultCore

/// A record sealed for filing: its content encrypted under a fresh data key and bound to its id, case and
/// type. The storage places the blob and, once it has chosen the slot (whose number the wrap binds) or the
/// erase epoch, asks for the wrapped key; the data key itself never leaves the sealing layer.
package final class SealedRecord: Sendable {
    package let id: RecordID
    package let caseID: CaseID
    package let type: RecordType
    package let author: String?
    package let supersedes: RecordID?
    /// For an agreement to mediate, the participant id (p1…pN) it is for, sealed and bound to the record
    /// and its case: kept beside the record so that filing a note need not open every agreement.
    package let sealedParticipant: [UInt8]?
    package let blob: [UInt8]
    private let dataKey: DataKey
    private let barrier: Barrier

    init(
        _ record: NewRecord, id: RecordID, sealedParticipant: [UInt8]?, blob: [UInt8], dataKey: DataKey,
        barrier: Barrier
    ) {
        self.id = id
        self.caseID = record.caseID
        self.type = record.type
        self.author = record.author
        self.supersedes = record.supersedes
        self.sealedParticipant = sealedParticipant
        self.blob = blob
        self.dataKey = dataKey
        self.barrier = barrier
    }

    /// A record moved from another storage (`SealingServices.movedRecord`): its blob as it was sealed, and
    /// its data key.
    init(
        id: RecordID, caseID: CaseID, type: RecordType, author: String?, supersedes: RecordID?, blob: [UInt8],
        dataKey: DataKey, barrier: Barrier
    ) {
        self.id = id
        self.caseID = caseID
        self.type = type
        self.author = author
        self.supersedes = supersedes
        self.sealedParticipant = nil
        self.blob = blob
        self.dataKey = dataKey
        self.barrier = barrier
    }

    /// The data key wrapped for slot `slot` under `epoch`'s key: what the storage writes in the slot.
    package func wrappedKey(slot: Int64, epoch: UInt32) throws(CaseVaultError) -> [UInt8] {
        try self.barrier.wrap(dataKey: self.dataKey, recordID: self.id, slot: slot, epoch: epoch)
    }

    /// The data key wrapped under an erase epoch's key (a vault on PostgreSQL): what the storage files with
    /// the record, beside the epoch's number.
    package func wrappedKey(under epoch: EpochKey) -> [UInt8] {
        epoch.wrap(self.dataKey, recordID: self.id)
    }
}

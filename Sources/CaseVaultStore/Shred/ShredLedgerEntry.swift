package import CaseVaultCore

/// One entry of the shred ledger: a shredded record's id, with its case, type and time of shredding where
/// the source knows them. Ids, types and times only, as the index holds them in clear: never content,
/// names or categories.
package struct ShredLedgerEntry: Sendable, Equatable {
    package var recordID: RecordID
    /// The record's case; `nil` when the source does not say (an exported ledger that lists ids and times).
    package var caseID: CaseID?
    /// The record's type; `nil` when the source does not say.
    package var type: RecordType?
    /// When it was shredded, in milliseconds since the Unix epoch; `nil` when the source does not say.
    package var shreddedAt: Int64?

    package init(recordID: RecordID, caseID: CaseID? = nil, type: RecordType? = nil, shreddedAt: Int64? = nil) {
        self.recordID = recordID
        self.caseID = caseID
        self.type = type
        self.shreddedAt = shreddedAt
    }

    /// What the index's `shred_ledger` and the ledger copy hold for a case or type that the source of an
    /// entry did not give (`case_id` and `type` are NOT NULL there), and the copy for an unknown time.
    static let unknown = "-"

    /// The entry that an index row or a line of the ledger copy spells, with `-` for what is not known. A
    /// type this version does not know reads as unknown.
    init(recordID: String, caseID: String, type: String, shreddedAt: Int64?) throws(CaseVaultError) {
        self.recordID = try RecordID(recordID)
        if caseID == Self.unknown {
            self.caseID = nil
        } else {
            self.caseID = try CaseID(caseID)
        }
        self.type = RecordType(rawValue: type)
        self.shreddedAt = shreddedAt
    }

    /// The case id as the index and the copy write it.
    var caseText: String { self.caseID?.rawValue ?? Self.unknown }

    /// The type as the index and the copy write it.
    var typeText: String { self.type?.rawValue ?? Self.unknown }

    /// The entry's fields as one line of the ledger copy spells them, before its MAC.
    var line: String {
        "\(self.recordID.rawValue) \(self.caseText) \(self.typeText) \(self.shreddedAt.map(String.init) ?? Self.unknown)"
    }

    /// The entries of every list, one per record, in id order: where lists name the same record, what one
    /// knows fills in what another does not, and the earliest time is kept.
    package static func union(_ lists: [[ShredLedgerEntry]]) -> [ShredLedgerEntry] {
        var merged: [RecordID: ShredLedgerEntry] = [:]
        for entry in lists.joined() {
            guard var known = merged[entry.recordID] else {
                merged[entry.recordID] = entry
                continue
            }
            known.caseID = known.caseID ?? entry.caseID
            known.type = known.type ?? entry.type
            if let time = entry.shreddedAt {
                known.shreddedAt = min(known.shreddedAt ?? time, time)
            }
            merged[entry.recordID] = known
        }
        return merged.values.sorted { $0.recordID < $1.recordID }
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultSealing
internal import Foundation
internal import Logging

#if canImport(Glibc)
internal import Glibc
#endif

extension RecordStore {
    /// The case's state, participant count and mediators; `not-found` for an unknown id.
    package func caseSummary(_ id: CaseID) throws(CaseVaultError) -> CaseSummary {
        guard let summary = try self.index.lookup({ db in try Index.caseSummary(db, id: id) }) else {
            throw CaseVaultError.caseNotFound()
        }
        return summary
    }

    /// Runs `body` holding the case's lock: filings, holds and closings of one case run one at a time.
    package func withCaseLock<T>(_ id: CaseID, _ body: () throws(CaseVaultError) -> T) throws(CaseVaultError) -> T {
        try self.caseLocks.withLock(id, body)
    }

    /// `withCaseLock`, with the case and whether `rosterUID` is on the roster read under the lock
    /// (`caseAndRoster`).
    package func withCaseLock<T>(
        _ id: CaseID, readingRoster rosterUID: UInt32?,
        _ body: (CaseSummary?, Bool) throws(CaseVaultError) -> T
    ) throws(CaseVaultError) -> T {
        try self.caseLocks.withLock(id) { () throws(CaseVaultError) -> T in
            let (summary, onRoster) = try self.caseAndRoster(id, rosterUID: rosterUID)
            return try body(summary, onRoster)
        }
    }

    /// The case (`nil` for an unknown id) and whether `rosterUID` is on the mediator roster, in one trip to
    /// the index: what a filing's decision sees.
    package func caseAndRoster(_ id: CaseID, rosterUID: UInt32?) throws(CaseVaultError) -> (CaseSummary?, Bool) {
        // What earlier requests kept (`CaseAnswers`) when it answers both; never after the index lost commits.
        guard !self.index.loss.happened else { throw Index.Loss.error }
        let kept = self.index.caseAnswers.kept(id, rosterUID: rosterUID)
        if let answer = kept.answer { return (answer.summary, answer.onRoster) }
        let (summary, onRoster) = try self.index.lookup { db in try kept.read(db, caseID: id) }
        kept.keep(summary, onRoster)
        return (summary, onRoster)
    }

    /// A page of the case list, with each case's live records counted by type, in one read of the index:
    /// whether `rosterUID` is on the mediator roster is read first, and `query` builds the query from it (a
    /// mediator taken off the roster lists none of their cases).
    package func listCases(
        rosterUID: UInt32?, _ query: (_ onRoster: Bool) -> CaseQuery
    ) throws(CaseVaultError) -> (rows: [CaseListRow], onRoster: Bool) {
        try self.index.read { db in
            let onRoster = try rosterUID.map { uid in try Index.isOnRoster(db, uid: uid) } ?? false
            let cases = try Index.cases(db, query(onRoster))
            let counts = try Index.liveCounts(db, cases: cases.map(\.id))
            return (cases.map { CaseListRow(summary: $0, liveRecords: counts[$0.id] ?? [:]) }, onRoster)
        }
    }

    /// A page of a case's live records of `types` (metadata only), in filing order after `after`; with the
    /// cursor of the next page when there may be one.
    package func liveRecords(
        caseID: CaseID, types: Set<RecordType>, after: RecordListCursor?, limit: Int
    ) throws(CaseVaultError) -> (records: [RecordMetadata], next: RecordListCursor?) {
        let found = try self.index.read { db in
            try Index.liveRecords(db, caseID: caseID, types: types, after: after, limit: limit)
        }
        let next =
            found.count == limit
            ? found.last.map { RecordListCursor(filedAt: $0.metadata.createdAt, sequence: $0.sequence) } : nil
        return (found.map(\.metadata), next)
    }

    /// Closes a case without a final agreement: every session note is shredded in the same operation.
    package func closeCase(_ id: CaseID, outcome: ClosingOutcome, authority: Authority = .daemon) throws(CaseVaultError)
        -> [RecordID]
    {
        try self.caseLocks.withLock(id) { () throws(CaseVaultError) in
            let summary = try self.caseSummary(id)
            let notes = try self.notesToDestroy(id)
            let effect = try CasePolicy.closing(summary, notes: notes)
            try self.asWriter { () throws(CaseVaultError) in
                // The commit marks the notes: no get takes their rows from `liveRows` meanwhile.
                try self.liveRows.changing { () throws(CaseVaultError) in
                    try self.index.write { db in
                        var effects = FilingEffects()
                        effects.caseState = (id, effect.state, self.now(), outcome.rawValue)
                        effects.markShredding = effect.shredNotes
                        effects.shredOrder = ShredOrder(
                            method: .caseClosed, authority: authority, reason: outcome.rawValue)
                        try Index.apply(db, effects)
                    }
                }
            }
            try self.finishMarkedShreds(effect.shredNotes)
            self.logger.info("case closed", metadata: ["case.id": "\(id)", "records.shredded": "\(notes.count)"])
            return effect.shredNotes
        }
    }

    /// Who a case names: its mediators, or its supervisors (debriefs).
    package typealias CaseAssignment = CaseVaultCore.CaseAssignment

    /// Replaces the case's mediators or supervisors.
    package func assign(_ assignment: CaseAssignment, _ id: CaseID, _ uids: [UInt32]) throws(CaseVaultError) {
        try self.caseLocks.withLock(id) { () throws(CaseVaultError) in
            _ = try self.caseSummary(id)
            try self.index.write { db in try Index.replace(db, assignment, caseID: id, uids: Set(uids)) }
        }
    }

    // MARK: Roster

    /// The uids on the mediator roster.
    package func roster() throws(CaseVaultError) -> [UInt32] {
        try self.index.read { db in try Index.rosterUIDs(db) }
    }

    package func isOnRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool {
        try self.index.lookup { db in try Index.isOnRoster(db, uid: uid) }
    }

    /// Adds a mediator to the roster; returns whether it was new.
    @discardableResult
    package func addToRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool {
        try self.index.write { db in try Index.addToRoster(db, uid: uid, at: self.now()) }
    }

    /// Removes a mediator from the roster, which ends their access at their next request; returns whether
    /// they were on it.
    @discardableResult
    package func removeFromRoster(_ uid: UInt32) throws(CaseVaultError) -> Bool {
        try self.index.write { db in try Index.removeFromRoster(db, uid: uid) }
    }

    // MARK: Internals

    /// Runs the rest of the shred protocol for records a commit marked `shredding`.
    package func finishMarkedShreds(_ ids: [RecordID]) throws(CaseVaultError) {
        guard !ids.isEmpty else { return }
        try self.asShredder { () throws(CaseVaultError) in
            self.retryPendingShreds()
            let (rows, _) = try self.runShred(from: .resumed) { () throws(CaseVaultError) in
                try self.index.read { db in
                    try ids.compactMap { id in try Index.row(db, id: id) }.filter { $0.state == .shredding }
                }
            }
            self.logger.info("records shredded", metadata: ["records.count": "\(rows.count)"])
        }
    }

    /// The session notes a final agreement or a closing destroys: every live note, unless the configuration
    /// lets a legal hold keep notes and one stands on the case (the sweep disposes them once it is released).
    package func notesToDestroy(_ caseID: CaseID) throws(CaseVaultError) -> [RecordID] {
        if self.configuration.retention.holdsKeepSessionNotes, try self.isHeld(caseID) {
            return []
        }
        return try self.liveIDs(caseID, .sessionNote)
    }

    /// The live agreements to mediate of a case, each with the participant it is for, sealed, when the
    /// index keeps it (`nil` for one filed before it did).
    package func agreements(_ caseID: CaseID) throws(CaseVaultError) -> [(id: RecordID, sealedParticipant: [UInt8]?)] {
        try self.index.lookup { db in
            try Index.agreements(db, caseID: caseID)
        }.map { row throws(CaseVaultError) in (try RecordID(row.id), row.participant.map { [UInt8]($0) }) }
    }

    /// The live records of one type in a case, in filing order.
    func liveIDs(_ caseID: CaseID, _ type: RecordType) throws(CaseVaultError) -> [RecordID] {
        try self.index.lookup { db in
            try Index.liveRecordIDs(db, caseID: caseID, type: type)
        }.map { text throws(CaseVaultError) in try RecordID(text) }
    }
}

extension RecordStore {
    /// The id of the case's sealed header (participants' names and contacts); `not-found` for an unknown
    /// case.
    package func caseHeaderID(_ id: CaseID) throws(CaseVaultError) -> RecordID {
        let header = try self.index.lookup { db in try Index.headerRecordID(db, caseID: id) }
        guard let header else {
            throw CaseVaultError.caseNotFound()
        }
        return try RecordID(header)
    }
}

extension CaseAssignment {
    /// The index's table of them.
    var table: String { "case_" + self.rawValue }
}

/// What a case list asks the index for: which cases, in what order, from where. Built by the server from
/// the caller's roles and query; the index answers it with ids, states, dates, mediators and counts, never
/// names or content.
public struct CaseQuery: Sendable, Equatable {
    /// Which cases the caller's roles may see at all, before the authorization table checks each row.
    public var visibility: CaseVisibility
    /// Only cases in this state.
    public var state: CaseState?
    /// Only cases opened at or after this time (milliseconds since the epoch).
    public var openedFrom: Int64?
    /// Only cases opened before this time.
    public var openedBefore: Int64?
    /// Only cases that name this uid among their mediators or supervisors (`mine`).
    public var assignedTo: UInt32?
    /// At most this many cases.
    public var limit: Int
    /// The page starts after this case (the previous page's `next`).
    public var after: CaseListCursor?

    public init(
        visibility: CaseVisibility, state: CaseState? = nil, openedFrom: Int64? = nil, openedBefore: Int64? = nil,
        assignedTo: UInt32? = nil, limit: Int = CaseQuery.defaultLimit, after: CaseListCursor? = nil
    ) {
        self.visibility = visibility
        self.state = state
        self.openedFrom = openedFrom
        self.openedBefore = openedBefore
        self.assignedTo = assignedTo
        self.limit = limit
        self.after = after
    }

    /// Page sizes a caller may ask for, and the size of a page they do not size.
    public static let limits = 1...200
    public static let defaultLimit = 50
}

/// The cases a caller's roles let them list, as the index can select them: every case, the cases in
/// intake, the cases that name one mediator. The authorization table (`Action.listCases`) still decides
/// each row; this only keeps the index from reading rows no grant could allow.
public struct CaseVisibility: Sendable, Equatable {
    public var everyCase: Bool
    public var inIntake: Bool
    /// The uid whose assigned cases are visible: a mediator on the roster.
    public var mediator: UInt32?
    /// The uid whose supervised cases are visible: a supervisor on the roster.
    public var supervisor: UInt32?

    public init(everyCase: Bool = false, inIntake: Bool = false, mediator: UInt32? = nil, supervisor: UInt32? = nil) {
        self.everyCase = everyCase
        self.inIntake = inIntake
        self.mediator = mediator
        self.supervisor = supervisor
    }

    /// Whether no case at all is visible.
    public var isEmpty: Bool {
        !self.everyCase && !self.inIntake && self.mediator == nil && self.supervisor == nil
    }
}

/// Where a page of cases ends, newest first: the opening time and id of its last case. Shown to clients as
/// an opaque `next_cursor` string; every string that is not one is refused.
public struct CaseListCursor: Sendable, Equatable {
    public var openedAt: Int64
    public var id: CaseID

    public init(openedAt: Int64, id: CaseID) {
        self.openedAt = openedAt
        self.id = id
    }

    /// `<milliseconds>.<case id>`.
    public var text: String { "\(self.openedAt).\(self.id.rawValue)" }

    public init?(text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let openedAt = RecordListCursor.number(parts[0]), let id = try? CaseID(String(parts[1]))
        else { return nil }
        self.init(openedAt: openedAt, id: id)
    }
}

/// One row of a case list: the case, and how many live records of each type it holds that the caller may
/// read.
public struct CaseListRow: Sendable, Equatable {
    public var summary: CaseSummary
    public var liveRecords: [RecordType: Int]

    public init(summary: CaseSummary, liveRecords: [RecordType: Int]) {
        self.summary = summary
        self.liveRecords = liveRecords
    }
}

/// Where a page of a case's records ends: the filing time and the index's sequence of its last record
/// (the sequence alone would not do: SQLite gives a new row the number of the newest row a shred removed).
/// Shown as an opaque `next_cursor` string.
public struct RecordListCursor: Sendable, Equatable {
    public var filedAt: Int64
    public var sequence: Int64

    public init(filedAt: Int64, sequence: Int64) {
        self.filedAt = filedAt
        self.sequence = sequence
    }

    /// `<milliseconds>.<sequence>`.
    public var text: String { "\(self.filedAt).\(self.sequence)" }

    public init?(text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let filedAt = Self.number(parts[0]), let sequence = Self.number(parts[1]) else {
            return nil
        }
        self.init(filedAt: filedAt, sequence: sequence)
    }

    /// 1 to 19 decimal digits that fit an Int64.
    public static func number(_ text: Substring) -> Int64? {
        guard !text.isEmpty, text.utf8.count <= 19, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else {
            return nil
        }
        return Int64(text)
    }
}

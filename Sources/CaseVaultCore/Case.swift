/// Where a case stands (docs/API.md): `intake` → `agreement` → `session` → `closed`.
public enum CaseState: String, Sendable, Codable, Comparable {
    case intake
    case agreement
    case session
    case closed

    private var order: Int {
        switch self {
        case .intake: return 0
        case .agreement: return 1
        case .session: return 2
        case .closed: return 3
        }
    }

    public static func < (lhs: CaseState, rhs: CaseState) -> Bool { lhs.order < rhs.order }
}

/// What the index knows of a case: ids, state, how many participants, who mediates it. Never names.
public struct CaseSummary: Sendable, Equatable {
    public var id: CaseID
    public var state: CaseState
    public var participantCount: Int
    /// The uids of the mediators assigned to the case.
    public var mediators: [UInt32]
    /// The uids of the supervisors assigned to the case (debriefs).
    public var supervisors: [UInt32]
    /// Milliseconds since the epoch.
    public var createdAt: Int64
    public var closedAt: Int64?

    public init(
        id: CaseID, state: CaseState, participantCount: Int, mediators: [UInt32], supervisors: [UInt32] = [],
        createdAt: Int64, closedAt: Int64?
    ) {
        self.id = id
        self.state = state
        self.participantCount = participantCount
        self.mediators = mediators
        self.supervisors = supervisors
        self.createdAt = createdAt
        self.closedAt = closedAt
    }

    /// The opaque participant ids: `p1` … `pN`.
    public var participants: [String] {
        (1...max(1, self.participantCount)).prefix(self.participantCount).map { "p\($0)" }
    }
}

/// Outcomes of a case closed without a final agreement.
public enum ClosingOutcome: String, Sendable, Codable, CaseIterable {
    case noAgreement = "no_agreement"
    case withdrawn
}

/// Who a case names: its mediators, or its supervisors (debriefs).
public enum CaseAssignment: String, Sendable {
    case mediators, supervisors
}

/// Everything a caller can ask the daemon to do. Every route names exactly one action, and the
/// authorization table below is the only place that decides whether a caller may perform it.
public enum Action: String, Sendable, CaseIterable {
    case health
    case whoami
    case status
    case readMetrics
    case openCase
    case listCases
    case readCase
    case closeCase
    case assignMediators
    case manageRoster
    case fileIntakeForm
    case fileAgreement
    case fileSessionNote
    case fileFinalAgreement
    case fileEvaluation
    case fileDisclosure
    case fileDebrief
    case readRecord
    case readSessionNote
    case readDisclosure
    case readDebrief
    case listRecords
    case assignSupervisors
    case shredRecord
    case shredSessionNote
    case readCertificates
    case readCertificateKey
    case manageHolds
    case sweep
    case readStatistics
    case verifyAudit
    case readAudit
    case initialise
    case unseal
    case seal
    case rotate
    case backup
    case restore
    case forgetDaemon

    /// The action that files a record of `type`.
    public static func filing(_ type: RecordType) -> Action {
        switch type {
        case .intakeForm: return .fileIntakeForm
        case .agreementToMediate: return .fileAgreement
        case .sessionNote: return .fileSessionNote
        case .finalAgreement: return .fileFinalAgreement
        case .evaluation: return .fileEvaluation
        case .disclosure: return .fileDisclosure
        case .debrief: return .fileDebrief
        case .caseHeader: return .openCase
        }
    }

    /// The action that reads a record of `type`.
    public static func reading(_ type: RecordType) -> Action {
        switch type {
        case .sessionNote: return .readSessionNote
        case .disclosure: return .readDisclosure
        case .debrief: return .readDebrief
        default: return .readRecord
        }
    }
}

/// What the caller is to the case an action touches; the server works it out before asking.
public struct AccessScope: Sendable, Equatable {
    /// The caller is a mediator on the roster and assigned to the case.
    public var assignedMediator: Bool
    /// The caller is a supervisor on the roster and assigned to supervise the case.
    public var assignedSupervisor: Bool
    /// The office a disclosure is routed to, when the action reads one.
    public var routedOffice: String?
    /// The case's state, when a grant depends on it (intake staff list the cases still in intake).
    public var caseState: CaseState?

    public init(
        assignedMediator: Bool = false, assignedSupervisor: Bool = false, routedOffice: String? = nil,
        caseState: CaseState? = nil
    ) {
        self.assignedMediator = assignedMediator
        self.assignedSupervisor = assignedSupervisor
        self.routedOffice = routedOffice
        self.caseState = caseState
    }

    public static let none = AccessScope()
}

/// The one authorization table (docs/API.md), after OpenSSH's monitor: each action lists who may perform it;
/// anything not listed is refused. A caller with several roles may do what any of them may.
public enum Authorization {
    /// Who may perform an action.
    enum Grant {
        /// Anyone, even a peer with no role.
        case anyone
        /// Any peer that holds at least one role.
        case anyRole
        /// A peer that holds this role.
        case role(Role)
        /// A peer that holds this role, for a case in this state.
        case roleWhileCase(Role, CaseState)
        /// A mediator on the roster assigned to the case.
        case assignedMediator
        /// A supervisor on the roster assigned to supervise the case.
        case assignedSupervisor
        /// The office the disclosure is routed to.
        case routedOffice
    }

    static func grants(_ action: Action) -> [Grant] {
        switch action {
        case .health: return [.anyone]
        case .whoami: return [.anyRole]
        case .status: return [.role(.operator)]
        // Counts and durations by route template and operation, sizes, states: no id, name or content.
        case .readMetrics: return [.role(.operator)]
        case .openCase: return [.role(.director), .role(.intake)]
        // Each row of the case list is checked alone: intake staff see the cases still in intake, a
        // mediator or supervisor the cases they are assigned to while on the roster.
        case .listCases:
            return [.role(.director), .roleWhileCase(.intake, .intake), .assignedMediator, .assignedSupervisor]
        // A case's records, each type listed only to those who may read it: supervisors see debriefs.
        case .listRecords: return [.role(.director), .assignedMediator, .assignedSupervisor]
        case .assignSupervisors: return [.role(.director)]
        case .readCase: return [.role(.director), .assignedMediator]
        case .closeCase: return [.role(.director), .assignedMediator]
        case .assignMediators, .manageRoster: return [.role(.director)]
        case .fileIntakeForm: return [.role(.director), .role(.intake), .assignedMediator]
        case .fileAgreement, .fileFinalAgreement, .fileDisclosure: return [.role(.director), .assignedMediator]
        // Session notes are the mediator's own: only the case's mediators write or read them.
        case .fileSessionNote, .readSessionNote: return [.assignedMediator]
        case .fileEvaluation: return [.role(.director), .role(.submitter), .assignedMediator]
        // Debriefs: between the case's mediators and its supervisor; the director reads them too. Never an
        // office's, never the intake staff's.
        case .fileDebrief: return [.assignedMediator, .assignedSupervisor]
        case .readDebrief: return [.role(.director), .assignedMediator, .assignedSupervisor]
        case .readRecord: return [.role(.director), .assignedMediator]
        // Disclosures: the director and the office they are routed to; nobody else, mediators included.
        case .readDisclosure: return [.role(.director), .routedOffice]
        case .shredRecord: return [.role(.director)]
        case .shredSessionNote: return [.role(.director), .assignedMediator]
        case .readCertificates: return [.role(.director)]
        // The public key is not secret; those who verify certificates need it.
        case .readCertificateKey: return [.role(.director), .role(.operator)]
        case .manageHolds: return [.role(.director)]
        case .sweep: return [.role(.operator)]
        // Aggregates only: no route gives the statistician anything per case.
        case .readStatistics: return [.role(.director), .role(.statistician)]
        // The audit report holds counts and the first bad entry's number, no entry's contents.
        case .verifyAudit, .readAudit: return [.role(.director), .role(.operator)]
        // Key custody is the operator's: it opens the vault, and says nothing about any record.
        // Backups and the shred ledger: sealed bytes and record ids, never content in clear.
        case .initialise, .unseal, .seal, .rotate, .backup: return [.role(.operator)]
        // The hosts are the operator's: only they can say that a host and its epoch key file are gone.
        case .forgetDaemon: return [.role(.operator)]
        // A restore fills a vault that holds nothing yet from a backup: sealed bytes in, ids out.
        case .restore: return [.role(.operator)]
        }
    }

    /// Whether a caller holding `roles` may perform `action` in `scope`.
    public static func permits(_ roles: Set<Role>, _ action: Action, scope: AccessScope = .none) -> Bool {
        Self.grants(action).contains { Self.match($0, roles, scope: scope) != nil }
    }

    /// The role under which `action` is allowed in `scope` (what a destruction certificate names), or
    /// `nil` when it is not allowed.
    public static func grantingRole(_ roles: Set<Role>, _ action: Action, scope: AccessScope = .none) -> Role? {
        for grant in Self.grants(action) {
            if let match = Self.match(grant, roles, scope: scope), let role = match.role { return role }
        }
        return nil
    }

    /// Whether `action` could be allowed to a caller holding `roles` in some scope: the check made before
    /// the case or record is looked up, so that a caller who may never do this learns nothing about ids.
    public static func mightPermit(_ roles: Set<Role>, _ action: Action) -> Bool {
        Self.grants(action).contains { Self.match($0, roles, scope: nil) != nil }
    }

    /// Whether `action` is decided by the caller's roles alone, whatever the case: no grant of it asks
    /// what the caller is to a case.
    public static func dependsOnlyOnRoles(_ action: Action) -> Bool {
        Self.grants(action).allSatisfy { grant in
            switch grant {
            case .anyone, .anyRole, .role: return true
            case .roleWhileCase, .assignedMediator, .assignedSupervisor, .routedOffice: return false
            }
        }
    }

    /// A grant that admits the caller, and the role it admits them under (none for `anyone` without a role).
    struct Match {
        var role: Role?
    }

    /// The one reading of a grant: whether it admits a caller holding `roles` in `scope`, where a `nil`
    /// scope stands for the most favourable case (the caller is assigned, the disclosure routed to them, the
    /// case in the state the grant names).
    private static func match(_ grant: Grant, _ roles: Set<Role>, scope: AccessScope?) -> Match? {
        switch grant {
        case .anyone:
            return Match(role: roles.sorted().first)
        case .anyRole:
            return roles.sorted().first.map { Match(role: $0) }
        case .role(let role):
            return roles.contains(role) ? Match(role: role) : nil
        case .roleWhileCase(let role, let state):
            guard roles.contains(role), scope.map({ $0.caseState == state }) ?? true else { return nil }
            return Match(role: role)
        case .assignedMediator:
            guard roles.contains(.mediator), scope?.assignedMediator ?? true else { return nil }
            return Match(role: .mediator)
        case .assignedSupervisor:
            guard roles.contains(.supervisor), scope?.assignedSupervisor ?? true else { return nil }
            return Match(role: .supervisor)
        case .routedOffice:
            let offices = roles.filter { role in
                guard case .office(let office) = role else { return false }
                return scope.map { $0.routedOffice == office } ?? true
            }
            return offices.sorted().first.map { Match(role: $0) }
        }
    }
}

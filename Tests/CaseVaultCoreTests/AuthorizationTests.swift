import CaseVaultCore
import Testing

/// The authorization table read in process: what docs/API.md promises each role, and that its three
/// questions (may, under which role, might anywhere) agree for every action, role set and scope.
@Suite("The authorization table")
struct AuthorizationTests {
    static let roles: [Role] = [
        .director, .mediator, .supervisor, .intake, .submitter, .statistician, .operator, .office("titleix"),
    ]

    /// Every set of at most two roles, and none.
    static var roleSets: [Set<Role>] {
        var sets: [Set<Role>] = [[]]
        for (i, first) in Self.roles.enumerated() {
            sets.append([first])
            for second in Self.roles[(i + 1)...] { sets.append([first, second]) }
        }
        return sets
    }

    static let scopes: [AccessScope] = [
        .none, AccessScope(assignedMediator: true), AccessScope(routedOffice: "titleix"),
        AccessScope(routedOffice: "hr"), AccessScope(caseState: .intake),
        AccessScope(assignedMediator: true, caseState: .session), AccessScope(assignedSupervisor: true),
        AccessScope(assignedSupervisor: true, caseState: .closed),
    ]

    @Test("the three questions agree: allowed means a granting role, and allowed somewhere means might be allowed")
    func questionsAgree() {
        for action in Action.allCases {
            for roles in Self.roleSets {
                var anywhere = false
                for scope in Self.scopes {
                    let permitted = Authorization.permits(roles, action, scope: scope)
                    let role = Authorization.grantingRole(roles, action, scope: scope)
                    anywhere = anywhere || permitted
                    // Only `health` is open to a peer with no role, and it names none.
                    #expect(
                        permitted == (role != nil) || (action == .health && roles.isEmpty),
                        "\(action) \(roles.sorted())")
                    if let role { #expect(roles.contains(role), "\(action) granted under a role the caller lacks") }
                    if Authorization.dependsOnlyOnRoles(action) {
                        #expect(permitted == Authorization.permits(roles, action), "\(action) depends on its scope")
                    }
                }
                #expect(Authorization.mightPermit(roles, action) == anywhere, "\(action) \(roles.sorted())")
            }
        }
    }

    @Test("each kind of grant, read as docs/API.md writes it")
    func eachKindOfGrant() {
        // Anyone: even a peer with no role asks for health.
        #expect(Authorization.permits([], .health) && Authorization.grantingRole([], .health) == nil)
        // Any role: who am I needs one.
        #expect(!Authorization.permits([], .whoami) && Authorization.permits([.submitter], .whoami))
        #expect(Authorization.grantingRole([.submitter], .whoami) == .submitter)
        // One role: key custody is the operator's alone.
        #expect(Authorization.permits([.operator], .unseal) && !Authorization.permits([.director, .mediator], .unseal))
        // The assigned mediator: the mediator role without the case is not enough, and never somewhere else.
        #expect(!Authorization.permits([.mediator], .readRecord) && Authorization.mightPermit([.mediator], .readRecord))
        #expect(!Authorization.mightPermit([.intake], .readRecord))
        // The routed office: only for the office named, and no other office's role.
        #expect(Authorization.permits([.office("equity")], .readDisclosure, scope: AccessScope(routedOffice: "equity")))
        #expect(
            !Authorization.permits([.office("equity")], .readDisclosure, scope: AccessScope(routedOffice: "titleix")))
        #expect(!Authorization.permits([.office("equity")], .readDisclosure))
        #expect(
            Authorization.mightPermit([.office("equity")], .readDisclosure)
                && !Authorization.mightPermit([.office("equity")], .readRecord))
    }

    @Test("the case list: the director every case, intake staff the cases in intake, a mediator their own")
    func listingCases() {
        for state in [CaseState.intake, .agreement, .session, .closed] {
            for roles in Self.roleSets {
                let unassigned = Authorization.permits(roles, .listCases, scope: AccessScope(caseState: state))
                #expect(
                    unassigned == (roles.contains(.director) || (roles.contains(.intake) && state == .intake)),
                    "\(roles.sorted()) \(state)")
                let assigned = Authorization.permits(
                    roles, .listCases, scope: AccessScope(assignedMediator: true, caseState: state))
                #expect(assigned == (unassigned || roles.contains(.mediator)), "\(roles.sorted()) \(state)")
            }
        }
        // Intake staff are granted under their role, and only for a case in intake.
        #expect(Authorization.grantingRole([.intake], .listCases, scope: AccessScope(caseState: .intake)) == .intake)
        #expect(
            Authorization.mightPermit([.intake], .listCases) && !Authorization.mightPermit([.submitter], .listCases))
        #expect(!Authorization.dependsOnlyOnRoles(.listCases))
    }

    @Test("debriefs: filed by the case's mediators and supervisors, read by them and the director, by no office")
    func debriefs() {
        let supervising = AccessScope(assignedSupervisor: true)
        let mediating = AccessScope(assignedMediator: true)
        for roles in Self.roleSets {
            #expect(
                Authorization.permits(roles, .fileDebrief, scope: supervising) == roles.contains(.supervisor),
                "\(roles.sorted())")
            #expect(
                Authorization.permits(roles, .fileDebrief, scope: mediating) == roles.contains(.mediator),
                "\(roles.sorted())")
            #expect(!Authorization.permits(roles, .fileDebrief), "\(roles.sorted()): nobody files one unassigned")
            #expect(Authorization.permits(roles, .readDebrief) == roles.contains(.director), "\(roles.sorted())")
            #expect(
                !Authorization.permits(roles, .readDebrief, scope: AccessScope(routedOffice: "titleix"))
                    || roles.contains(.director), "\(roles.sorted()): an office reads no debrief")
        }
        // A supervisor's assignment grants debriefs and the lists, nothing else of the case.
        for action in Action.allCases
        where ![.fileDebrief, .readDebrief, .listCases, .listRecords, .whoami, .health].contains(action) {
            #expect(!Authorization.permits([.supervisor], action, scope: supervising), "a supervisor may \(action)")
        }
        #expect(Action.reading(.debrief) == .readDebrief && Action.filing(.debrief) == .fileDebrief)
    }

    @Test("session notes are the assigned mediators' alone; disclosures the director's and their office's")
    func confidentialTypes() {
        let assigned = AccessScope(assignedMediator: true)
        for roles in Self.roleSets {
            #expect(Authorization.permits(roles, .readSessionNote, scope: assigned) == roles.contains(.mediator))
            #expect(!Authorization.permits(roles, .readSessionNote))
            #expect(
                Authorization.permits(roles, .readDisclosure, scope: AccessScope(routedOffice: "titleix"))
                    == (roles.contains(.director) || roles.contains(.office("titleix")))
            )
            #expect(
                Authorization.permits(
                    roles, .readDisclosure, scope: AccessScope(assignedMediator: true, routedOffice: "hr"))
                    == roles.contains(.director)
            )
        }
        #expect(Authorization.grantingRole([.mediator, .director], .shredSessionNote, scope: assigned) == .director)
        #expect(Authorization.grantingRole([.mediator], .shredSessionNote, scope: assigned) == .mediator)
    }

    @Test("the statistician and the operator reach no case and no record")
    func noContentForAggregatesOrKeys() {
        let contentActions = Action.allCases.filter { action in
            ["read", "file", "shred", "close", "open", "assign"].contains { action.rawValue.hasPrefix($0) }
                && ![.readStatistics, .readAudit, .readCertificates, .readCertificateKey, .readMetrics].contains(action)
        }
        #expect(contentActions.count >= 15)
        for action in contentActions {
            #expect(!Authorization.mightPermit([.statistician, .operator], action), "\(action)")
        }
    }
}

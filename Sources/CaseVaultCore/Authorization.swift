/// Everything a caller can ask the daemon to do. Every route names exactly one action, and the
/// authorization table below is the only place that decides whether a role may perform it.
public enum Action: String, Sendable, CaseIterable {
    case health
    case whoami
    case status
}

/// The one authorization table (DESIGN §8), after OpenSSH's monitor: each action lists the roles that may
/// perform it; anything not listed is refused. Finer checks that depend on the case (a mediator's own
/// cases, an office's own disclosures) come after this table allows the action, never instead of it.
public enum Authorization {
    /// Actions any peer may perform, with or without a role.
    static let open: Set<Action> = [.health]

    static func allowedRoles(_ action: Action) -> (Role) -> Bool {
        switch action {
        case .health:
            return { _ in true }
        case .whoami:
            // Any caller that holds a role may see which roles it holds.
            return { _ in true }
        case .status:
            return { $0 == .operator }
        }
    }

    /// Whether a caller holding `roles` may perform `action`. A caller with no role may perform only
    /// the open actions.
    public static func permits(_ roles: Set<Role>, _ action: Action) -> Bool {
        if Self.open.contains(action) { return true }
        let allowed = Self.allowedRoles(action)
        return roles.contains(where: allowed)
    }
}

public import CaseVaultCore
public import Hummingbird
internal import NIOCore

/// Per-request state: the connection it came on, and the peer's identity and roles once the identity
/// middleware has read them.
public struct CaseVaultContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel
    public var identity: PeerIdentity?
    public var roles: Set<Role> = []
    /// The request's audit ticket, set by the audit middleware.
    var audit: AuditTicket?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// Throws `forbidden` unless the authorization table lets the caller perform `action` in `scope`.
    public func authorize(_ action: Action, scope: AccessScope = .none) throws(CaseVaultError) {
        guard self.identity != nil, Authorization.permits(self.roles, action, scope: scope) else {
            throw self.refusal
        }
    }

    /// Authorizes `action` and says who allowed it: the caller's uid and the role that granted it.
    public func authority(_ action: Action, scope: AccessScope = .none) throws(CaseVaultError) -> Authority {
        try self.authorize(action, scope: scope)
        let role = Authorization.grantingRole(self.roles, action, scope: scope)
        return Authority(uid: self.uid, role: role?.description ?? "unknown")
    }

    /// Throws `forbidden` unless one of `actions` could be allowed to the caller on some case: asked before
    /// any id is looked up, so that a caller who may never act learns nothing about which ids exist.
    public func authorizeSomewhere(_ actions: Action...) throws(CaseVaultError) {
        try self.authorizeSomewhere(actions)
    }

    /// `authorizeSomewhere` over a list: what the router asks for a route whose check depends on its case.
    public func authorizeSomewhere(_ actions: [Action]) throws(CaseVaultError) {
        guard self.identity != nil, actions.contains(where: { Authorization.mightPermit(self.roles, $0) }) else {
            throw self.refusal
        }
    }

    var refusal: CaseVaultError {
        CaseVaultError(
            .forbidden,
            self.roles.isEmpty
                ? "this user holds no CaseVault role; ask the administrator to map it in the configuration"
                : "the caller's roles do not allow this action"
        )
    }

    /// The caller's uid; only called after `authorize`, which refuses a caller without identity.
    var uid: UInt32 { self.identity?.uid ?? UInt32.max }

    /// How the caller is recorded as a record's author: its uid, never a name it chose.
    var author: String { "uid:\(self.uid)" }
}

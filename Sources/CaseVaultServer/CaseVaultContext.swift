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

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// Throws `forbidden` unless the authorization table lets the caller's roles perform `action`.
    public func authorize(_ action: Action) throws(CaseVaultError) {
        guard self.identity != nil, Authorization.permits(self.roles, action) else {
            throw CaseVaultError(
                .forbidden,
                self.roles.isEmpty
                    ? "this user holds no CaseVault role; ask the administrator to map it in the configuration"
                    : "the caller's roles do not allow this action"
            )
        }
    }
}

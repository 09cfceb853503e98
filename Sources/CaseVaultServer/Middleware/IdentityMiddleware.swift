internal import CaseVaultConfiguration
internal import CaseVaultCore
internal import Foundation
internal import Hummingbird
internal import Logging
internal import NIOCore

/// Reads the peer's identity from the socket and resolves its roles, for every request.
struct IdentityMiddleware: RouterMiddleware {
    typealias Context = CaseVaultContext
    let roleMap: RoleMap
    /// Who sent the request: the kernel's word for its connection in the daemon (`ConnectionIdentities`).
    let identify: @Sendable (Request, any Channel) async throws -> PeerIdentity

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var context = context
        do {
            let identity = try await self.identify(request, context.channel)
            context.identity = identity
            context.roles = self.roleMap.roles(for: identity)
        } catch {
            // Fail closed: with no identity, only open actions (health) are served.
            context.identity = nil
            context.roles = []
        }
        return try await next(request, context)
    }
}

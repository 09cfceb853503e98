internal import CaseVaultCore
internal import CaseVaultStore
internal import Foundation
internal import Hummingbird

/// The mediator roster, kept by the director at run time. Removing a mediator ends their access to every
/// case at their next request: the scope of each request asks the roster.
extension Routes {
    struct RosterEntry: Encodable {
        var user: String
        var uid: UInt32

        init(_ uid: UInt32) {
            self.user = Users.name(uid)
            self.uid = uid
        }
    }

    struct Roster: Encodable {
        var mediators: [RosterEntry]
    }

    /// The `{user}` of the path, percent-decoded (`uid%3A4002` is `uid:4002`); a malformed escape is
    /// an invalid identifier. Its uid is looked up by `Users.uid`, on the pool (a name lookup may wait on
    /// a directory server).
    func user(_ context: CaseVaultContext) throws(CaseVaultError) -> String {
        guard let user = (context.parameters.get("user") ?? "").removingPercentEncoding else {
            throw CaseVaultError(.invalidIdentifier, "a mediator is uid:N or the name of a user this system knows")
        }
        return user
    }

    /// `GET /v1/roster/mediators`.
    func listRoster(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let roster = try await self.run { store throws(CaseVaultError) in
            Roster(mediators: try store.roster().map(RosterEntry.init))
        }
        return try JSONResponse.make(roster)
    }

    /// `GET /v1/roster/mediators/{user}`: 404 when the user is not on the roster.
    func readRosterEntry(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let user = try self.user(context)
        let entry = try await self.run { store throws(CaseVaultError) -> RosterEntry? in
            let uid = try Users.uid(user)
            return try store.isOnRoster(uid) ? RosterEntry(uid) : nil
        }
        guard let entry else {
            throw CaseVaultError(.notFound, "this user is not on the mediator roster")
        }
        return try JSONResponse.make(entry)
    }

    /// `PUT /v1/roster/mediators/{user}`: 201 when added, 200 when already there.
    func addToRoster(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let user = try self.user(context)
        let (entry, added) = try await self.run { store throws(CaseVaultError) in
            let uid = try Users.uid(user)
            return (RosterEntry(uid), try store.addToRoster(uid))
        }
        return try JSONResponse.make(entry, status: added ? .created : .ok)
    }

    /// `DELETE /v1/roster/mediators/{user}`: 204; 404 when the user was not on the roster.
    func removeFromRoster(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let user = try self.user(context)
        guard try await self.run({ store throws(CaseVaultError) in try store.removeFromRoster(try Users.uid(user)) })
        else {
            throw CaseVaultError(.notFound, "this user is not on the mediator roster")
        }
        return Response(status: .noContent)
    }
}

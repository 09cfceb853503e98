internal import CaseVaultCore
internal import CaseVaultSealing
internal import Hummingbird

/// The other daemons of a vault kept in PostgreSQL (operator).
extension Routes {
    struct Forgotten: Encodable {
        var daemon: String
        var epochsMarkedDestroyed: [UInt64]

        enum CodingKeys: String, CodingKey {
            case daemon
            case epochsMarkedDestroyed = "epochs_marked_destroyed"
        }
    }

    /// `POST /v1/admin/daemons/{daemon}/forget` `{"key_file_destroyed": true}`: the operator's word that the
    /// daemon's host is gone for good and its erase epoch key file destroyed with it
    /// (`ServedStorage.forgetDaemon`), so that the erasures its file held back are certified, naming it as
    /// attested. The body must say so in full: anything else is refused and changes nothing.
    func forgetDaemon(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let text = context.parameters.get("daemon") ?? ""
        let name: DaemonName
        do {
            name = try DaemonName(text)
        } catch {
            throw CaseVaultError(
                .invalidIdentifier, "a daemon's name is 1 to 64 of a-z, 0-9, '.', '_' and '-'", field: "daemon")
        }
        let body = try await request.jsonObject(self.configuration)
        try body.onlyFields(["key_file_destroyed"])
        guard let value = body["key_file_destroyed"] else {
            throw CaseVaultError(
                .missingField,
                "key_file_destroyed is required: true, the operator's word that the daemon's host and its epoch key file are destroyed",
                field: "key_file_destroyed")
        }
        guard case .bool(true) = value else {
            throw body.mistyped("key_file_destroyed", "true (nothing else forgets a daemon)")
        }
        let epochs = try await self.run { store throws(CaseVaultError) in try store.forgetDaemon(name) }
        return try JSONResponse.make(Forgotten(daemon: name.rawValue, epochsMarkedDestroyed: epochs))
    }
}

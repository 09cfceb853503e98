internal import CaseVaultAudit
internal import CaseVaultCore
internal import CaseVaultStore
internal import Foundation
internal import Hummingbird
internal import Synchronization

extension Routes {
    /// Recomputes the audit chain and checks its MACs and signatures under the daemon's own keys, and that
    /// the log holds the entry the index's anchor names: the report names the first bad entry. Reads a
    /// snapshot of the log without holding its writer.
    func verifyAudit(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let audit = self.audit
        _ = try self.store
        guard let keeper = audit.anchorKeeper else {
            throw CaseVaultError(.auditUnavailable, "the audit log is not attached to the vault; see the daemon's log")
        }
        let report = try await self.pool.run { () throws(CaseVaultError) in
            let anchor: AuditAnchor?
            switch try keeper.auditAnchor() {
            case .anchored(let value): anchor = value
            case .none: anchor = nil
            }
            let (segments, head) = try audit.snapshot()
            return AuditVerifier.verify(segments: segments, head: head, signer: keeper.auditSigner, anchor: anchor)
        }
        return try JSONResponse.make(report)
    }

    struct EntriesBody: Encodable {
        var entries: [AuditEntry]
    }

    /// `GET /v1/audit/entries?last=N` (1 to 1000, default 20): the newest entries, oldest first (uids,
    /// roles, routes, ids and results; never content). Director and operator.
    func auditEntries(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let query = request.uri.queryParameters
        for (name, _) in query where name != "last" {
            throw CaseVaultError(.invalidField, "the audit entries take only the query parameter last")
        }
        var count = AuditTail.defaultCount
        if let text = query.get("last") {
            guard let number = Int(text), (1...AuditTail.maxCount).contains(number) else {
                throw CaseVaultError(
                    .invalidField, "last must be a whole number from 1 to \(AuditTail.maxCount)", field: "last")
            }
            count = number
        }
        let (directory, last) = (self.audit.directory, count)
        let entries = try await self.pool.run { try AuditTail.read(directory: directory, count: last) }
        return try JSONResponse.make(EntriesBody(entries: entries))
    }
}

package import CaseVaultCore
package import CaseVaultCrypto
internal import CaseVaultFiles
internal import CaseVaultSealing
internal import Foundation
internal import GRDB

/// The audit log's anchor in the index: one row, replaced as the log goes, each with a MAC under the
/// chain subkey. The store keeps it; the audit log decides what it says.
extension RecordStore: AuditAnchorKeeper {
    /// The anchor, its MAC checked. `integrity-failure` when the MAC does not verify (the row was
    /// changed, or comes from another vault).
    package func auditAnchor() throws(CaseVaultError) -> AuditAnchorState {
        let signer = self.auditSigner
        let (row, isNew) = try self.index.read { db in
            let row = try GRDB.Row.fetchOne(
                db, sql: "SELECT seq, hash, offset, nonce, mac, file FROM audit_anchor WHERE id = 1")
            let used =
                try Bool.fetchOne(
                    db,
                    sql: """
                        SELECT EXISTS (SELECT 1 FROM cases) OR EXISTS (SELECT 1 FROM records) OR EXISTS (SELECT 1 FROM shred_ledger)
                        """
                ) ?? true
            return (row, !used)
        }
        guard let row else { return .none(vaultIsNew: isNew) }
        return .anchored(try Self.checkedAnchor(row, signer: signer))
    }

    /// Replaces the anchor, durably (`synchronous=FULL`), under a fresh nonce.
    package func setAuditAnchor(_ anchor: AuditAnchor) throws(CaseVaultError) {
        try self.refuseIfClosed()
        let nonce = Random.bytes(count: 16)
        let mac = self.auditSigner.mac(anchor.message(nonce: nonce))
        try self.index.writeBesideCases { db in
            try db.execute(
                sql:
                    "INSERT OR REPLACE INTO audit_anchor (id, seq, hash, offset, nonce, mac, file) VALUES (1, ?, ?, ?, ?, ?, ?)",
                arguments: [
                    Int64(anchor.seq), Data(anchor.hash), anchor.offset, Data(nonce), Data(mac), Int64(anchor.file),
                ]
            )
        }
    }

    /// The anchor of the data directory at `dataDirectory`, read without opening the store (for
    /// `casevaultctl audit verify --offline`): its MAC is checked when `signer` is given. `nil` when there
    /// is none.
    package static func auditAnchor(ofDataDirectory dataDirectory: String, signer: AuditSigner?) throws(CaseVaultError)
        -> AuditAnchor?
    {
        let path = dataDirectory + "/index.sqlite"
        guard DataDirectory.exists(path) else {
            throw CaseVaultError(.notFound, "no vault index at \(path)")
        }
        let row: GRDB.Row?
        do {
            var configuration = GRDB.Configuration()
            configuration.readonly = true
            let index = try DatabaseQueue(path: path, configuration: configuration)
            row = try index.read { db in
                guard try db.tableExists("audit_anchor") else { return nil }
                return try GRDB.Row.fetchOne(
                    db, sql: "SELECT seq, hash, offset, nonce, mac, file FROM audit_anchor WHERE id = 1")
            }
        } catch {
            throw Index.failure(error)
        }
        guard let row else { return nil }
        guard let signer else { return try Self.decodeAnchor(row).anchor }
        return try Self.checkedAnchor(row, signer: signer)
    }

    /// The signer of the vault whose root key `configuration`'s source gives (never created), for checking
    /// the audit log without the daemon.
    package static func auditSigner(_ configuration: StoreConfiguration, passphrase: SecureBytes?)
        throws(CaseVaultError)
        -> AuditSigner
    {
        let rootKey = try Self.rootKey(configuration, passphrase: passphrase)
        defer { rootKey.wipe() }
        return try SealingServices(rootKey: rootKey).auditSigner
    }

    private static func decodeAnchor(_ row: GRDB.Row) throws(CaseVaultError) -> (
        anchor: AuditAnchor, nonce: [UInt8], mac: [UInt8]
    ) {
        let f: (seq: Int64, hash: Data, offset: Int64, nonce: Data, mac: Data, file: Int64)
        do {
            f = (
                try row.decode(atIndex: 0), try row.decode(atIndex: 1), try row.decode(atIndex: 2),
                try row.decode(atIndex: 3), try row.decode(atIndex: 4), try row.decode(atIndex: 5)
            )
        } catch {
            throw Self.anchorDamaged()
        }
        guard f.seq >= 0, f.offset >= 0, f.file >= 1, f.hash.count == 32, f.nonce.count == 16, f.mac.count == 32
        else {
            throw Self.anchorDamaged()
        }
        return (
            AuditAnchor(seq: UInt64(f.seq), hash: [UInt8](f.hash), offset: f.offset, file: UInt64(f.file)),
            [UInt8](f.nonce), [UInt8](f.mac)
        )
    }

    private static func checkedAnchor(_ row: GRDB.Row, signer: AuditSigner) throws(CaseVaultError) -> AuditAnchor {
        let (anchor, nonce, mac) = try Self.decodeAnchor(row)
        guard Memory.constantTimeEquals(signer.mac(anchor.message(nonce: nonce)), mac) else {
            throw Self.anchorDamaged()
        }
        return anchor
    }

    static func anchorDamaged() -> CaseVaultError {
        CaseVaultError(
            .integrityFailure,
            "the audit anchor in the index does not verify: it was changed, or the index belongs to another vault"
        )
    }
}

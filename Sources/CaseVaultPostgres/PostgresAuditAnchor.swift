package import CaseVaultCore
internal import CaseVaultCrypto
package import CaseVaultFiles
package import CaseVaultSealing
internal import PostgresNIO

/// One daemon's audit anchor in the vault's database: how far that daemon's own audit log had got, as the
/// local store keeps it in its index (`AuditAnchor`). Each daemon keeps its log on its own host and
/// anchors it here under its name, a row a daemon of `casevault_audit_anchors`, replaced as the log goes,
/// with a fresh nonce and a MAC under the root key's chain subkey over the daemon's name and the rest
/// (`AuditAnchor.message(nonce:daemon:)`): a row copied from another vault, or from another daemon's
/// place, does not verify. A daemon without a row starts its log afresh (`none(vaultIsNew: true)`): its
/// first attach anchors it. The row is never deleted by CaseVault; whoever can write the database can
/// delete it, and then a log replaced whole goes unnoticed at that daemon's next start
/// (docs/SECURITY.md).
package final class PostgresAuditAnchor: AuditAnchorKeeper {
    package let daemon: DaemonName
    private let storage: PostgresStorage

    package init(storage: PostgresStorage, daemon: DaemonName) {
        self.storage = storage
        self.daemon = daemon
    }

    package var auditSigner: AuditSigner { self.storage.sealing.auditSigner }

    /// This daemon's anchor, its MAC checked: `integrity-failure` when it does not verify.
    package func auditAnchor() throws(CaseVaultError) -> AuditAnchorState {
        let (logger, name) = (self.storage.logger, self.daemon.rawValue)
        let row = try self.storage.run { connection -> Row? in
            for try await row in try await connection.query(
                "SELECT seq, hash, at, file, nonce, mac FROM casevault_audit_anchors WHERE daemon = \(name)",
                logger: logger
            ).decode(Row.self) {
                return row
            }
            return nil
        }
        guard let (seq, hash, offset, file, nonce, mac) = row else { return .none(vaultIsNew: true) }
        guard seq >= 0, offset >= 0, file >= 1, hash.readableBytes == 32, nonce.readableBytes == 16,
            mac.readableBytes == 32
        else { throw Self.damaged() }
        let anchor = AuditAnchor(
            seq: UInt64(seq), hash: Array(hash.readableBytesView), offset: offset, file: UInt64(file))
        let expected = self.auditSigner.mac(anchor.message(nonce: Array(nonce.readableBytesView), daemon: name))
        guard Memory.constantTimeEquals(expected, Array(mac.readableBytesView)) else { throw Self.damaged() }
        return .anchored(anchor)
    }

    /// Replaces this daemon's anchor under a fresh nonce, durable once the primary's commit returns.
    package func setAuditAnchor(_ anchor: AuditAnchor) throws(CaseVaultError) {
        let (logger, name) = (self.storage.logger, self.daemon.rawValue)
        let nonce = Random.bytes(count: 16)
        let mac = self.auditSigner.mac(anchor.message(nonce: nonce, daemon: name))
        try self.storage.run { connection in
            try await connection.perform(
                """
                INSERT INTO casevault_audit_anchors (daemon, seq, hash, at, file, nonce, mac)
                VALUES (\(name), \(Int64(anchor.seq)), \(ByteBuffer(bytes: anchor.hash)), \(anchor.offset),
                    \(Int64(anchor.file)), \(ByteBuffer(bytes: nonce)), \(ByteBuffer(bytes: mac)))
                ON CONFLICT (daemon) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at,
                    file = excluded.file, nonce = excluded.nonce, mac = excluded.mac
                """, logger: logger)
        }
    }

    /// Never: the log's flushes are its own, on another machine than the database's.
    package func letRide(_ rider: any FlushRider) -> Bool { false }

    /// Replacing the anchor waits on the database: the log does it apart from its flushes.
    package var isRemote: Bool { true }

    private typealias Row = (Int64, ByteBuffer, Int64, Int64, ByteBuffer, ByteBuffer)

    private static func damaged() -> CaseVaultError {
        CaseVaultError(
            .integrityFailure,
            "this daemon's audit anchor in the database does not verify: it was changed, or comes from another vault or daemon"
        )
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto
package import CaseVaultFiles
package import CaseVaultSealing
package import Logging
package import PostgresNIO

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
        let (logger, daemon, signer) = (self.storage.logger, self.daemon, self.auditSigner)
        let anchor = try self.storage.run { connection in
            try await Self.read(daemon, signer: signer, on: connection, logger: logger)
        }
        return anchor.map(AuditAnchorState.anchored) ?? .none(vaultIsNew: true)
    }

    /// The anchor of `daemon` in the database, `nil` when it has none; its MAC checked when `signer` is
    /// given (`integrity-failure` when it does not verify, or the row is malformed). What
    /// `casevaultctl audit verify --offline` compares a copy of any daemon's log with.
    package static func read(
        _ daemon: DaemonName, signer: AuditSigner?, on connection: PostgresConnection, logger: Logger
    ) async throws -> AuditAnchor? {
        let name = daemon.rawValue
        var found: Row?
        for try await row in try await connection.query(
            "SELECT seq, hash, at, file, nonce, mac FROM casevault_audit_anchors WHERE daemon = \(name)",
            logger: logger
        ).decode(Row.self) {
            found = row
        }
        guard let (seq, hash, offset, file, nonce, mac) = found else { return nil }
        guard seq >= 0, offset >= 0, file >= 1, hash.readableBytes == 32, nonce.readableBytes == 16,
            mac.readableBytes == 32
        else { throw Self.damaged() }
        let anchor = AuditAnchor(
            seq: UInt64(seq), hash: Array(hash.readableBytesView), offset: offset, file: UInt64(file))
        if let signer {
            let expected = signer.mac(anchor.message(nonce: Array(nonce.readableBytesView), daemon: name))
            guard Memory.constantTimeEquals(expected, Array(mac.readableBytesView)) else { throw Self.damaged() }
        }
        return anchor
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
            "the daemon's audit anchor in the database does not verify: it was changed, or comes from another vault or daemon"
        )
    }
}

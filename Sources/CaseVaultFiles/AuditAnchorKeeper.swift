public import CaseVaultCore

/// What the audit log needs from the store beside it: the signer over the root key's audit subkeys, the
/// anchor kept in the index, and flushes to ride on. Declared below both, so that the audit log does not
/// import the store; `RecordStore` conforms.
public protocol AuditAnchorKeeper: AnyObject, Sendable {
    /// Signs checkpoints and keys the chain; the keys stay in the store's secure memory.
    var auditSigner: AuditSigner { get }
    /// The anchor, its MAC checked: `integrity-failure` when it does not verify.
    func auditAnchor() throws(CaseVaultError) -> AuditAnchorState
    /// Replaces the anchor durably.
    func setAuditAnchor(_ anchor: AuditAnchor) throws(CaseVaultError)
    /// Lets `rider` ride on the keeper's flushes when it may; returns whether it does.
    @discardableResult
    func letRide(_ rider: any FlushRider) -> Bool
    /// Whether replacing the anchor waits on the network (a database): the log then replaces it apart from
    /// its own flushes, except a checkpoint's, which it waits for.
    var isRemote: Bool { get }
}

extension AuditAnchorKeeper {
    public var isRemote: Bool { false }
}

/// What the audit log may do with the audit subkey: sign a checkpoint and show the public key. The key
/// stays in the barrier's secure memory; this only carries a closure over it.
public struct AuditSigner: Sendable {
    /// The Ed25519 public key that `casevaultctl audit verify` checks checkpoints against.
    public let publicKey: [UInt8]
    private let sign: @Sendable ([UInt8]) -> [UInt8]

    init(publicKey: [UInt8], sign: @escaping @Sendable ([UInt8]) -> [UInt8]) {
        self.publicKey = publicKey
        self.sign = sign
    }

    /// A detached Ed25519 signature of `message`.
    public func signature(for message: [UInt8]) -> [UInt8] {
        self.sign(message)
    }
}

/// What the audit log may do with the root key's audit subkeys: sign a checkpoint, key the chain, tag the
/// anchor, and show the public key. The keys stay in the barrier's secure memory; this only carries
/// closures over them.
public struct AuditSigner: Sendable {
    /// The Ed25519 public key that `casevaultctl audit verify` checks checkpoints against.
    public let publicKey: [UInt8]
    private let sign: @Sendable ([UInt8]) -> [UInt8]
    private let authenticate: @Sendable ([UInt8]) -> [UInt8]

    package init(
        publicKey: [UInt8], sign: @escaping @Sendable ([UInt8]) -> [UInt8],
        authenticate: @escaping @Sendable ([UInt8]) -> [UInt8]
    ) {
        self.publicKey = publicKey
        self.sign = sign
        self.authenticate = authenticate
    }

    /// A detached Ed25519 signature of `message`.
    public func signature(for message: [UInt8]) -> [UInt8] {
        self.sign(message)
    }

    /// A 32-byte MAC of `message` (keyed BLAKE2b under the chain subkey): what only the root key's holder
    /// can compute, so that nobody else can extend the chain or move its anchor.
    public func mac(_ message: [UInt8]) -> [UInt8] {
        self.authenticate(message)
    }
}

/// How far the audit log had got, kept in the index (`synchronous=FULL`) apart from the log, so that a
/// log that was cut short, replaced or deleted is noticed: entry `seq` has chain hash `hash` and its line
/// starts at byte `offset` of the file whose first entry is `file` (the log rotates: 1 is the first
/// file). seq 0: the log starts afresh, and is checked from its first entry. Stored with a fresh random
/// nonce and a MAC over all of it under the chain subkey, so it can be neither forged nor taken from
/// another copy of the vault: only this index's own older rows could be put back.
public struct AuditAnchor: Sendable, Equatable {
    public var seq: UInt64
    public var hash: [UInt8]
    public var offset: Int64
    public var file: UInt64

    /// A log that starts afresh: what a restore anchors, since a restored vault begins a log of its own.
    public static let empty = AuditAnchor(seq: 0, hash: [UInt8](repeating: 0, count: 32), offset: 0, file: 1)

    public init(seq: UInt64, hash: [UInt8], offset: Int64, file: UInt64) {
        self.seq = seq
        self.hash = hash
        self.offset = offset
        self.file = file
    }

    /// What the anchor's MAC covers, with the row's nonce.
    package func message(nonce: [UInt8]) -> [UInt8] {
        // An anchor in the first file is covered as before files existed, so that older anchors still verify.
        Array("casevault.audit.anchor.v1".utf8) + withUnsafeBytes(of: self.seq.bigEndian, Array.init) + self.hash
            + withUnsafeBytes(of: self.offset.bigEndian, Array.init) + nonce
            + (self.file == 1 ? [] : withUnsafeBytes(of: self.file.bigEndian, Array.init))
    }
}

extension AuditAnchor {
    /// What the MAC of daemon `daemon`'s anchor in a database several daemons share covers: a label of its
    /// own, the daemon's name (its length first), the anchor and the row's nonce, so that a row passes
    /// neither for another vault's nor for another daemon's.
    package func message(nonce: [UInt8], daemon: String) -> [UInt8] {
        let name = Array(daemon.utf8)
        return Array("casevault.audit.anchor.daemon.v1".utf8)
            + withUnsafeBytes(of: UInt32(name.count).bigEndian, Array.init)
            + name + withUnsafeBytes(of: self.seq.bigEndian, Array.init) + self.hash
            + withUnsafeBytes(of: self.offset.bigEndian, Array.init)
            + withUnsafeBytes(of: self.file.bigEndian, Array.init)
            + nonce
    }
}

/// What the index remembers of the audit log.
public enum AuditAnchorState: Sendable, Equatable {
    /// No anchor yet: `vaultIsNew` when the index holds no case, record or shred either, so that a log
    /// starting afresh is what one expects.
    case none(vaultIsNew: Bool)
    case anchored(AuditAnchor)
}

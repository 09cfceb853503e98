internal import Synchronization

/// One fuzz target: a parser of CaseVault that meets bytes from outside (a client, a file an operator
/// hands over, a file on disk someone could have changed), and how to feed it one input.
///
/// A target calls the parser's real entry point and drops what it throws: a typed error is a correct
/// answer to bad bytes. Only a crash, a trap, a hang or a leak is a finding. Each target is deterministic
/// and takes well under 10 ms an input.
public struct FuzzTarget: Sendable {
    /// The target's name: what `CASEVAULT_FUZZ_TARGET` selects, and its corpus `Tests/fuzz-corpus/<name>/`.
    public let name: String
    /// What the target feeds, and through which entry point, in one line.
    public let summary: String
    private let body: @Sendable ([UInt8]) -> Void

    init(_ name: String, _ summary: String, _ body: @escaping @Sendable ([UInt8]) -> Void) {
        self.name = name
        self.summary = summary
        self.body = body
    }

    /// Feeds `input` to the parser. Inputs run one at a time, whichever thread calls: the targets that
    /// read a file share one file each.
    public func run(_ input: [UInt8]) {
        FuzzTargets.serial.withLock { _ in
            self.body(input)
        }
    }
}

/// Every fuzz target, for `casevault-fuzz` (libFuzzer, `make fuzz`) and for the corpus replay in
/// `make test`.
public enum FuzzTargets {
    /// One target per parser that meets bytes from outside, in a fixed order. Each name has a corpus
    /// directory `Tests/fuzz-corpus/<name>/`, and every directory there names a target.
    public static let all: [FuzzTarget] = [
        FuzzTarget(
            "request-body",
            "a JSON request body: the depth check, the parse, the envelope scan (rawMember) and the content validator, as POST /v1/cases and POST /v1/cases/{id}/records run them",
            { RequestTargets.body($0) }
        ),
        FuzzTarget(
            "request-secrets",
            "a JSON body carrying secrets (init, unseal): Request.jsonObject(_:secrets:) through RequestBodyParsing",
            { RequestTargets.secrets($0) }
        ),
        FuzzTarget(
            "record-content",
            "a record's content for each type (the first byte picks it): RecordValidator.validate",
            { RequestTargets.content($0) }
        ),
        FuzzTarget(
            "sealed-record",
            "a 128-byte key slot then a sealed blob: FuzzOpener.sealedRecord: the slot unwrapped (KeySlot.decode), the blob opened",
            { StoreTargets.sealedRecord($0) }
        ),
        FuzzTarget(
            "attachment",
            "an attachment file (secretstream): AttachmentDownload, chunk by chunk",
            { StoreTargets.attachment($0) }
        ),
        FuzzTarget(
            "backup",
            "a backup file: RecordStore.restore, reading it as casevaultctl backup restore does",
            { StoreTargets.backup($0) }
        ),
        FuzzTarget(
            "shred-ledger",
            "the shred ledger's copy outside the data directory: ShredLedgerFile.entries",
            { StoreTargets.shredLedger($0) }
        ),
        FuzzTarget(
            "audit-verify",
            "an audit log, then 0xff and its head file: AuditVerifier.verify with and without the MAC key",
            { AuditTargets.verify($0) }
        ),
        FuzzTarget(
            "audit-tail",
            "an audit log file: AuditTail.read and AuditLog.filesProblem (audit tail, doctor)",
            { AuditTargets.tail($0) }
        ),
        FuzzTarget(
            "audit-open",
            "an audit log file: AuditLog.open, the daemon's check of the log's end at start",
            { AuditTargets.open($0) }
        ),
        FuzzTarget(
            "recovery-shares",
            "recovery shares separated by commas: SecretSharing.Share(encoded:) and SecretSharing.combine",
            { OperatorTargets.shares($0) }
        ),
        FuzzTarget(
            "configuration",
            "a casevault.toml: DaemonConfiguration.load, then the settings the daemon derives from it",
            { OperatorTargets.configuration($0) }
        ),
        FuzzTarget(
            "certificate",
            "a destruction certificate document: DestructionCertificate.verify",
            { OperatorTargets.certificate($0) }
        ),
    ]

    /// The target called `name`, or `nil`.
    public static func named(_ name: String) -> FuzzTarget? {
        Self.all.first { $0.name == name }
    }

    /// Serialises the inputs of every target (`FuzzTarget.run`).
    static let serial = Mutex<Void>(())
}

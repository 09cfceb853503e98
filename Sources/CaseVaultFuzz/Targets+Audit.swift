internal import CaseVaultAudit
internal import CaseVaultStore

/// The targets for the audit log's readers: the log is a file anyone with the disk could have changed,
/// and `audit verify --offline` reads a copy an operator hands over.
enum AuditTargets {
    /// `audit-verify`: the bytes up to the first 0xff (a byte no entry holds) are the log, the bytes after
    /// it the head file (absent without a 0xff). Verified as `audit verify` does online, with the test
    /// root key's MAC and signing key, and offline, without a key.
    static func verify(_ input: [UInt8]) {
        let separator = input.firstIndex(of: 0xff)
        let log = Array(input[..<(separator ?? input.endIndex)])
        let head = separator.map { Array(input[($0 + 1)...]) }
        _ = AuditVerifier.verify(log: log, head: head, signer: FuzzEnvironment.shared.auditSigner)
        _ = AuditVerifier.verify(log: log, head: head)
    }

    /// `audit-tail`: the input as the file `log` of an audit directory, read by `casevaultctl audit tail`
    /// (`AuditTail.read`) and by `doctor`'s check of the files (`AuditLog.filesProblem`).
    static func tail(_ input: [UInt8]) {
        let directory = FuzzEnvironment.shared.path("audit-tail")
        FuzzEnvironment.replace(directory + "/" + AuditFiles.current, with: input)
        _ = try? AuditTail.read(directory: directory, count: AuditTail.defaultCount)
        _ = AuditLog.filesProblem(directory: directory)
    }

    /// `audit-open`: the input as the file `log` of an audit directory, opened as the daemon opens it at
    /// start (`AuditLog.open`: a torn last line is cut, the last entry must follow from the one before).
    static func open(_ input: [UInt8]) {
        let directory = FuzzEnvironment.shared.path("audit-open")
        FuzzEnvironment.replace(directory + "/" + AuditFiles.current, with: input)
        if let opened = try? AuditLog.open(directory: directory, clock: { 0 }) {
            _ = opened.0.entries
        }
    }
}

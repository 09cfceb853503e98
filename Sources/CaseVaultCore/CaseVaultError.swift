/// The one error type CaseVault's layers report to their callers.
///
/// Shaped after swift-nio's `FileSystemError`: a stable `code` that callers switch on (and that becomes the
/// problem+json `type` and the CLI exit code), a `message` that says what went wrong and how to fix it, the
/// offending `field` where there is one, an underlying `cause`, and the place it was raised.
///
/// No message ever carries record content, participant names or a disclosure category: messages are
/// built from schema field names and fixed text only, never from values the client sent.
public struct CaseVaultError: Error, Sendable, CustomStringConvertible {
    /// Stable error codes. Their raw values are part of the API: never rename one.
    public enum Code: String, Sendable, CaseIterable {
        /// The content is not a JSON object.
        case malformedContent = "malformed-content"
        /// A required field is absent.
        case missingField = "missing-field"
        /// A field has the wrong type or a value outside what it allows.
        case invalidField = "invalid-field"
        /// The record type is not one CaseVault keeps.
        case unknownRecordType = "unknown-record-type"
        /// The policy forbids this record type (recordings, transcripts).
        case forbiddenRecordType = "forbidden-record-type"
        /// The content is larger than the configured limit.
        case contentTooLarge = "content-too-large"
        /// An identifier is not of the expected form.
        case invalidIdentifier = "invalid-identifier"
        /// No record or case with that id exists.
        case notFound = "not-found"
        /// The record was shredded: it is gone for good.
        case shredded = "shredded"
        /// Stored data failed authentication: it was altered, truncated or moved from another record.
        case integrityFailure = "integrity-failure"
        /// The audit log does not match what the index remembers of it (appended to, cut short, replaced
        /// or deleted): nothing is served on it until an operator accepts the break.
        case auditMismatch = "audit-mismatch"
        /// A file or directory is readable or writable by others than the daemon's user.
        case insecurePermissions = "insecure-permissions"
        /// The key source could not supply the root key.
        case keyUnavailable = "key-unavailable"
        /// The filesystem or the index failed (disk full, I/O error, corrupt index), or the database did (on
        /// PostgreSQL, also a commit sent and not answered: the write may have been done).
        case storageFailure = "storage-failure"
        /// The configuration file is missing, malformed, or holds an unknown key or a bad value.
        case invalidConfiguration = "invalid-configuration"
        /// The caller's roles do not allow the action (or the caller has no role).
        case forbidden = "forbidden"
        /// No route has this path.
        case routeNotFound = "route-not-found"
        /// The route exists but not with this method.
        case methodNotAllowed = "method-not-allowed"
        /// The socket path is taken by another user's file or by a daemon that is running.
        case socketUnavailable = "socket-unavailable"
        /// The case is closed: nothing but evaluations and disclosures can be filed.
        case caseClosed = "case-closed"
        /// Not every participant's agreement to mediate is on file yet.
        case agreementsMissing = "agreements-missing"
        /// The request body is not `application/json`.
        case unsupportedMediaType = "unsupported-media-type"
        /// The request body nests arrays and objects deeper than the configured limit.
        case nestingTooDeep = "nesting-too-deep"
        /// A mediator named in the request is not on the mediator roster.
        case notOnRoster = "not-on-roster"
        /// A user named in the request is well formed but no user of this host has that name.
        case unknownUser = "unknown-user"
        /// The request was not received in the configured time.
        case requestTimeout = "request-timeout"
        /// The daemon is at its configured number of connections.
        case overloaded = "overloaded"
        /// The request line and header fields are larger than the configured limit.
        case headerTooLarge = "header-too-large"
        /// The request is not valid HTTP/1.1.
        case malformedRequest = "malformed-request"
        /// The record already has its attachment; records and their attachments are immutable.
        case attachmentExists = "attachment-exists"
        /// The record's case is under a legal hold: it cannot be destroyed until the hold is released.
        case held = "held"
        /// The audit log cannot be written, so the daemon refuses to act (fail closed).
        case auditUnavailable = "audit-unavailable"
        /// The vault is sealed: only health, status, init and unseal are served until an operator unseals it.
        case sealed = "sealed"
        /// The passphrase or the recovery shares do not open the root key (nothing more is said).
        case unsealRefused = "unseal-refused"
        /// Too soon after a refused unseal attempt: wait the time the answer names.
        case unsealThrottled = "unseal-throttled"
        /// The vault is already initialised (a wrapped root key exists).
        case alreadyInitialised = "already-initialised"
        /// init, unseal and seal need the passphrase key source, or the vault is not initialised yet.
        case wrongKeySource = "wrong-key-source"
        /// What only one backend does, asked of a daemon of the other: backups of a daemon that keeps its
        /// records in PostgreSQL, forgetting a daemon of a vault kept in a data directory.
        case notOnThisBackend = "not-on-this-backend"
        /// The database cannot be reached, or is between primaries (a failover): nothing was changed, and
        /// the request may be sent again (503 with Retry-After).
        case storageUnavailable = "storage-unavailable"
        /// The daemon named holds its name in the database (it serves the vault now), so it cannot be
        /// forgotten as a host gone for good.
        case daemonPresent = "daemon-present"
        /// The daemon named alone holds an erase epoch that live records or holds are still wrapped under,
        /// so forgetting it could destroy the last key to them.
        case soleKeyHolder = "sole-key-holder"
        /// A backup is restored only into a vault that holds nothing yet, and this one holds cases, records,
        /// shreds or certificates.
        case vaultNotEmpty = "vault-not-empty"
        /// `casevaultctl migrate` moved the vault to the other backend: a daemon refuses to serve it where it
        /// was (casevaultd exits 2) until `migrate --cancel` removes the mark. Answered (503, no
        /// `Retry-After`) to clients that systemd's socket held while such a daemon failed to start, and to a
        /// filing on PostgreSQL that waited behind the move.
        case vaultMoved = "vault-moved"
    }

    /// Where an error was raised, for operators reading logs.
    public struct Location: Sendable, CustomStringConvertible {
        public var file: String
        public var line: Int

        public var description: String { "\(self.file):\(self.line)" }
    }

    public var code: Code
    /// What went wrong and what to do about it. Never contains content.
    public var message: String
    /// The schema path of the offending field (`acknowledgements.devices_off`), when there is one.
    public var field: String?
    /// The underlying error, if any (an errno, a SQLite error, a crypto failure).
    public var cause: (any Error & Sendable)?
    /// Seconds after which the same request may succeed (a throttled unseal), sent as `Retry-After`.
    public var retryAfter: Int?
    public var location: Location

    public init(
        _ code: Code,
        _ message: String,
        field: String? = nil,
        cause: (any Error & Sendable)? = nil,
        retryAfter: Int? = nil,
        file: String = #fileID,
        line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.field = field
        self.cause = cause
        self.retryAfter = retryAfter
        self.location = Location(file: file, line: line)
    }

    public var description: String {
        var text = "\(self.code.rawValue): \(self.message)"
        if let cause = self.cause {
            text += " (cause: \(cause))"
        }
        return text
    }
}

// The errors more than one layer raises for the same thing, worded once.
extension CaseVaultError {
    /// `not-found` for a case id no case has.
    package static func caseNotFound() -> CaseVaultError {
        CaseVaultError(.notFound, "no case has this id; check the id")
    }

    /// `not-found` for a record id no record has (or one the caller may not learn exists).
    package static func recordNotFound() -> CaseVaultError {
        CaseVaultError(.notFound, "no record has this id; check the id")
    }

    /// `shredded` for a record whose shred has begun or is done.
    package static func recordShredded() -> CaseVaultError {
        CaseVaultError(.shredded, "the record was shredded and can never be read again")
    }
}

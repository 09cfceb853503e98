public import CaseVaultAudit
public import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultStore
internal import Foundation
internal import TOMLKit

/// `casevault.toml`, decoded strictly: an unknown key is an error, so a typo never silently falls back to
/// a default. Every key is documented in `Config/casevault.toml`.
public struct DaemonConfiguration: Sendable, Equatable {
    public struct Store: Sendable, Equatable, Decodable {
        public var dataDirectory: String
        public var rootKeyFile: String
        public var maxContentBytes: Int

        enum CodingKeys: String, CodingKey {
            case dataDirectory = "data_directory"
            case rootKeyFile = "root_key_file"
            case maxContentBytes = "max_content_bytes"
        }
    }

    public struct Server: Sendable, Equatable, Decodable {
        public var socketPath: String
        public var maxBodyBytes: Int
        /// `gid:N` or `group:NAME`: the clients' group, given the socket and its directory.
        public var socketGroup: String?
        public var maxAttachmentBytes: Int64?
        public var maxJSONDepth: Int?
        public var maxHeaderBytes: Int?
        public var readTimeoutSeconds: Int?
        public var maxConnections: Int?
        public var maxConnectionsPerUser: Int?

        public init(
            socketPath: String, maxBodyBytes: Int, socketGroup: String? = nil, maxAttachmentBytes: Int64? = nil,
            maxJSONDepth: Int? = nil, maxHeaderBytes: Int? = nil, readTimeoutSeconds: Int? = nil,
            maxConnections: Int? = nil,
            maxConnectionsPerUser: Int? = nil
        ) {
            self.socketPath = socketPath
            self.maxBodyBytes = maxBodyBytes
            self.socketGroup = socketGroup
            self.maxAttachmentBytes = maxAttachmentBytes
            self.maxJSONDepth = maxJSONDepth
            self.maxHeaderBytes = maxHeaderBytes
            self.readTimeoutSeconds = readTimeoutSeconds
            self.maxConnections = maxConnections
            self.maxConnectionsPerUser = maxConnectionsPerUser
        }

        enum CodingKeys: String, CodingKey {
            case socketPath = "socket_path"
            case maxBodyBytes = "max_body_bytes"
            case socketGroup = "socket_group"
            case maxAttachmentBytes = "max_attachment_bytes"
            case maxJSONDepth = "max_json_depth"
            case maxHeaderBytes = "max_header_bytes"
            case readTimeoutSeconds = "read_timeout_seconds"
            case maxConnections = "max_connections"
            case maxConnectionsPerUser = "max_connections_per_user"
        }
    }

    /// `[retention]`: a rule per record type (`"3 years after filed"`) over the standard schedule.
    public struct Retention: Sendable, Equatable, Decodable {
        public var intakeForm: String?
        public var agreementToMediate: String?
        public var sessionNote: String?
        public var finalAgreement: String?
        public var evaluation: String?
        public var disclosure: String?
        public var debrief: String?
        public var caseHeader: String?
        public var holdsKeepSessionNotes: Bool?
        public var sweepBatch: Int?

        public init() {}

        /// Each record type's key in `[retention]`.
        static var fields: [(RecordType, WritableKeyPath<Retention, String?>)] {
            [
                (.intakeForm, \.intakeForm), (.agreementToMediate, \.agreementToMediate), (.sessionNote, \.sessionNote),
                (.finalAgreement, \.finalAgreement), (.evaluation, \.evaluation), (.disclosure, \.disclosure),
                (.debrief, \.debrief), (.caseHeader, \.caseHeader),
            ]
        }

        /// Every rule of `schedule` written out, as `Config/casevault.toml` does.
        public static func written(_ schedule: RetentionSchedule) -> Retention {
            var retention = Retention()
            for (type, field) in Self.fields {
                retention[keyPath: field] = schedule.rules[type]?.description
            }
            return retention
        }

        /// The rules written here, by type name.
        var overrides: [String: String] {
            Dictionary(
                uniqueKeysWithValues: Self.fields.compactMap { type, field in
                    self[keyPath: field].map { (type.rawValue, $0) }
                })
        }

        enum CodingKeys: String, CodingKey {
            case intakeForm = "intake_form"
            case agreementToMediate = "agreement_to_mediate"
            case sessionNote = "session_note"
            case finalAgreement = "final_agreement"
            case evaluation, disclosure, debrief
            case caseHeader = "case_header"
            case holdsKeepSessionNotes = "holds_keep_session_notes"
            case sweepBatch = "sweep_batch"
        }
    }

    /// `[statistics]`.
    public struct StatisticsSettings: Sendable, Equatable, Decodable {
        /// Cells counting fewer cases than this are suppressed.
        public var k: Int?
    }

    /// `[audit]`: the audit log.
    public struct AuditSettings: Sendable, Equatable, Decodable {
        /// Entries between two signed checkpoints (default 1000); one is also taken at shutdown.
        public var checkpointEvery: Int?
        /// The log moves to a new file once its file holds this many MiB (default 64); 0: never.
        public var rotateMiB: Int?
        /// Rotated files kept, the newest (default 16); 0: all.
        public var keepFiles: Int?
        /// Whether a read's answer waits until its entry is on disk (default false: its entry is written
        /// before the route acts, and made durable within `read_flush_ms`).
        public var durableReads: Bool?
        /// How long, at most, a read's entry waits for its flush when reads are not durable (default 5 ms).
        public var readFlushMs: Int?

        public init() {}

        enum CodingKeys: String, CodingKey {
            case checkpointEvery = "checkpoint_every"
            case rotateMiB = "rotate_mib"
            case keepFiles = "keep_files"
            case durableReads = "durable_reads"
            case readFlushMs = "read_flush_ms"
        }

        /// When the log rotates and what it keeps.
        public var retention: AuditLog.Retention {
            AuditLog.Retention(
                rotateBytes: self.rotateMiB.map { Int64($0) << 20 } ?? AuditLog.Retention.defaultRotateBytes,
                keepFiles: self.keepFiles ?? AuditLog.Retention.defaultKeepFiles
            )
        }
    }

    /// `[backup]`: backup keys and how long they live, and the shred ledger's copy.
    public struct Backup: Sendable, Equatable, Decodable {
        /// Where each backup's key is kept, sealed (default: `backup.keys` beside store.root_key_file).
        public var keyFile: String?
        /// Days a backup key is kept; older ones are destroyed at the next backup (default 35).
        public var retentionDays: Int?
        /// The copy of the shred ledger outside the data directory, which a restore reads (default:
        /// `shred.ledger` beside key_file).
        public var ledgerFile: String?

        public init() {}

        enum CodingKeys: String, CodingKey {
            case keyFile = "key_file"
            case retentionDays = "retention_days"
            case ledgerFile = "ledger_file"
        }
    }

    /// `[keys]`: where the root key comes from.
    public struct Keys: Sendable, Equatable, Decodable {
        /// `file` (the default: store.root_key_file), `systemd-credential` or `passphrase`
        /// (store.root_key_file then holds the root key wrapped under the passphrase).
        public var source: String?
        /// The credential's name under $CREDENTIALS_DIRECTORY (default `casevault-root-key`).
        public var credential: String?
        /// Argon2id's cost for the passphrase source, chosen at init and kept in the wrapped key file:
        /// passes (default 3) and memory in MiB (default 256), libsodium's "moderate".
        public var argon2Operations: Int?
        public var argon2MemoryMiB: Int?

        public init() {}

        static let sources: Set<String> = ["file", "systemd-credential", "passphrase"]
        static let defaultCredential = "casevault-root-key"

        enum CodingKeys: String, CodingKey {
            case source, credential
            case argon2Operations = "argon2_operations"
            case argon2MemoryMiB = "argon2_memory_mib"
        }
    }

    /// `[storage]`: where records are kept. `local` (the default) is the data directory; `postgresql` is a
    /// PostgreSQL database that several daemons may serve at once, whose readiness `casevaultctl doctor`
    /// checks.
    public struct Storage: Sendable, Equatable, Decodable {
        public enum Backend: String, Sendable, Equatable, Decodable {
            case local, postgresql
        }

        public var backend: Backend?
        /// libpq's URI form, several hosts tried in turn for the writable primary; never a password.
        public var connection: String?
        /// A file only the daemon's user reads, holding the database password on one line.
        public var passwordFile: String?
        /// A systemd credential under $CREDENTIALS_DIRECTORY holding the password instead.
        public var passwordCredential: String?
        /// How long after a shred its residue in the database is unreadable to anyone: `"24 hours"`.
        public var eraseWindow: String?
        /// This daemon's name among the vault's daemons: its epoch key pairs and its audit anchor go by it.
        public var daemonName: String?

        public init() {}

        /// The default erase window, in seconds.
        static let defaultEraseWindow: Int64 = 24 * 3600
        /// The shortest and longest erase windows accepted, in seconds: an hour, thirty days.
        static let eraseWindows: ClosedRange<Int64> = 3600...(30 * 86400)

        enum CodingKeys: String, CodingKey {
            case backend, connection
            case passwordFile = "password_file"
            case passwordCredential = "password_credential"
            case eraseWindow = "erase_window"
            case daemonName = "daemon_name"
        }
    }

    /// `[testing]`: settings for the test suite only.
    public struct Testing: Sendable, Equatable, Decodable {
        /// A file holding the time (milliseconds since the Unix epoch) the daemon's clock reads.
        public var clockFile: String?

        enum CodingKeys: String, CodingKey {
            case clockFile = "clock_file"
        }
    }

    public var store: Store
    public var server: Server
    public var retention = Retention()
    public var keys = Keys()
    public var statistics = StatisticsSettings()
    public var audit = AuditSettings()
    public var backup = Backup()
    public var storage = Storage()
    public var testing = Testing()
    /// Role name → principals, as written; `roleMap()` resolves them.
    public var roles: [String: [String]]
    /// Disclosure category → the office (`office:NAME` role) it is routed to.
    public var offices: [String: String] = [:]

    /// The embedded default of `make run`: everything under `.casevault/` in the working directory.
    public static let embeddedDefault = DaemonConfiguration(
        store: Store(
            dataDirectory: ".casevault/data",
            rootKeyFile: ".casevault/keys/root.key",
            maxContentBytes: 1 << 20
        ),
        server: Server(socketPath: ".casevault/run/casevault.sock", maxBodyBytes: 2 << 20, socketGroup: nil),
        retention: .written(RetentionSchedule.standard),
        roles: ["director": ["self"], "mediator": ["self"], "operator": ["self"]],
        offices: [
            "sexual_harassment": "title-ix", "discrimination": "equity", "intent_to_harm": "campus-safety",
            "mediator_defense": "general-counsel",
        ]
    )
}

public import CaseVaultAudit
public import CaseVaultCore
public import CaseVaultCrypto
public import CaseVaultServer
public import CaseVaultStore
public import Foundation
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
        public var caseHeader: String?
        public var holdsKeepSessionNotes: Bool?
        public var sweepBatch: Int?

        public init() {}

        /// Each record type's key in `[retention]`.
        static var fields: [(RecordType, WritableKeyPath<Retention, String?>)] {
            [
                (.intakeForm, \.intakeForm), (.agreementToMediate, \.agreementToMediate), (.sessionNote, \.sessionNote),
                (.finalAgreement, \.finalAgreement), (.evaluation, \.evaluation), (.disclosure, \.disclosure),
                (.caseHeader, \.caseHeader),
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
            case evaluation, disclosure
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

        public init() {}

        enum CodingKeys: String, CodingKey {
            case checkpointEvery = "checkpoint_every"
            case rotateMiB = "rotate_mib"
            case keepFiles = "keep_files"
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

    /// Parses TOML text. Errors name the key at fault; the text itself is never repeated.
    /// TOMLKit 0.6.0's parser (toml++) aborts the process on a table header whose first character is not
    /// a key's (`[~]`, `[[#]]`: an assertion in `parse_key`, found by `make fuzz`) instead of reporting a
    /// parse error. Such a header is refused here first, with its line, as is a header that ends its
    /// line without a key. A line of a multi-line string that looks like one is refused too: the
    /// configuration has no multi-line strings.
    static func refuseHeadersTOMLKitCannotParse(_ text: String) throws(CaseVaultError) {
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var rest = line.drop { $0 == " " || $0 == "\t" }
            guard rest.first == "[" else { continue }
            rest = rest.dropFirst(rest.hasPrefix("[[") ? 2 : 1).drop { $0 == " " || $0 == "\t" }
            // A header that ends its line here would go on on the next one (toml++ reads a newline there
            // as a space), so it is refused too.
            let first = rest.unicodeScalars.first ?? "\n"
            let bare =
                (first.isASCII && (first.properties.isAlphabetic || ("0"..."9").contains(first))) || first == "_"
                || first == "-"
            guard bare || first == "\"" || first == "'" || first == "]" else {
                throw CaseVaultError(
                    .invalidConfiguration,
                    "the configuration is not valid TOML (line \(number + 1)): a table header must begin with a key"
                )
            }
        }
    }

    public static func parse(_ text: String) throws(CaseVaultError) -> DaemonConfiguration {
        try Self.refuseHeadersTOMLKitCannotParse(text)
        let decoded: Document
        do {
            decoded = try TOMLDecoder(strictDecoding: true).decode(Document.self, from: text)
        } catch let error as UnexpectedKeysError {
            let keys = error.keys.keys.sorted().joined(separator: ", ")
            throw CaseVaultError(
                .invalidConfiguration, "unknown configuration key(s): \(keys); see Config/casevault.toml")
        } catch let error as TOMLParseError {
            throw CaseVaultError(
                .invalidConfiguration,
                "the configuration is not valid TOML (line \(error.source.begin.line), column \(error.source.begin.column))"
            )
        } catch let error as DecodingError {
            throw CaseVaultError(.invalidConfiguration, Self.describe(error))
        } catch {
            throw CaseVaultError(.invalidConfiguration, "the configuration could not be read: \(error)")
        }
        var configuration = DaemonConfiguration(
            store: decoded.store, server: decoded.server, roles: decoded.roles ?? [:], offices: decoded.offices ?? [:]
        )
        configuration.retention = decoded.retention ?? Retention()
        configuration.keys = decoded.keys ?? Keys()
        configuration.statistics = decoded.statistics ?? StatisticsSettings()
        configuration.audit = decoded.audit ?? AuditSettings()
        configuration.backup = decoded.backup ?? Backup()
        configuration.testing = decoded.testing ?? Testing()
        try configuration.validate()
        _ = try configuration.roleMap()
        _ = try configuration.retentionSchedule()
        _ = try configuration.serverConfiguration(relativeTo: URL(fileURLWithPath: "/"))
        return configuration
    }

    /// Reads and parses the file at `path`.
    public static func load(path: String) throws(CaseVaultError) -> DaemonConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CaseVaultError(.invalidConfiguration, "cannot read the configuration file \(path)")
        }
        return try Self.parse(String(decoding: data, as: UTF8.self))
    }

    func validate() throws(CaseVaultError) {
        guard !self.store.dataDirectory.isEmpty else {
            throw CaseVaultError(
                .invalidConfiguration, "store.data_directory must not be empty", field: "store.data_directory")
        }
        guard !self.store.rootKeyFile.isEmpty else {
            throw CaseVaultError(
                .invalidConfiguration, "store.root_key_file must not be empty", field: "store.root_key_file")
        }
        guard !self.server.socketPath.isEmpty else {
            throw CaseVaultError(
                .invalidConfiguration, "server.socket_path must not be empty", field: "server.socket_path")
        }
        guard (1...(64 << 20)).contains(self.server.maxBodyBytes) else {
            throw CaseVaultError(
                .invalidConfiguration,
                "server.max_body_bytes must be from 1 to 67108864",
                field: "server.max_body_bytes"
            )
        }
        try Self.check(self.server.maxAttachmentBytes, in: 1...(1 << 40), "server.max_attachment_bytes")
        try Self.check(self.server.maxJSONDepth.map(Int64.init), in: 2...256, "server.max_json_depth")
        try Self.check(self.server.maxHeaderBytes.map(Int64.init), in: 1024...(1 << 20), "server.max_header_bytes")
        try Self.check(self.server.readTimeoutSeconds.map(Int64.init), in: 1...3600, "server.read_timeout_seconds")
        try Self.check(self.server.maxConnections.map(Int64.init), in: 1...65536, "server.max_connections")
        try Self.check(
            self.server.maxConnectionsPerUser.map(Int64.init), in: 1...65536, "server.max_connections_per_user")
        try Self.check(self.retention.sweepBatch.map(Int64.init), in: 1...100_000, "retention.sweep_batch")
        try Self.check(self.statistics.k.map(Int64.init), in: 2...1000, "statistics.k")
        try Self.check(self.audit.checkpointEvery.map(Int64.init), in: 1...1_000_000, "audit.checkpoint_every")
        try Self.check(self.audit.rotateMiB.map(Int64.init), in: 0...65536, "audit.rotate_mib")
        try Self.check(self.audit.keepFiles.map(Int64.init), in: 0...100_000, "audit.keep_files")
        try Self.check(self.backup.retentionDays.map(Int64.init), in: 1...3650, "backup.retention_days")
        if let file = self.backup.keyFile, file.isEmpty {
            throw CaseVaultError(.invalidConfiguration, "backup.key_file must not be empty", field: "backup.key_file")
        }
        if let file = self.backup.ledgerFile, file.isEmpty {
            throw CaseVaultError(
                .invalidConfiguration, "backup.ledger_file must not be empty", field: "backup.ledger_file")
        }
        if let source = self.keys.source, !Keys.sources.contains(source) {
            throw CaseVaultError(
                .invalidConfiguration, "keys.source must be file, systemd-credential or passphrase",
                field: "keys.source")
        }
        // The floor is libsodium's interactive cost: below it a stolen key file yields to guessing.
        let floor = PasswordHash.Limits.floor
        try Self.check(
            self.keys.argon2Operations.map(Int64.init), in: Int64(floor.operations)...20, "keys.argon2_operations")
        try Self.check(
            self.keys.argon2MemoryMiB.map(Int64.init), in: Int64(floor.memoryBytes >> 20)...4096,
            "keys.argon2_memory_mib")
        if let name = self.keys.credential, name.isEmpty || name.contains("/") || name.hasPrefix(".") {
            throw CaseVaultError(
                .invalidConfiguration, "keys.credential must be a plain file name", field: "keys.credential")
        }
        for (category, office) in self.offices.sorted(by: { $0.key < $1.key }) {
            guard RecordValidator.disclosureCategories.contains(category) else {
                throw CaseVaultError(
                    .invalidConfiguration,
                    "offices has a key that is not a disclosure category; the categories are "
                        + RecordValidator.disclosureCategories.sorted().joined(separator: ", "),
                    field: "offices"
                )
            }
            guard Role.isOfficeName(office) else {
                throw CaseVaultError(
                    .invalidConfiguration,
                    "offices.\(category) must be an office name: lowercase letters, digits, - and _",
                    field: "offices.\(category)"
                )
            }
        }
        guard (1...(64 << 20)).contains(self.store.maxContentBytes) else {
            throw CaseVaultError(
                .invalidConfiguration,
                "store.max_content_bytes must be from 1 to 67108864",
                field: "store.max_content_bytes"
            )
        }
    }

    private static func check(_ value: Int64?, in range: ClosedRange<Int64>, _ key: String) throws(CaseVaultError) {
        guard let value else { return }
        guard range.contains(value) else {
            throw CaseVaultError(
                .invalidConfiguration, "\(key) must be from \(range.lowerBound) to \(range.upperBound)", field: key
            )
        }
    }

    /// The store's settings, with relative paths resolved against `base`.
    public func storeConfiguration(relativeTo base: URL) throws(CaseVaultError) -> StoreConfiguration {
        var configuration = StoreConfiguration(
            dataDirectory: URL(fileURLWithPath: self.store.dataDirectory, relativeTo: base).standardizedFileURL,
            rootKeyFile: URL(fileURLWithPath: self.store.rootKeyFile, relativeTo: base).standardizedFileURL,
            maxContentBytes: self.store.maxContentBytes
        )
        configuration.retention = try self.retentionSchedule()
        if self.keys.source == "systemd-credential" {
            configuration.keySource = .systemdCredential(
                name: self.keys.credential ?? Keys.defaultCredential,
                directory: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"]
            )
        }
        if self.keys.source == "passphrase" {
            configuration.keySource = .passphrase
        }
        configuration.sweepBatch = self.retention.sweepBatch ?? configuration.sweepBatch
        configuration.shredLedgerCopy = URL(fileURLWithPath: self.shredLedgerFile(relativeTo: base))
        if let file = self.testing.clockFile {
            configuration.clock = Self.fileClock(URL(fileURLWithPath: file, relativeTo: base).standardizedFileURL.path)
        }
        return configuration
    }

    /// Test-only: a clock that reads the time from a file (milliseconds since the Unix epoch), so that the
    /// tests of a running daemon move its time without sleeping. It stops the daemon rather than guess when
    /// the file is missing or malformed: a wrong time would dispose records early.
    static func fileClock(_ path: String) -> @Sendable () -> Int64 {
        { () -> Int64 in
            guard let data = FileManager.default.contents(atPath: path),
                let time = Int64(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            else {
                fatalError("testing.clock_file \(path) must hold milliseconds since the Unix epoch")
            }
            return time
        }
    }

    private struct Document: Decodable {
        var store: Store
        var server: Server
        var roles: [String: [String]]?
        var offices: [String: String]?
        var retention: Retention?
        var keys: Keys?
        var statistics: StatisticsSettings?
        var audit: AuditSettings?
        var backup: Backup?
        var testing: Testing?
    }

    /// The backup key file: `[backup] key_file`, or `backup.keys` beside the root key file.
    public func backupKeyFile(relativeTo base: URL) -> String {
        let rootKey = URL(fileURLWithPath: self.store.rootKeyFile, relativeTo: base).standardizedFileURL
        if let file = self.backup.keyFile {
            return URL(fileURLWithPath: file, relativeTo: base).standardizedFileURL.path
        }
        return rootKey.deletingLastPathComponent().appendingPathComponent("backup.keys").path
    }

    /// The shred ledger's copy: `[backup] ledger_file`, or `shred.ledger` beside the backup key file.
    public func shredLedgerFile(relativeTo base: URL) -> String {
        if let file = self.backup.ledgerFile {
            return URL(fileURLWithPath: file, relativeTo: base).standardizedFileURL.path
        }
        return URL(fileURLWithPath: self.backupKeyFile(relativeTo: base)).deletingLastPathComponent()
            .appendingPathComponent("shred.ledger").path
    }

    /// Argon2id's cost for a new wrapped root key (`[keys]`), libsodium's "moderate" by default.
    public func passphraseLimits() throws(CaseVaultError) -> PasswordHash.Limits {
        PasswordHash.Limits(
            operations: UInt64(self.keys.argon2Operations ?? Int(PasswordHash.Limits.moderate.operations)),
            memoryBytes: (self.keys.argon2MemoryMiB ?? (PasswordHash.Limits.moderate.memoryBytes >> 20)) << 20
        )
    }

    /// The retention schedule: the standard one with `[retention]`'s rules over it.
    public func retentionSchedule() throws(CaseVaultError) -> RetentionSchedule {
        try RetentionSchedule.standard(
            overriddenBy: self.retention.overrides, holdsKeepSessionNotes: self.retention.holdsKeepSessionNotes ?? false
        )
    }

    /// The `[roles]` table with every principal resolved to a uid or gid.
    public func roleMap() throws(CaseVaultError) -> RoleMap {
        try Principals.roleMap(self.roles)
    }

    /// The server's settings, with a relative socket path resolved against `base` and the socket group
    /// resolved to a gid.
    public func serverConfiguration(relativeTo base: URL) throws(CaseVaultError) -> ServerConfiguration {
        var group: UInt32?
        if let name = self.server.socketGroup {
            guard case .gid(let gid) = try Principals.resolve(name, role: "server.socket_group") else {
                throw CaseVaultError(
                    .invalidConfiguration, "server.socket_group must be gid:N or group:NAME",
                    field: "server.socket_group"
                )
            }
            group = gid
        }
        let defaults = ServerConfiguration(socketPath: "")
        return ServerConfiguration(
            socketPath: URL(fileURLWithPath: self.server.socketPath, relativeTo: base).standardizedFileURL.path,
            maxBodyBytes: self.server.maxBodyBytes,
            maxAttachmentBytes: self.server.maxAttachmentBytes ?? defaults.maxAttachmentBytes,
            maxJSONDepth: self.server.maxJSONDepth ?? defaults.maxJSONDepth,
            maxHeaderBytes: self.server.maxHeaderBytes ?? defaults.maxHeaderBytes,
            readTimeoutSeconds: self.server.readTimeoutSeconds ?? defaults.readTimeoutSeconds,
            maxConnections: self.server.maxConnections ?? defaults.maxConnections,
            maxConnectionsPerUser: self.server.maxConnectionsPerUser
                ?? ServerConfiguration.defaultConnectionsPerUser(self.server.maxConnections ?? defaults.maxConnections),
            offices: self.offices,
            socketGroup: group,
            statisticsK: self.statistics.k ?? defaults.statisticsK,
            backupKeyFile: self.backupKeyFile(relativeTo: base),
            backupRetentionDays: self.backup.retentionDays ?? 35
        )
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context, _ key: (any CodingKey)? = nil) -> String {
            // TOMLKit's path already ends with the missing key; others' do not.
            let names = context.codingPath.map(\.stringValue)
            let last = key.map(\.stringValue).flatMap { names.last == $0 ? nil : [$0] } ?? []
            return (names + last).joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "the configuration lacks \(path(context, key)); see Config/casevault.toml"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(path(context)) has the wrong type; see Config/casevault.toml"
        @unknown default:
            return "the configuration could not be decoded"
        }
    }
}

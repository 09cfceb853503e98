import CaseVaultConfiguration
import CaseVaultCore
import CaseVaultDaemon
import CaseVaultPostgres
import CaseVaultServer
import CaseVaultStore
import Foundation
import Testing

@Suite("Daemon configuration")
struct DaemonConfigurationTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test("the shipped Config/casevault.toml parses and equals the embedded default")
    func shippedConfigurationIsTheEmbeddedDefault() throws {
        let configuration = try DaemonConfiguration.load(
            path: Self.repository.appendingPathComponent("Config/casevault.toml").path)
        #expect(configuration == .embeddedDefault)
    }

    @Test("every record type's retention rule can be set in [retention], debriefs' among them")
    func everyTypeHasARetentionKey() throws {
        let store =
            "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n"
            + "[server]\nsocket_path = \"s.sock\"\nmax_body_bytes = 1000\n"
        let configuration = try DaemonConfiguration.parse(
            store + "[retention]\ndebrief = \"90 days after case_closed\"\nevaluation = \"1 year after filed\"")
        let schedule = try configuration.retentionSchedule()
        #expect(schedule.rules[.debrief] == RetentionRule(days: 90, after: .caseClosed))
        #expect(schedule.rules[.evaluation] == RetentionRule(years: 1, after: .filed))
        // The shipped file writes out every type's rule.
        let shipped = try String(
            contentsOf: Self.repository.appendingPathComponent("Config/casevault.toml"), encoding: .utf8)
        for type in RecordType.allCases {
            #expect(
                shipped.contains("\n\(type.rawValue) = \""), "Config/casevault.toml has no [retention] \(type.rawValue)"
            )
        }
    }

    @Test("unknown keys, missing keys, wrong types and bad values are refused with a message naming the key")
    func badConfigurationsAreRefused() {
        let server = "\n[server]\nsocket_path = \"s.sock\"\nmax_body_bytes = 1000\n"
        let cases: [(String, String)] = [
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\ndata_directroy = \"x\"",
                "data_directroy"
            ),
            ("[store]\ndata_directory = \"d\"\nmax_content_bytes = 10", "root_key_file"),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = \"big\"",
                "max_content_bytes"
            ),
            ("[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 0", "max_content_bytes"),
            ("[store]\ndata_directory = \"\"\nroot_key_file = \"k\"\nmax_content_bytes = 10", "data_directory"),
            ("[store\ndata_directory = 1", "line"),
            // Found by make fuzz: TOMLKit's parser aborted the process on these headers.
            ("[~]\ndata_directory = 1", "line 1"),
            ("[store]\ndata_directory = \"d\"\n  [[ #]]", "line 3"),
            ("[\ndata_directory = \"d\"\u{8}root\u{c}x = 1", "line 1"),
            // A missing key is named once, by its whole path.
            ("[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"", "lacks store.max_content_bytes;"),
            ("[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10", "server"),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[roles]\nkingpin = [\"self\"]",
                "roles.kingpin"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[roles]\ndirector = [\"uid:x\"]",
                "roles.director"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[roles]\ndirector = [\"user:no-such-user-here\"]",
                "roles.director"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[offices]\ngossip = \"title-ix\"",
                "disclosure category"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[offices]\ndiscrimination = \"Equity Office\"",
                "offices.discrimination"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[server]\nsocket_path = \"s\"\nmax_body_bytes = 10\nmax_json_depth = 1",
                "server.max_json_depth"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[server]\nsocket_path = \"s\"\nmax_body_bytes = 10\nmax_connections = 0",
                "server.max_connections"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[server]\nsocket_path = \"s\"\nmax_body_bytes = 10\nread_timeout_seconds = 0",
                "server.read_timeout_seconds"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[retention]\nintake_form = \"3 yrs after filed\"",
                "retention] intake_form"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[retention]\nrecording = \"1 day after filed\"",
                "recording"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[retention]\nsession_note = \"1 year after case_closed\"",
                "session_note"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[retention]\nsweep_batch = 0",
                "retention.sweep_batch"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[statistics]\nk = 1",
                "statistics.k"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[keys]\nsource = \"tpm\"",
                "keys.source"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[keys]\ncredential = \"../key\"",
                "keys.credential"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[keys]\nsource = \"passphrase\"\nargon2_operations = 0",
                "keys.argon2_operations"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[keys]\nargon2_memory_mib = 4",
                "keys.argon2_memory_mib"
            ),
            // Below libsodium's interactive cost (2 passes, 64 MiB) is refused.
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[keys]\nsource = \"passphrase\"\nargon2_operations = 1",
                "keys.argon2_operations"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[keys]\nargon2_memory_mib = 63",
                "keys.argon2_memory_mib"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[audit]\ncheckpoint_every = 0",
                "audit.checkpoint_every"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[audit]\nrotate_mib = -1",
                "audit.rotate_mib"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[audit]\nkeep_files = -2",
                "audit.keep_files"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[backup]\nretention_days = 0",
                "backup.retention_days"
            ),
            (
                "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n[audit]\nread_flush_ms = 0",
                "audit.read_flush_ms"
            ),
        ]
        for (text, mentioned) in cases {
            let text =
                text.hasPrefix("[store\n") || text.contains("[server]") || mentioned == "server" ? text : text + server
            do {
                _ = try DaemonConfiguration.parse(text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect(error.code == .invalidConfiguration)
                #expect(error.message.contains(mentioned), "\(error.message) should mention \(mentioned)")
            }
        }
    }

    @Test("a user or group the host does not have is refused by name, with how to create it")
    func unknownPrincipalsAreNamed() {
        let base =
            "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n"
            + "[server]\nsocket_path = \"s.sock\"\nmax_body_bytes = 1000\n"
        let cases: [(String, [String])] = [
            (
                "[roles]\nmediator = [\"group:casevault-no-such-group\"]",
                [
                    "roles.mediator", "group casevault-no-such-group", "groupadd --system casevault-no-such-group",
                    "'g casevault-no-such-group -'",
                ]
            ),
            (
                "[roles]\nsubmitter = [\"user:casevault-no-such-user\"]",
                [
                    "roles.submitter", "user casevault-no-such-user", "useradd casevault-no-such-user",
                    "'u casevault-no-such-user -'",
                ]
            ),
            // A name no host could have is not repeated: it would reach the journal and a suggested command.
            ("[roles]\nmediator = [\"group:x\\n<0>forged; rm -rf /\"]", ["roles.mediator", "not a valid group name"]),
        ]
        for (roles, mentioned) in cases {
            do {
                _ = try DaemonConfiguration.parse(base + roles)
                Issue.record("accepted: \(roles)")
            } catch {
                #expect(error.code == .invalidConfiguration)
                for phrase in mentioned {
                    #expect(error.message.contains(phrase), "\(error.message) should say \(phrase)")
                }
                #expect(!error.message.contains("\n") && !error.message.contains("forged"))
            }
        }
    }

    @Test("relative paths resolve against the start directory")
    func relativePaths() throws {
        let configuration = try DaemonConfiguration.parse(
            "[store]\ndata_directory = \"state/data\"\nroot_key_file = \"/etc/casevault/root.key\"\nmax_content_bytes = 100"
                + "\n[server]\nsocket_path = \"run/s.sock\"\nmax_body_bytes = 1000\n[roles]\ndirector = [\"uid:1000\", \"group:root\"]"
        )
        #expect(
            try configuration.serverConfiguration(relativeTo: URL(fileURLWithPath: "/srv/vault/", isDirectory: true))
                .socketPath
                == "/srv/vault/run/s.sock")
        let roles = try configuration.roleMap()
        #expect(roles.byUID[1000] == [.director])
        #expect(roles.byGID[0] == [.director])
        let store = try configuration.storeConfiguration(
            relativeTo: URL(fileURLWithPath: "/srv/vault/", isDirectory: true))
        #expect(store.dataDirectory.path == "/srv/vault/state/data")
        #expect(store.rootKeyFile.path == "/etc/casevault/root.key")
        #expect(store.maxContentBytes == 100)
    }

    /// A file with the settings every one needs, small limits.
    static let minimal =
        "[store]\ndata_directory = \"d\"\nroot_key_file = \"k\"\nmax_content_bytes = 10\n"
        + "[server]\nsocket_path = \"s.sock\"\nmax_body_bytes = 1000\n"

    @Test("a read's audit entry: made durable within read_flush_ms (5 by default), or waited for with durable_reads")
    func readAuditContract() throws {
        let base = Self.minimal
        let root = URL(fileURLWithPath: "/", isDirectory: true)
        let plain = try DaemonConfiguration.parse(base).serverConfiguration(relativeTo: root)
        #expect(plain.readAuditWindow == .milliseconds(5))
        let window = try DaemonConfiguration.parse(base + "[audit]\nread_flush_ms = 40").serverConfiguration(
            relativeTo: root)
        #expect(window.readAuditWindow == .milliseconds(40))
        let strict = try DaemonConfiguration.parse(base + "[audit]\ndurable_reads = true\nread_flush_ms = 40")
            .serverConfiguration(relativeTo: root)
        #expect(strict.readAuditWindow == nil)
    }

    @Test(
        "[storage] for PostgreSQL: its keys checked at load, never with the local backend; the daemon's name as given (none by default); casevaultd refuses it with a passphrase key source"
    )
    func storageForPostgreSQL() throws {
        let base = Self.minimal + "[storage]\n"
        let root = URL(fileURLWithPath: "/srv/vault/", isDirectory: true)
        let local = try DaemonConfiguration.parse(base)
        #expect(try local.databaseSettings(relativeTo: root) == nil)
        try local.refuseUnservedBackend()

        let database = try DaemonConfiguration.parse(
            base
                + "backend = \"postgresql\"\nconnection = \"postgresql://casevault@db1,db2:5433/vault\"\n"
                + "password_file = \"keys/db.password\"\nerase_window = \"2 days\"")
        let settings = try #require(try database.databaseSettings(relativeTo: root))
        #expect(settings.location.servers == [.tcp(host: "db1", port: 5432), .tcp(host: "db2", port: 5433)])
        #expect(settings.password == .file("/srv/vault/keys/db.password"))
        #expect(settings.eraseWindowSeconds == 2 * 86_400)
        #expect(settings.daemonName == nil)
        try database.refuseUnservedBackend()
        let named = try DaemonConfiguration.parse(
            base + "backend = \"postgresql\"\nconnection = \"postgresql://u@db/v\"\ndaemon_name = \"vault-2\"")
        #expect(try named.databaseSettings(relativeTo: root)?.daemonName?.rawValue == "vault-2")
        let byDefault = try DaemonConfiguration.parse(
            base + "backend = \"postgresql\"\nconnection = \"postgresql://u@/v?host=/run/postgresql\"\n"
                + "password_credential = \"casevault-db\"")
        #expect(try byDefault.databaseSettings(relativeTo: root)?.eraseWindowSeconds == 86_400)
        #expect(try byDefault.databaseSettings(relativeTo: root)?.password == .credential("casevault-db"))
        let sealed = try DaemonConfiguration.parse(
            Self.minimal + "[keys]\nsource = \"passphrase\"\n[storage]\nbackend = \"postgresql\"\n"
                + "connection = \"postgresql://u@db/v\"")
        let refused = #expect(throws: CaseVaultError.self) { try sealed.refuseUnservedBackend() }
        #expect(refused?.message.contains("not served with keys.source = \"passphrase\" yet") == true)

        let secret = "hunter2-\(UUID().uuidString)"
        let postgres = "backend = \"postgresql\"\nconnection = \"postgresql://u@db/v\"\n"
        let cases: [(String, String)] = [
            ("backend = \"oracle\"", "storage.backend"),
            ("connection = \"postgresql://u@db/v\"", "storage.connection applies only"),
            ("erase_window = \"24 hours\"", "storage.erase_window applies only"),
            ("backend = \"postgresql\"", "needs storage.connection"),
            ("backend = \"postgresql\"\nconnection = \"postgresql://u:\(secret)@db/v\"", "storage.connection"),
            ("backend = \"postgresql\"\nconnection = \"postgresql://u@db/v?password=\(secret)\"", "storage.connection"),
            ("backend = \"postgresql\"\nconnection = \"mysql://u@db/v\"", "postgresql://"),
            (postgres + "password_file = \"p\"\npassword_credential = \"c\"", "exclude each other"),
            (postgres + "password_credential = \"../c\"", "plain file name"),
            (postgres + "password_file = \"\"", "storage.password_file"),
            (postgres + "erase_window = \"30 minutes\"", "storage.erase_window"),
            (postgres + "erase_window = \"0 hours\"", "storage.erase_window"),
            ("daemon_name = \"vault-a\"", "storage.daemon_name applies only"),
            (postgres + "daemon_name = \"Vault A\"", "storage.daemon_name"),
            (postgres + "erase_window = \"31 days\"", "storage.erase_window"),
            (postgres + "erase_window = \"-9223372036854775807 days\"", "storage.erase_window"),
            (postgres + "erase_window = \"24h\"", "storage.erase_window"),
            (postgres + "erase_window = 24", "storage.erase_window"),
            (postgres + "pasword_file = \"p\"", "pasword_file"),
        ]
        for (text, mentioned) in cases {
            do {
                _ = try DaemonConfiguration.parse(base + text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect(error.code == .invalidConfiguration)
                #expect(error.message.contains(mentioned), "\(error.message) should mention \(mentioned)")
                #expect(!error.message.contains(secret), "the password is never repeated: \(error.message)")
            }
        }
    }
}

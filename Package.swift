// swift-tools-version:6.2
import PackageDescription

// MemberImportVisibility is left off on purpose: on Linux, Glibc's structs (`stat`, `timespec`) are also
// reachable through Dispatch's C module, and which module a clean build credits them to varies, so the
// feature failed clean builds at random (seen in CI clones) while incremental builds passed.
// Every warning of the project's own code is an error: the build has none, and keeps none.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "casevault",
    products: [
        .executable(name: "casevaultd", targets: ["casevaultd"]),
        .executable(name: "casevaultctl", targets: ["casevaultctl"]),
        .library(name: "CaseVaultClient", targets: ["CaseVaultClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: ["FullFoundation"]),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        // Layer 1: libsodium and the only Swift code that calls it.
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"])]
        ),
        .target(
            name: "CaseVaultCrypto",
            dependencies: ["CSodium"],
            swiftSettings: swiftSettings
        ),
        // Layer 2: record types, validation, typed errors. No I/O.
        .target(
            name: "CaseVaultCore",
            dependencies: ["CaseVaultCrypto"],
            swiftSettings: swiftSettings
        ),
        // Layer 3: the file layer under the store and the audit log alike: POSIX files with exact errno
        // handling, private directories, and the protocols by which the audit log anchors in the store and
        // rides its flushes without importing it.
        .target(
            name: "CaseVaultFiles",
            dependencies: ["CaseVaultCore", "CCaseVaultShims"],
            swiftSettings: swiftSettings
        ),
        // Layer 4: the sealing layer: every key the vault holds is derived, wrapped, unwrapped and used here
        // (the barrier; the root key's sources; data, attachment and backup stream keys; the certificate and
        // audit signing keys). The layers above hold keys only as values whose bytes they cannot read.
        .target(
            name: "CaseVaultSealing",
            dependencies: [
                "CaseVaultCrypto", "CaseVaultCore", "CaseVaultFiles", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Layer 5: the store over the sealing layer: key slots, segments of sealed content, the SQLite index, shredding,
        // recovery.
        .target(
            name: "CaseVaultStore",
            dependencies: [
                "CaseVaultSealing",
                "CaseVaultCrypto",
                "CaseVaultCore",
                "CaseVaultFiles",
                "CCaseVaultShims",
                "CCaseVaultSQLite",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Layer 5, beside the store: the hash-chained audit log, its signed checkpoints and its verifier.
        .target(
            name: "CaseVaultAudit",
            dependencies: ["CaseVaultFiles", "CaseVaultCore", "CaseVaultCrypto"],
            swiftSettings: swiftSettings
        ),
        // Layer 5, beside the store: the PostgreSQL side of a vault that outlives one host: where the database
        // is (a list of servers tried in turn for the writable primary, TLS or a local socket, the password
        // from a file), its schema, doctor's checks of the server, and the erase epochs' exchange between
        // daemons. Sees no plaintext; keys stay the sealing layer's opaque values.
        .target(
            name: "CaseVaultPostgres",
            dependencies: [
                "CaseVaultSealing",
                "CaseVaultCore",
                "CaseVaultCrypto",
                "CaseVaultFiles",
                // SO_PEERCRED's layout: who holds a local server's socket, before the password goes to it.
                "CCaseVaultShims",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                // Only to ask whether a blocking call was made on an event loop (`PostgresStorage.wait`).
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // C declarations Swift's Glibc module lacks (prctl and ioctl are variadic; ucred needs _GNU_SOURCE;
        // sd_notify's abstract socket addresses).
        .target(name: "CCaseVaultShims"),
        // The one SQLite call GRDB does not offer (sqlite3_db_config is variadic): the index's writer keeps
        // SQLite from checkpointing at close once the disk refused a write of it (`Index.Loss`).
        .target(
            name: "CCaseVaultSQLite",
            dependencies: [.product(name: "GRDBSQLite", package: "GRDB.swift")],
            linkerSettings: [.linkedLibrary("sqlite3")]
        ),
        // Layer 6: the configuration file and the deployment it describes: every setting with its default and
        // limits, the values each layer above is built from (the server's among them), principals resolved
        // to ids, and doctor's checks of keys, directories, swap and core dumps.
        .target(
            name: "CaseVaultConfiguration",
            dependencies: [
                "CaseVaultStore",
                "CaseVaultPostgres",
                "CaseVaultAudit",
                "CaseVaultFiles",
                "CaseVaultCore",
                "CaseVaultCrypto",
                "CCaseVaultShims",
                .product(name: "TOMLKit", package: "TOMLKit"),
                // doctor's checks of the database connect, and log what they connect to.
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // What the daemon and its clients share on the wire: NIO buffers in locked memory, for the requests
        // and answers that carry a secret.
        .target(
            name: "CaseVaultWire",
            dependencies: ["CaseVaultCrypto", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        // Layer 7: HTTP/1.1 + JSON on the Unix socket: peer credentials, roles, routes, problem+json.
        .target(
            name: "CaseVaultServer",
            dependencies: [
                "CaseVaultSealing",
                "CaseVaultStore",
                "CaseVaultAudit",
                "CaseVaultConfiguration",
                "CaseVaultWire",
                "CaseVaultCore",
                "CCaseVaultShims",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        // Layer 8: the daemon as a library (key hygiene, systemd, lifecycle), and its thin executable.
        .target(
            name: "CaseVaultDaemon",
            dependencies: [
                "CaseVaultServer",
                "CaseVaultConfiguration",
                "CaseVaultAudit",
                "CaseVaultFiles",
                "CaseVaultCrypto",
                "CaseVaultSealing",
                "CaseVaultStore",
                "CaseVaultPostgres",
                "CaseVaultCore",
                "CCaseVaultShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // A client of the daemon for Swift programs (a library product): requests over the socket, and the
        // requests that carry a secret, sent only to a peer the kernel names as the daemon.
        .target(
            name: "CaseVaultClient",
            dependencies: [
                "CaseVaultWire",
                "CaseVaultCrypto",
                "CCaseVaultShims",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Renders man pages from the commands' argument definitions (make install).
        .executableTarget(
            name: "casevault-manual",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "casevaultd",
            dependencies: [
                "CaseVaultDaemon",
                "CaseVaultConfiguration",
                "CaseVaultCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The operator's CLI: a shell over the client library, and for the offline commands (doctor, restore,
        // audit verify, the ledger's copy) the configuration and the layers they read. It never links the
        // server or the daemon.
        .executableTarget(
            name: "casevaultctl",
            dependencies: [
                "CaseVaultSealing",
                "CaseVaultClient",
                "CaseVaultConfiguration",
                "CaseVaultAudit",
                "CaseVaultFiles",
                "CaseVaultStore",
                "CaseVaultCrypto",
                "CaseVaultCore",
                "CCaseVaultShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Bench helper: an HTTP/1.1 load generator for Unix sockets, run against casevaultd and nginx alike.
        .executableTarget(
            name: "casevault-load",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings
        ),
        // Bench helper: Hummingbird alone on a Unix socket, serving a constant 4 KiB body (the socket figures'
        // framework floor).
        .executableTarget(
            name: "casevault-floor",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // Test helper: a writer process that tests kill with SIGKILL.
        .executableTarget(
            name: "casevault-torture",
            dependencies: [
                "CaseVaultStore",
                "CaseVaultCore",
                "CCaseVaultShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // `make bench`: prints figures; never run as a test.
        .executableTarget(
            name: "casevault-bench",
            dependencies: [
                "CaseVaultStore",
                "CaseVaultAudit",
                "CaseVaultConfiguration",
                "CaseVaultCore",
                "CaseVaultCrypto",
                "CaseVaultFiles",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // `make fuzz`: one libFuzzer target per parser that meets bytes from outside (request bodies, key slots
        // and sealed records, attachments, backups, the shred ledger's copy, the audit log, recovery shares,
        // the configuration, certificates), fed through each parser's real entry point; their seed corpus
        // (Tests/fuzz-corpus) is replayed by `make test`.
        .target(
            name: "CaseVaultFuzz",
            dependencies: [
                "CaseVaultSealing",
                "CaseVaultDaemon",
                "CaseVaultConfiguration",
                "CaseVaultServer",
                "CaseVaultAudit",
                "CaseVaultFiles",
                "CaseVaultStore",
                "CaseVaultCore",
                "CaseVaultCrypto",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The fuzzing executable (scripts/fuzz.sh builds it with --sanitize=fuzzer --sanitize=address).
        .executableTarget(
            name: "casevault-fuzz",
            dependencies: ["CaseVaultFuzz"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CaseVaultCryptoTests",
            dependencies: ["CaseVaultCrypto"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CaseVaultCoreTests",
            dependencies: ["CaseVaultCore", "CaseVaultCrypto"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CaseVaultFuzzTests",
            dependencies: ["CaseVaultFuzz", "CaseVaultCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CaseVaultDaemonTests",
            dependencies: [
                "CaseVaultDaemon", "CaseVaultConfiguration", "CaseVaultCore", "CaseVaultStore", "CaseVaultServer",
                "CaseVaultPostgres",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CaseVaultServerTests",
            dependencies: [
                "casevaultd", "casevaultctl", "casevault-torture", "CaseVaultCore", "CaseVaultServer", "CaseVaultAudit",
                "CaseVaultDaemon",
                "CaseVaultConfiguration",
                "CaseVaultStore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CaseVaultStoreTests",
            dependencies: [
                "CaseVaultStore",
                "CaseVaultAudit",
                "CaseVaultFiles",
                "CaseVaultCore",
                "CaseVaultCrypto",
                "casevault-torture",
                "casevaultd",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CaseVaultPostgresTests",
            dependencies: [
                "casevaultctl",
                "casevaultd",
                "CaseVaultClient",
                "CaseVaultPostgres",
                "CaseVaultStore",
                "CaseVaultAudit",
                "CaseVaultSealing",
                "CaseVaultCrypto",
                "CaseVaultCore",
                "CCaseVaultShims",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)

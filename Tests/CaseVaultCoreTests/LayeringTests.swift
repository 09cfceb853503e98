import Foundation
import Testing

/// The import graph of `Sources/`, read from the files: layers point one way (crypto ← core ← files ←
/// sealing ← store, PostgreSQL and audit, side by side ← configuration ← server ← daemon ← executables; the client beside the
/// server, on the wire they share), libsodium is called from the crypto
/// target alone, and SQLite is reached from the store's index alone.
@Suite("The layers of Sources/")
struct LayeringTests {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources")

    /// What each of the project's own modules may import, of the project's modules, libsodium and SQLite.
    static let allowed: [String: Set<String>] = [
        "CaseVaultCrypto": ["CSodium"],
        "CaseVaultCore": ["CaseVaultCrypto"],
        "CaseVaultFiles": ["CaseVaultCore", "CCaseVaultShims"],
        "CaseVaultSealing": ["CaseVaultCrypto", "CaseVaultCore", "CaseVaultFiles"],
        "CaseVaultStore": [
            "CaseVaultCrypto", "CaseVaultCore", "CaseVaultFiles", "CaseVaultSealing", "CCaseVaultShims", "GRDB",
            "CCaseVaultSQLite",
        ],
        "CaseVaultAudit": ["CaseVaultCrypto", "CaseVaultCore", "CaseVaultFiles"],
        // Beside the store: where the PostgreSQL database is, its schema, what doctor checks of it, and the
        // erase epochs' exchange between daemons (keys stay opaque values of the sealing layer).
        "CaseVaultPostgres": [
            "CaseVaultCrypto", "CaseVaultCore", "CaseVaultFiles", "CaseVaultSealing", "CCaseVaultShims",
        ],
        "CaseVaultConfiguration": [
            "CaseVaultCrypto", "CaseVaultCore", "CaseVaultFiles", "CaseVaultSealing", "CaseVaultStore",
            "CaseVaultPostgres", "CaseVaultAudit", "CCaseVaultShims",
        ],
        "CaseVaultWire": ["CaseVaultCrypto"],
        "CaseVaultServer": [
            "CaseVaultCrypto", "CaseVaultCore", "CaseVaultFiles", "CaseVaultSealing", "CaseVaultStore",
            "CaseVaultAudit",
            "CaseVaultConfiguration", "CaseVaultWire", "CCaseVaultShims",
        ],
        // The daemon picks the storage: the local store, or the database with its erase epochs' schedule.
        "CaseVaultDaemon": [
            "CaseVaultCrypto", "CaseVaultCore", "CaseVaultFiles", "CaseVaultSealing", "CaseVaultStore",
            "CaseVaultPostgres", "CaseVaultAudit",
            "CaseVaultConfiguration", "CaseVaultServer", "CCaseVaultShims",
        ],
        "casevaultd": ["CaseVaultCore", "CaseVaultConfiguration", "CaseVaultDaemon"],
        // The client sits beside the server, on the wire they share, and sees nothing of the vault's insides.
        "CaseVaultClient": ["CaseVaultCrypto", "CaseVaultWire", "CCaseVaultShims"],
        // The CLI: the client, and for its offline commands the configuration and the layers they read;
        // never the server or the daemon. (The shims tell it whether its editor's directory is on tmpfs.)
        "casevaultctl": [
            "CaseVaultCrypto", "CaseVaultCore", "CaseVaultFiles", "CaseVaultStore", "CaseVaultSealing",
            "CaseVaultAudit", "CaseVaultConfiguration", "CaseVaultClient", "CCaseVaultShims",
        ],
    ]

    /// Tools and test support, above every layer: they may import what they need, except libsodium and
    /// SQLite (below).
    static let tools: Set<String> = [
        "CSodium", "CCaseVaultShims", "CCaseVaultSQLite", "CaseVaultFuzz", "casevault-fuzz", "casevault-bench",
        "casevault-load", "casevault-floor", "casevault-manual",
        "casevault-torture",
    ]

    /// The modules a file imports, of those the rules speak of.
    static func imports(_ path: URL) throws -> Set<String> {
        let text = try String(contentsOf: path, encoding: .utf8)
        var modules = Set<String>()
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ").map(String.init)
            guard let index = words.firstIndex(of: "import"), index + 1 < words.count,
                words[..<index].allSatisfy({
                    ["public", "internal", "package", "private", "fileprivate", "@testable", "@preconcurrency"]
                        .contains($0)
                })
            else { continue }
            let module = words[index + 1]
            if module.hasPrefix("CaseVault") || module.hasPrefix("CCaseVault") || module == "CSodium"
                || module == "GRDB"
            {
                modules.insert(module)
            }
        }
        return modules
    }

    @Test("no module imports a layer above it or beside it: the audit log does not import the store")
    func importsPointDown() throws {
        let manager = FileManager.default
        let folders = Set(try manager.contentsOfDirectory(atPath: Self.sources.path))
        #expect(folders == Set(Self.allowed.keys).union(Self.tools), "every folder of Sources/ has its rule")
        var checked = 0
        for (module, allowed) in Self.allowed {
            let directory = Self.sources.appendingPathComponent(module)
            let files = try #require(manager.enumerator(atPath: directory.path)).compactMap { $0 as? String }.filter {
                $0.hasSuffix(".swift")
            }
            #expect(!files.isEmpty, "no sources for \(module)")
            for file in files {
                let upward = try Self.imports(directory.appendingPathComponent(file)).subtracting(allowed)
                #expect(upward.isEmpty, "\(module)/\(file) imports \(upward.sorted())")
                checked += 1
            }
        }
        #expect(checked > 100)
    }

    @Test(
        "libsodium is imported by the crypto target alone, and SQLite by the store's index alone (and the bench's ceiling)"
    )
    func sodiumAndSQLiteStayInTheirLayers() throws {
        let manager = FileManager.default
        let files = try #require(manager.enumerator(atPath: Self.sources.path)).compactMap { $0 as? String }.filter {
            $0.hasSuffix(".swift")
        }
        for file in files {
            let modules = try Self.imports(Self.sources.appendingPathComponent(file))
            if modules.contains("CSodium") { #expect(file.hasPrefix("CaseVaultCrypto/"), "\(file) imports CSodium") }
            // SQL is the index's: the store's other files call its named queries and never write SQL.
            if modules.contains("GRDB") || modules.contains("CCaseVaultSQLite") {
                #expect(
                    file.hasPrefix("CaseVaultStore/Index/") || file.hasPrefix("casevault-bench/"),
                    "\(file) imports GRDB")
            }
        }
    }

    /// The calls that take a secret key: encryption and decryption, key derivation, signing (not verifying),
    /// passphrase hashing, splitting and combining the root key, keyed hashes.
    static let keyUses = [
        "AEAD.", "SecretStream.", "KeyDerivation.", "SigningKey(", "PasswordHash.deriveKey", "SecretSharing.split",
        "SecretSharing.combine", "blake2b(", "SealedBox.",
    ]

    @Test("every key is used in the sealing layer: no layer above it encrypts, decrypts, derives or signs")
    func keysStayInTheSealingLayer() throws {
        let manager = FileManager.default
        let files = try #require(manager.enumerator(atPath: Self.sources.path)).compactMap { $0 as? String }.filter {
            $0.hasSuffix(".swift")
        }
        var found: [String] = []
        for file in files {
            let module = String(file.prefix { $0 != "/" })
            guard module != "CaseVaultCrypto", module != "CaseVaultSealing", !Self.tools.contains(module) else {
                continue
            }
            let text = try String(contentsOf: Self.sources.appendingPathComponent(file), encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.trimmingCharacters(in: .whitespaces)
                guard !code.hasPrefix("//") else { continue }
                for use in Self.keyUses where code.contains(use) {
                    // An unkeyed BLAKE2b (a checksum) takes no key.
                    if use == "blake2b(", !code.contains("key:") { continue }
                    found.append("\(file):\(number + 1): \(use)")
                }
            }
        }
        #expect(found.isEmpty, "keys used outside the sealing layer: \(found)")
        #expect(files.contains { $0.hasPrefix("CaseVaultSealing/") })
    }
}

extension LayeringTests {
    /// What only the sealing layer may do with content: parse, validate, seal or open it, or unwrap the key
    /// that opens it. The storage implementation sees ciphertext and ids (docs/ARCHITECTURE.md).
    static let plaintextUses = [
        "NewRecord", ".content)", ".content.", ".content ", "JSONValue", "RecordValidator", "open(blob:", ".unwrap(",
        "dataKey(", "AttachmentSealer", "AttachmentOpener", "AttachmentUpload", "AttachmentDownload",
        "sealHoldReason(", "openHoldReason(", "sealStatisticsFacts(", "openStatisticsFacts(", "FuzzOpener",
    ]

    @Test("the storage sees no plaintext: it never parses, validates, seals or opens content")
    func storageSeesNoPlaintext() throws {
        let root = Self.sources.appendingPathComponent("CaseVaultStore")
        let files = try #require(FileManager.default.enumerator(atPath: root.path)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") }
        var found: [String] = []
        for file in files {
            let text = try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.trimmingCharacters(in: .whitespaces)
                guard !code.hasPrefix("//") else { continue }
                for use in Self.plaintextUses where code.contains(use) {
                    found.append("CaseVaultStore/\(file):\(number + 1): \(use)")
                }
            }
        }
        #expect(found.isEmpty, "plaintext handled in the storage: \(found)")
        #expect(files.contains("RecordStore.swift"))
    }

    @Test("only the fuzz targets open records through the fuzz targets' opener")
    func fuzzOpenerStaysWithTheFuzzTargets() throws {
        let files = try #require(FileManager.default.enumerator(atPath: Self.sources.path)).compactMap {
            $0 as? String
        }.filter { $0.hasSuffix(".swift") }
        var found: [String] = []
        for file in files where !file.hasPrefix("CaseVaultFuzz/") && !file.hasPrefix("CaseVaultSealing/") {
            let text = try String(contentsOf: Self.sources.appendingPathComponent(file), encoding: .utf8)
            if text.contains("FuzzOpener") { found.append(file) }
        }
        #expect(found.isEmpty, "the fuzz opener used outside the fuzz targets: \(found)")
        #expect(files.contains("CaseVaultFuzz/Targets+Store.swift"))
    }
}

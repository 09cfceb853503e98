internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import CaseVaultSealing
internal import CaseVaultStore
internal import Foundation
internal import Logging

#if canImport(Glibc)
internal import Glibc
#endif

/// What the targets share, made once per process: fixed test keys, and a private temporary directory
/// (`mkdtemp`, 0700, under `$TMPDIR`) where each target that reads a file finds its one file, rewritten
/// for every input. The directory is removed when the process exits normally; a crash leaves it
/// (`scripts/fuzz.sh` points `$TMPDIR` into `.build-fuzz/tmp` and empties it).
///
/// The keys are fixed, and never a vault's: the seed corpus (`Tests/fuzz-corpus`) holds inputs that
/// authenticate under them (a backup, an audit log, a certificate, a key slot), so that both the fuzzer
/// and the corpus replay in `make test` reach the code behind each check. Every other key is derived from
/// the root key by the sealing layer (`SealingServices`, `FuzzOpener`), as the daemon derives them.
final class FuzzEnvironment: Sendable {
    static let shared = FuzzEnvironment()

    /// The test root key: the bytes 1 to 32.
    static let rootKeyBytes: [UInt8] = Array(1...32)
    /// The data key of the record the `attachment` target opens, and the one `sealed-record` opens a blob
    /// with when its key slot does not open: the bytes 0xa0 to 0xbf.
    static let dataKeyBytes: [UInt8] = (0..<32).map { UInt8(0xa0 + $0) }
    /// The one backup the test backup key file knows: its id (0xb0 to 0xbf), its time and its key (0x60 to
    /// 0x7f).
    static let backupID: [UInt8] = (0..<16).map { UInt8(0xb0 + $0) }
    static let backupCreatedAt: Int64 = 1_767_225_600_000
    static let backupKeyBytes: [UInt8] = (0..<32).map { UInt8(0x60 + $0) }
    /// The record `sealed-record` and `attachment` open: id 0x11…, case 0x22…, an intake form, in slot 7.
    static let record = RecordMetadata(
        id: RecordID(bytes: [UInt8](repeating: 0x11, count: 16)),
        caseID: CaseID(bytes: [UInt8](repeating: 0x22, count: 16)),
        type: .intakeForm,
        createdAt: 0,
        author: nil,
        supersedes: nil,
        sealedSize: 0
    )
    static let slot: Int64 = 7

    /// The private directory (absolute).
    let directory: String
    /// The sealing services over the test root key: the ledger's MACs, the audit and certificate keys.
    let sealing: SealingServices
    /// Opens slots, blobs and attachments under the test root key and data key.
    let opener: FuzzOpener
    let certificatePublicKey: [UInt8]
    let auditSigner: AuditSigner
    /// Drops everything: a restore that succeeds logs, and nothing a target does is printed.
    let logger: Logger

    private init() {
        let directory = Self.makePrivateDirectory()
        self.directory = directory
        do {
            self.sealing = try SealingServices(rootKey: RootKey(secret: Self.secure(Self.rootKeyBytes)))
            self.opener = try FuzzOpener(rootKeyBytes: Self.rootKeyBytes, dataKeyBytes: Self.dataKeyBytes)
        } catch {
            fatalError("casevault-fuzz: the sealing services could not be made from the test root key")
        }
        self.certificatePublicKey = self.sealing.certificatePublicKey
        self.auditSigner = self.sealing.auditSigner
        self.logger = Logger(label: "casevault.fuzz", factory: { _ in SwiftLogNoOpLogHandler() })

        for name in ["keys", "audit-tail", "audit-open"] {
            guard mkdir(directory + "/" + name, 0o700) == 0 || errno == EEXIST else {
                fatalError("casevault-fuzz: cannot make a directory in \(directory)")
            }
        }
        // The root key file a restore reads (the `file` key source), and the backup key file with the one
        // test backup's key sealed in it, written by the store's own code.
        Self.replace(directory + "/keys/root.key", with: Self.rootKeyBytes)
        do {
            try BackupKeyFile(path: directory + "/keys/backup.keys").add(
                id: Self.backupID, createdAt: Self.backupCreatedAt,
                key: BackupKey(secret: Self.secure(Self.backupKeyBytes)),
                sealing: self.sealing
            )
        } catch {
            fatalError("casevault-fuzz: the test backup key file could not be written in \(directory)")
        }
        _ = atexit { FuzzEnvironment.removeDirectory() }
    }

    /// `name` in the private directory.
    func path(_ name: String) -> String {
        self.directory + "/" + name
    }

    var rootKeyPath: String { self.path("keys/root.key") }
    var backupKeysPath: String { self.path("keys/backup.keys") }

    /// Makes `path` a 0600 file holding exactly `bytes`.
    static func replace(_ path: String, with bytes: [UInt8]) {
        do {
            let file = try PosixFile(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
            try file.write(bytes, at: 0)
        } catch {
            fatalError("casevault-fuzz: cannot write its input file \(path)")
        }
    }

    /// Removes `path` and everything under it, if it is there.
    static func remove(_ path: String) {
        if DataDirectory.exists(path) {
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    /// `bytes` in secure memory.
    static func secure(_ bytes: [UInt8]) -> SecureBytes {
        do {
            return try SecureBytes(copying: bytes)
        } catch {
            fatalError("casevault-fuzz: no secure memory for a test key")
        }
    }

    /// A new directory `casevault-fuzz-XXXXXX` (0700) under `$TMPDIR`, or `/tmp`.
    private static func makePrivateDirectory() -> String {
        var base = ProcessInfo.processInfo.environment["TMPDIR"] ?? ""
        if base.isEmpty { base = "/tmp" }
        while base.count > 1, base.hasSuffix("/") { base.removeLast() }
        if !base.hasPrefix("/") { base = FileManager.default.currentDirectoryPath + "/" + base }
        var template = Array((base + "/casevault-fuzz-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer in mkdtemp(buffer.baseAddress!) != nil }
        guard made else {
            fatalError("casevault-fuzz: cannot make a private directory under \(base)")
        }
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// At exit: the private directory goes.
    private static func removeDirectory() {
        try? FileManager.default.removeItem(atPath: Self.shared.directory)
    }
}

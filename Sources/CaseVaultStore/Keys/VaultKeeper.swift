package import CaseVaultCore
package import CaseVaultCrypto
internal import CaseVaultFiles
package import CaseVaultSealing
internal import Foundation
package import Logging
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// Custody of the root key (docs/SECURITY.md): whether the store is open (unsealed) or not, and the only way
/// from a passphrase or recovery shares to an open store. With the `file` or `systemd-credential` source
/// the store is opened at start and stays open; with `passphrase` the daemon starts sealed and an
/// operator's `init` or `unseal` opens it, and `seal` closes it and zeroes its keys.
///
/// Refused attempts are slowed: after the n-th refusal in a row, the next attempt is accepted only
/// 2^(n−1) seconds later (at most `maximumDelay`), on top of Argon2id's own cost. One attempt runs at a
/// time. The count and the time of the next attempt are kept beside the wrapped key (`<key>.throttle`),
/// so that a restart does not reset them.
package final class VaultKeeper<Storage: ServedStorage>: Sendable {
    package static var maximumDelay: Double { 300 }

    private struct State {
        /// The open store under its sealing layer; `nil` while sealed.
        var vault: Vault<Storage>?
        var store: Storage? {
            get { self.vault?.storage }
            set { self.vault = newValue.map { Vault(storage: $0) } }
        }
        /// Attempts, refusals and shares (`UnsealGate`).
        var gate = UnsealGate()
        /// A store this keeper closed (at seal, or one that failed to open or to be admitted) had lost commits
        /// of its index.
        var closedLost = false
    }

    package enum Source: Sendable, Equatable {
        /// The key came from a file or credential at start; the store cannot be sealed.
        case fixed
        /// The root key is wrapped under a passphrase at this path.
        case passphrase(wrappedKey: String, limits: PasswordHash.Limits)
    }

    /// What an unseal step achieved.
    package enum Progress: Sendable {
        case unsealed(Storage)
        /// Shares received and the number needed.
        case collecting(received: Int, threshold: Int)
    }

    package let source: Source
    /// Opens the storage under a root key (init, unseal); never called for a fixed source.
    private let opener: @Sendable (RootKey) throws(CaseVaultError) -> Storage
    private let clock: @Sendable () -> Int64
    private let logger: Logger
    private let state: Mutex<State>
    /// What must accept a store this keeper opens before anyone else gets it (the audit log, which checks
    /// itself against the store's anchor and takes the store's keys): `admit(with:)`.
    private let admission = Mutex<(@Sendable (Storage) throws -> Void)?>(nil)

    private init(
        source: Source, state: State, logger: Logger, clock: @escaping @Sendable () -> Int64,
        opener: @escaping @Sendable (RootKey) throws(CaseVaultError) -> Storage
    ) {
        self.source = source
        self.opener = opener
        self.clock = clock
        self.logger = logger
        self.state = Mutex(state)
    }

    /// A keeper for a storage opened at start (file or credential source).
    package convenience init(unsealed store: Storage, logger: Logger) {
        self.init(
            source: .fixed, state: State(vault: Vault(storage: store)), logger: logger, clock: { store.now() },
            opener: { _ throws(CaseVaultError) in
                throw CaseVaultError(.wrongKeySource, "this daemon's root key comes from a file or credential")
            })
    }

    /// The open store; `sealed` (503) while sealed.
    package func store() throws(CaseVaultError) -> Storage {
        guard let store = self.state.withLock({ $0.store }) else {
            throw CaseVaultError(.sealed, "the vault is sealed: an operator must unseal it first (casevaultctl unseal)")
        }
        return store
    }

    /// The open store's sealing layer, where content is sealed and opened; `sealed` (503) while sealed.
    package func vault() throws(CaseVaultError) -> Vault<Storage> {
        guard let vault = self.state.withLock({ $0.vault }) else {
            throw CaseVaultError(.sealed, "the vault is sealed: an operator must unseal it first (casevaultctl unseal)")
        }
        return vault
    }

    package var isSealed: Bool {
        self.state.withLock { $0.vault == nil }
    }

    /// Whether a wrapped root key exists (always true for a fixed source).
    package var isInitialised: Bool {
        guard case .passphrase(let path, _) = self.source else { return true }
        return WrappedRootKey.exists(path: path)
    }

    /// Shares received towards an unseal, and how many are needed; `nil` when none were given.
    package var shareProgress: (received: Int, threshold: Int)? {
        self.state.withLock { state in
            state.gate.shares.first.map { (state.gate.shares.count, Int($0.threshold)) }
        }
    }

    // MARK: Init, unseal, seal

    /// Has `check` run on every store this keeper opens from now on, before the store is handed to anyone:
    /// if it throws, the store is closed and its keys zeroed, and the vault stays sealed.
    package func admit(with check: @escaping @Sendable (Storage) throws -> Void) {
        self.admission.withLock { $0 = check }
    }

    private func admitted(_ store: Storage) throws(CaseVaultError) {
        guard let check = self.admission.withLock({ $0 }) else { return }
        do {
            try check(store)
        } catch {
            store.close()
            store.wipeKeys()
            if store.indexLost { self.state.withLock { $0.closedLost = true } }
            throw (error as? CaseVaultError)
                ?? CaseVaultError(.storageFailure, "the store could not be admitted: \(error)")
        }
    }

    /// Makes the root key, wraps it under `passphrase`, splits it into `shares` recovery shares of which
    /// `threshold` recover it (none when `shares` is 0), and opens the store. The shares are returned once,
    /// as text in locked memory, and kept nowhere.
    package func initialise(passphrase: some CryptoBytes, shares: Int, threshold: Int) throws(CaseVaultError) -> (
        Storage, [SecureBytes]
    ) {
        guard case .passphrase(let path, let limits) = self.source else {
            throw CaseVaultError(
                .wrongKeySource,
                "init needs keys.source = \"passphrase\"; this daemon's root key comes from a file or credential")
        }
        if shares != 0 {
            guard (2...255).contains(shares), (2...shares).contains(threshold) else {
                throw CaseVaultError(
                    .invalidField, "shares must be 2 to 255 and threshold 2 to shares (or shares 0 for none)",
                    field: "threshold")
            }
        }
        try self.beginAttempt()
        defer { self.endAttempt() }
        guard self.isSealed else {
            throw CaseVaultError(.alreadyInitialised, "the vault is already initialised and unsealed")
        }
        // Leaves no key behind when it fails.
        let root = try WrappedRootKey.create(path: path, passphrase: passphrase, limits: limits)
        let encoded: [SecureBytes]
        let store: Storage
        do {
            encoded = shares > 0 ? try root.recoveryShares(count: shares, threshold: threshold) : []
            store = try self.opener(root)
        } catch {
            // All or nothing where it can be, since the shares are given out only by an init that succeeds:
            // after a data directory made under another key, or a failure to open the store (which binds a
            // new directory to its key last), the key is removed, and the vault stays uninitialised for the
            // next init. But a failed binding may have reached the disk, or be read back from the index's WAL
            // at the next start, and a directory bound to a key nobody holds would refuse every init: so
            // that key is kept. The vault then opens with the passphrase, and this init's shares were never
            // given out (docs/OPERATIONS.md).
            if !(error.cause is RecordStore.BindingUncertain) { RootKeyFile.remove(path: path) }
            if Index.Loss.isLoss(error) { self.state.withLock { $0.closedLost = true } }
            throw error
        }
        try self.admitted(store)
        self.state.withLock { $0.store = store }
        return (store, encoded)
    }

    /// Opens the store with the passphrase. Refused (`unseal-refused`, after Argon2id) when it does not
    /// open the wrapped key; throttled after refusals.
    package func unseal(passphrase: some CryptoBytes) throws(CaseVaultError) -> Storage {
        let path = try self.wrappedKeyPath()
        try self.beginAttempt()
        defer { self.endAttempt() }
        if let store = self.state.withLock({ $0.store }) { return store }
        let root: RootKey
        do {
            root = try WrappedRootKey.open(path: path, passphrase: passphrase)
        } catch {
            if error.code == .unsealRefused { self.refused() }
            throw error
        }
        return try self.open(root)
    }

    /// Takes one recovery share. Once `threshold` shares are in, combines them and opens the store; shares
    /// that do not combine, or whose key is not this vault's, are all dropped and the attempt counts as
    /// refused. A malformed share is refused as bad input and changes nothing. The share's text and values
    /// stay in locked memory.
    package func unseal(share text: some CryptoBytes) throws(CaseVaultError) -> Progress {
        _ = try self.wrappedKeyPath()
        let share: SecretSharing.Share
        do {
            share = try SecretSharing.Share(encoded: text)
        } catch {
            throw CaseVaultError(
                .invalidField, "the share is damaged or mistyped (\(error)); check it against the copy you were given",
                field: "share")
        }
        try self.beginAttempt()
        defer { self.endAttempt() }
        if let store = self.state.withLock({ $0.store }) { return .unsealed(store) }
        let collection = self.state.withLock { state in
            Result { () throws(UnsealGate.OtherSplit) in try state.gate.add(share) }
        }
        let collected: [SecretSharing.Share]
        switch collection {
        case .failure:
            throw CaseVaultError(
                .invalidField, "this share belongs to another split than the shares given so far", field: "share")
        case .success(.collecting(let received, let threshold)):
            return .collecting(received: received, threshold: threshold)
        case .success(.complete(let shares)):
            collected = shares
        }
        let root: RootKey
        do {
            root = try RootKey.combining(collected)
        } catch .lockedMemoryUnavailable {
            // Not the shares' fault: they are kept, and the attempt is not counted as refused.
            self.state.withLock { $0.gate.keep(collected) }
            throw CaseVaultError(
                .keyUnavailable, "no locked memory to combine the shares in (RLIMIT_MEMLOCK); try again")
        } catch {
            self.refused()
            throw CaseVaultError(
                .unsealRefused, "the shares do not recover a root key; start again with the shares you were given")
        }
        return .unsealed(try self.open(root))
    }

    /// Refuses (`wrongKeySource`) unless this vault can be sealed: a passphrase source, initialised. The
    /// caller asks before it detaches anything that sealing would take away (the audit signer).
    package func checkSealable() throws(CaseVaultError) {
        _ = try self.wrappedKeyPath()
    }

    /// Stops handing out the store (requests from now on get `sealed`), runs `beforeClosing` on it (the
    /// audit log signs and anchors its last checkpoint while the keys exist), then closes it and zeroes its
    /// keys. Returns the store that was open, or `nil`.
    @discardableResult
    package func seal(beforeClosing: (Storage) throws -> Void = { _ in }) throws(CaseVaultError) -> Storage? {
        try self.checkSealable()
        let store = self.state.withLock { state in
            defer {
                state.store = nil
                state.gate.forgetShares()
            }
            return state.store
        }
        guard let store else { return nil }
        do {
            try beforeClosing(store)
        } catch {
            self.logger.error(
                "sealing went on without the last audit checkpoint",
                metadata: ["error.code": "\((error as? CaseVaultError)?.code.rawValue ?? "unknown")"])
        }
        store.close()
        store.wipeKeys()
        if store.indexLost { self.state.withLock { $0.closedLost = true } }
        self.logger.notice("sealed: the store is closed and its keys zeroed")
        return store
    }

    /// Whether the open store's index, or that of one sealed since, lost commits the disk refused
    /// (`RecordStore.indexLost`): the daemon stops on it, for its next start to rebuild the index.
    package var indexLost: Bool {
        self.state.withLock { $0.closedLost || ($0.store?.indexLost ?? false) }
    }

    // MARK: Helpers

    private func open(_ root: RootKey) throws(CaseVaultError) -> Storage {
        let store: Storage
        do {
            store = try self.opener(root)
        } catch {
            if error.code == .unsealRefused { self.refused() }
            if Index.Loss.isLoss(error) { self.state.withLock { $0.closedLost = true } }
            throw error
        }
        try self.admitted(store)
        self.state.withLock { state in
            state.store = store
            state.gate.opened()
        }
        if case .passphrase(let path, _) = self.source { unlink(path + UnsealThrottle.suffix) }
        self.logger.notice("unsealed")
        return store
    }

    private func wrappedKeyPath() throws(CaseVaultError) -> String {
        guard case .passphrase(let path, _) = self.source else {
            throw CaseVaultError(
                .wrongKeySource,
                "unseal and seal need keys.source = \"passphrase\"; this daemon's root key comes from a file or credential"
            )
        }
        guard WrappedRootKey.exists(path: path) else {
            throw CaseVaultError(.wrongKeySource, "the vault is not initialised yet: run casevaultctl init")
        }
        return path
    }

    /// One attempt at a time, and none before the delay after the last refusal has passed.
    private func beginAttempt() throws(CaseVaultError) {
        let waited = self.state.withLock { state in
            Result { () throws(UnsealGate.Wait) in try state.gate.begin(at: .now) }
        }
        switch waited {
        case .success: return
        case .failure(.busy):
            throw CaseVaultError(
                .unsealThrottled, "another unseal attempt is running; try again in a moment", retryAfter: 1)
        case .failure(.throttled(let seconds)):
            throw CaseVaultError(
                .unsealThrottled, "too many refused attempts: wait \(seconds) s before the next", retryAfter: seconds)
        }
    }

    private func endAttempt() {
        self.state.withLock { $0.gate.end() }
    }

    private func refused() {
        let (refusals, delay) = self.state.withLock { state in
            state.gate.refuse(at: .now, maximumDelay: Self.maximumDelay)
        }
        self.logger.warning("an unseal attempt was refused")
        guard case .passphrase(let path, _) = self.source else { return }
        do {
            try UnsealThrottle.write(path + UnsealThrottle.suffix, refusals: refusals, until: self.clock() + delay)
        } catch {
            self.logger.error(
                "the unseal throttle could not be kept on disk; a restart would reset it",
                metadata: ["error.code": "\(error.code.rawValue)"])
        }
    }

}

extension VaultKeeper where Storage == RecordStore {
    /// A sealed keeper for the passphrase source: `configuration.rootKeyFile` holds (or will hold) the
    /// wrapped root key; `limits` is the Argon2id cost `initialise` uses.
    package convenience init(sealed configuration: StoreConfiguration, limits: PasswordHash.Limits, logger: Logger) {
        var state = State()
        if let (refusals, until) = UnsealThrottle.read(configuration.rootKeyFile.path + UnsealThrottle.suffix) {
            let wait = min(Int64(Self.maximumDelay * 1000), max(0, until - configuration.clock()))
            state.gate = UnsealGate(refusals: refusals, waitMilliseconds: wait, now: .now)
        }
        self.init(
            source: .passphrase(wrappedKey: configuration.rootKeyFile.path, limits: limits), state: state,
            logger: logger, clock: configuration.clock,
            opener: { root throws(CaseVaultError) in try RecordStore.open(configuration, rootKey: root, logger: logger)
            })
    }
}

/// The unseal throttle on disk (`VaultKeeper`): refusals in a row (4 bytes) and when the next attempt may come, in ms since
/// the Unix epoch (8 bytes), big-endian. Replaced whole (write, flush, rename), removed at unseal.
enum UnsealThrottle {
    static let suffix = ".throttle"

    static func read(_ path: String) -> (refusals: Int, until: Int64)? {
        guard let bytes = try? PosixFile(path: path, flags: O_RDONLY).readAll(), bytes.count == 12 else {
            return nil
        }
        return (Int(UInt32(bigEndianBytes: bytes[0..<4])), Int64(bigEndianBytes: bytes[4..<12]))
    }

    static func write(_ path: String, refusals: Int, until: Int64) throws(CaseVaultError) {
        try RootKeyFile.writeNew(
            path: path, bytes: UInt32(clamping: refusals).bigEndianBytes + until.bigEndianBytes)
    }
}

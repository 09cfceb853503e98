package import CaseVaultCore
package import CaseVaultCrypto
internal import CaseVaultFiles
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// A daemon's own file of erase-epoch secrets, for a vault kept on PostgreSQL: the epoch keys it holds and
/// the secret halves of its key pairs that epoch keys are sealed to in the database. Never in the
/// database, never in a backup. Each secret takes one fixed 128-byte slot, sealed under a key derived from
/// the daemon's root key; destroying a secret overwrites its slot in place with random bytes and flushes it
/// (`fdatasync`) before the call returns, as the store's key slots are destroyed.
///
/// | bytes    | field                                                                 |
/// |----------|-----------------------------------------------------------------------|
/// | 0..<4    | magic `CVE1`                                                          |
/// | 4        | kind: 1 an epoch key, 2 the secret half of this daemon's pair for it  |
/// | 5..<8    | zero                                                                  |
/// | 8..<16   | epoch number, little-endian                                           |
/// | 16..<88  | the secret sealed with XChaCha20-Poly1305 (nonce, 32 bytes, tag)      |
/// | 88..<112 | zero                                                                  |
/// | 112..<128| BLAKE2b-128 checksum of bytes 0..<112                                 |
///
/// Associated data binds each sealed secret to its slot number, kind and epoch. A slot whose checksum
/// fails (a write torn by a crash) holds nothing: opening the file scrubs every such slot again. One
/// process at a time opens the file (an exclusive `flock`).
package final class EpochKeyFile: Sendable {
    package static let slotCount = 16
    static let slotSize = 128
    static let magic = Array("CVE1".utf8)
    static let checksumOffset = 112
    private static let fileKeyContext: StaticString = "cv-epfil"
    private static let exchangeKeyContext: StaticString = "cv-epxch"

    private enum Kind: UInt8 {
        case epochKey = 1
        case pairSecret = 2
    }

    package let path: String
    private let file: PosixFile
    private let fileKey: SecureBytes
    /// Authenticates what the daemons exchange through the database (keyed BLAKE2b; crypto_kdf from the
    /// vault's root key, which every daemon of the vault holds).
    private let exchangeKey: SecureBytes
    /// What each slot holds, read at open and kept in step with every write: `nil` for a free slot.
    private let slots: Mutex<[(kind: UInt8, epoch: UInt64)?]>
    /// The epoch keys as `epochKeys` last opened them (in memory from `sodium_malloc`), so that the filings
    /// and reads the server awaits on its event loops neither read the file nor wait on `slots`, which a
    /// keep or a destruction holds across its flush; `nil` until then, and again after a wipe. A keep adds
    /// its key once it is durable; a destruction takes its epoch out before it overwrites the slot, so that the key is handed to no one
    /// from then on; a caller that holds it already lets go when its call ends, and the memory is zeroed
    /// then (`SecureBytes`). Taken after `slots` when both are.
    private let opened = Mutex<[EpochKey]?>(nil)

    /// Opens the file at `path` (a private file: 0600, owned by this user), creating it full of free slots
    /// when it does not exist, with secrets sealed under a key derived from `rootKey`.
    package init(path: String, rootKey: RootKey) throws(CaseVaultError) {
        if !DataDirectory.exists(path) {
            var free: [UInt8] = []
            for _ in 0..<Self.slotCount { free += Self.scrubbed() }
            // Not left in place with its name perhaps not durable, for epoch keys to be kept in.
            try RootKeyFile.writeNew(path: path, bytes: free, removeIfNotDurable: true)
        }
        try DataDirectory.checkPrivateFile(path)
        let file = try PosixFile(path: path, flags: O_RDWR)
        guard try file.size() == Int64(Self.slotCount * Self.slotSize) else {
            throw CaseVaultError(
                .integrityFailure,
                "the epoch key file \(path) is not \(Self.slotCount * Self.slotSize) bytes: it was cut short or is not one; rejoin with a fresh epoch key from a live daemon"
            )
        }
        do {
            self.fileKey = try KeyDerivation.deriveKey(from: rootKey.secret, context: Self.fileKeyContext, id: 1)
            self.exchangeKey = try KeyDerivation.deriveKey(
                from: rootKey.secret, context: Self.exchangeKeyContext, id: 1)
        } catch {
            throw CaseVaultError(.keyUnavailable, "the epoch key file's key could not be derived", cause: error)
        }
        guard try file.lock(LOCK_EX | LOCK_NB, path: path) else {
            throw CaseVaultError(
                .storageFailure, "the epoch key file \(path) is open in another process: one daemon per file")
        }
        self.path = path
        self.file = file
        // Every slot that does not decode is written again with random bytes: a destruction torn by a crash
        // may have cleared the magic and left the sealed secret behind it.
        var slots: [(kind: UInt8, epoch: UInt64)?] = []
        for number in 0..<Self.slotCount {
            let bytes = try file.read(count: Self.slotSize, at: Int64(number * Self.slotSize))
            if let decoded = Self.decode(bytes) {
                slots.append((decoded.kind, decoded.epoch))
            } else {
                slots.append(nil)
                try file.write(Self.scrubbed(), at: Int64(number * Self.slotSize))
            }
        }
        try file.flushData()
        self.slots = Mutex(slots)
    }

    // MARK: Epoch keys

    /// Keeps `key` in a free slot, durable when this returns.
    package func keep(_ key: EpochKey) throws(CaseVaultError) {
        try self.keep(key.secret, kind: .epochKey, epoch: key.number)
    }

    /// The epoch keys the file holds, oldest first: opened from the file once, then kept (`opened`).
    package func epochKeys() throws(CaseVaultError) -> [EpochKey] {
        if let keys = self.opened.withLock({ $0 }) { return keys }
        return try self.slots.withLock { slots throws(CaseVaultError) in
            // Opened meanwhile by a call that held `slots` before this one.
            if let keys = self.opened.withLock({ $0 }) { return keys }
            var keys: [EpochKey] = []
            for (number, epoch) in Self.held(.epochKey, in: slots) {
                keys.append(
                    EpochKey(number: epoch, secret: try self.open(slot: number, kind: .epochKey, epoch: epoch)))
            }
            keys.sort { $0.number < $1.number }
            self.opened.withLock { $0 = keys }
            return keys
        }
    }

    /// Destroys epoch `epoch`'s key in this file: its slot overwritten in place and flushed. Returns whether
    /// the file held it.
    @discardableResult
    package func destroyKey(epoch: UInt64) throws(CaseVaultError) -> Bool {
        try self.destroy(.epochKey, epoch: epoch)
    }

    // MARK: Key pairs

    /// A new key pair for epoch `epoch`, its secret half kept in a free slot (durable when this returns);
    /// the public half is for the database.
    package func makePair(epoch: UInt64) throws(CaseVaultError) -> SealedBox.KeyPair {
        let pair: SealedBox.KeyPair
        do {
            pair = try SealedBox.KeyPair()
        } catch {
            throw CaseVaultError(.keyUnavailable, "secure memory for a key pair could not be allocated")
        }
        try self.keep(pair.secret, kind: .pairSecret, epoch: epoch)
        return pair
    }

    /// This daemon's key pair for epoch `epoch`, if the file still holds its secret half.
    package func pair(epoch: UInt64) throws(CaseVaultError) -> SealedBox.KeyPair? {
        let secret = try self.slots.withLock { slots throws(CaseVaultError) -> SecureBytes? in
            guard let number = Self.held(.pairSecret, in: slots).first(where: { $0.epoch == epoch })?.slot else {
                return nil
            }
            return try self.open(slot: number, kind: .pairSecret, epoch: epoch)
        }
        guard let secret else { return nil }
        do {
            return try SealedBox.KeyPair(secretKey: secret)
        } catch {
            throw CaseVaultError(.keyUnavailable, "the key pair of an epoch could not be made", cause: error)
        }
    }

    /// The epochs whose key the file holds, read from its slots without opening one.
    package func keyEpochs() -> [UInt64] {
        self.slots.withLock { Self.held(.epochKey, in: $0).map(\.epoch).sorted() }
    }

    /// The epochs whose pair's secret half the file still holds.
    package func pairEpochs() -> [UInt64] {
        self.slots.withLock { Self.held(.pairSecret, in: $0).map(\.epoch).sorted() }
    }

    /// Destroys the secret half of this daemon's pair for epoch `epoch`: from then on no copy of an epoch
    /// key sealed to that pair opens. Returns whether the file held it.
    @discardableResult
    package func destroyPair(epoch: UInt64) throws(CaseVaultError) -> Bool {
        try self.destroy(.pairSecret, epoch: epoch)
    }

    // MARK: The exchange's tags

    /// What a published public key or a sealed copy carries beside it in the database: a keyed BLAKE2b tag of
    /// `message` that only a holder of the vault's root key makes, so that whoever can write the database
    /// but lacks the root key can neither put a key pair of their own in a daemon's place (and be sent the
    /// next epoch's key) nor hand a daemon an epoch key of their choosing.
    /// Zeroes the keys derived from the root key that this file holds (its own sealing key and the
    /// exchange's tag key), for a daemon that stops: later reads of epoch keys and tags fail to
    /// authenticate. The epoch keys opened are let go, their memory zeroed once no call holds them.
    package func wipe() {
        // Under `slots`, so that no opening under way puts keys back after the wipe.
        self.slots.withLock { _ in
            self.opened.withLock { $0 = nil }
            self.fileKey.wipe()
            self.exchangeKey.wipe()
        }
    }

    package func tag(_ message: [UInt8]) -> [UInt8] {
        Hash.blake2b(message, key: self.exchangeKey)
    }

    /// Whether `tag` is `message`'s tag, compared in constant time.
    package func isAuthentic(_ tag: [UInt8], of message: [UInt8]) -> Bool {
        Memory.constantTimeEquals(Hash.blake2b(message, key: self.exchangeKey), tag)
    }

    // MARK: Slots

    private static func held(_ kind: Kind, in slots: [(kind: UInt8, epoch: UInt64)?]) -> [(slot: Int, epoch: UInt64)] {
        slots.enumerated().compactMap { number, slot in
            guard let slot, slot.kind == kind.rawValue else { return nil }
            return (number, slot.epoch)
        }
    }

    private func keep(_ secret: SecureBytes, kind: Kind, epoch: UInt64) throws(CaseVaultError) {
        try self.slots.withLock { slots throws(CaseVaultError) in
            guard !slots.contains(where: { $0?.kind == kind.rawValue && $0?.epoch == epoch }) else {
                throw CaseVaultError(.storageFailure, "the epoch key file already holds this secret of epoch \(epoch)")
            }
            guard let number = slots.firstIndex(where: { $0 == nil }) else {
                throw CaseVaultError(
                    .storageFailure,
                    "the epoch key file \(self.path) has no free slot: destroy the epochs that have turned")
            }
            let sealed = secret.withUnsafeBytes { secret in
                AEAD.seal(
                    secret, key: self.fileKey,
                    associatedData: Self.associatedData(slot: number, kind: kind.rawValue, epoch: epoch))
            }
            var bytes = Self.magic + [kind.rawValue, 0, 0, 0] + epoch.littleEndianBytes + sealed
            bytes += [UInt8](repeating: 0, count: Self.checksumOffset - bytes.count)
            bytes += Hash.blake2b(bytes, length: 16)
            // Counted as held from the write on, so that a failed flush leaves a slot a destruction still finds.
            slots[number] = (kind.rawValue, epoch)
            try self.file.write(bytes, at: Int64(number * Self.slotSize))
            try self.file.flushData()
            // Handed out from now on with the others, once durable.
            if kind == .epochKey {
                self.opened.withLock { keys in
                    keys?.append(EpochKey(number: epoch, secret: secret))
                    keys?.sort { $0.number < $1.number }
                }
            }
        }
    }

    private func open(slot number: Int, kind: Kind, epoch: UInt64) throws(CaseVaultError) -> SecureBytes {
        let bytes = try self.file.read(count: Self.slotSize, at: Int64(number * Self.slotSize))
        guard let decoded = Self.decode(bytes), decoded.kind == kind.rawValue, decoded.epoch == epoch else {
            throw Self.altered(self.path)
        }
        do {
            return try SecureBytes(count: AEAD.keyByteCount) { secret in
                try AEAD.open(
                    decoded.sealed, key: self.fileKey,
                    associatedData: Self.associatedData(slot: number, kind: kind.rawValue, epoch: epoch), into: secret)
            }
        } catch CryptoError.secureAllocationFailed {
            throw CaseVaultError(.keyUnavailable, "secure memory for an epoch secret could not be allocated")
        } catch {
            throw Self.altered(self.path)
        }
    }

    private func destroy(_ kind: Kind, epoch: UInt64) throws(CaseVaultError) -> Bool {
        try self.slots.withLock { slots throws(CaseVaultError) -> Bool in
            let numbers = slots.indices.filter { slots[$0]?.kind == kind.rawValue && slots[$0]?.epoch == epoch }
            if kind == .epochKey { self.opened.withLock { $0?.removeAll { $0.number == epoch } } }
            for number in numbers {
                try self.file.write(Self.scrubbed(), at: Int64(number * Self.slotSize))
            }
            guard !numbers.isEmpty else { return false }
            try self.file.flushData()
            for number in numbers { slots[number] = nil }
            return true
        }
    }

    private static func decode(_ bytes: [UInt8]) -> (kind: UInt8, epoch: UInt64, sealed: ArraySlice<UInt8>)? {
        guard bytes.count == Self.slotSize, bytes.starts(with: Self.magic) else { return nil }
        let checksum = Hash.blake2b(bytes[..<Self.checksumOffset], length: 16)
        guard Memory.constantTimeEquals(checksum, bytes[Self.checksumOffset...]),
            Kind(rawValue: bytes[4]) != nil
        else { return nil }
        return (bytes[4], UInt64(littleEndianBytes: bytes[8..<16]), bytes[16..<(16 + EpochKey.wrappedByteCount)])
    }

    private static func associatedData(slot: Int, kind: UInt8, epoch: UInt64) -> [UInt8] {
        Array("casevault epoch file v1".utf8) + UInt32(slot).littleEndianBytes + [kind] + epoch.littleEndianBytes
    }

    /// Random bytes whose first byte can never begin the magic: a free or destroyed slot.
    private static func scrubbed() -> [UInt8] {
        var bytes = Random.bytes(count: Self.slotSize)
        bytes[0] = 0
        return bytes
    }

    private static func altered(_ path: String) -> CaseVaultError {
        CaseVaultError(
            .integrityFailure,
            "a slot of the epoch key file \(path) failed authentication: it was altered or sealed under another root key"
        )
    }
}

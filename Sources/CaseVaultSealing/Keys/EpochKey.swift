package import CaseVaultCore
package import CaseVaultCrypto

/// One erase epoch of a vault kept on PostgreSQL: 32 random bytes (never derived from a long-lived key)
/// under which every record's data key is wrapped while the epoch is current. The database keeps only
/// wrapped data keys, and copies of this key sealed to each daemon's key pair of the epoch; the key itself
/// lives in the daemons' own epoch key files. Destroying it in every file makes every copy the database
/// ever kept of a key wrapped under it (dead tuples, the WAL, standbys, archives, base backups) open for no
/// one. See docs/ARCHITECTURE.md, "The vault on PostgreSQL".
package struct EpochKey: Sendable {
    package let number: UInt64
    let secret: SecureBytes

    /// A new epoch's key, from the system's CSPRNG.
    package static func random(number: UInt64) -> EpochKey {
        EpochKey(number: number, secret: SecureBytes.random(count: AEAD.keyByteCount))
    }

    /// Bytes a wrapped data key takes: nonce, the 32-byte key, tag.
    package static let wrappedByteCount = AEAD.overhead + AEAD.keyByteCount

    /// Whether `other` is the same epoch with the same key, the keys compared in constant time.
    package func isSame(as other: EpochKey) -> Bool {
        self.number == other.number && self.secret.constantTimeEquals(other.secret)
    }

    // MARK: Data keys

    /// `dataKey` wrapped under this epoch for `recordID`: associated data binds the record and the epoch, so
    /// a wrapped key copied onto another record, or presented as another epoch's, fails to open.
    package func wrap(_ dataKey: DataKey, recordID: RecordID) -> [UInt8] {
        self.wrap(dataKey, associatedData: self.associatedData(recordID))
    }

    /// A legal hold's reason key wrapped under this epoch for `holdID`: bound to the hold and the epoch, and
    /// apart from every record's wrap (its own label).
    package func wrap(_ reasonKey: DataKey, holdID: HoldID) -> [UInt8] {
        self.wrap(reasonKey, associatedData: self.associatedData(holdID))
    }

    /// The reason key `wrapped` holds for `holdID`; `integrity-failure` as `unwrap(_:recordID:)`.
    package func unwrap(_ wrapped: [UInt8], holdID: HoldID) throws(CaseVaultError) -> DataKey {
        try self.unwrap(wrapped, associatedData: self.associatedData(holdID))
    }

    /// `wrapped` (a hold's reason key under this epoch) wrapped again under `next`, for an epoch turn.
    package func rewrap(_ wrapped: [UInt8], holdID: HoldID, under next: EpochKey) throws(CaseVaultError) -> [UInt8] {
        next.wrap(try self.unwrap(wrapped, holdID: holdID), holdID: holdID)
    }

    private func wrap(_ dataKey: DataKey, associatedData: [UInt8]) -> [UInt8] {
        dataKey.secret.withUnsafeBytes { keyBytes in
            AEAD.seal(keyBytes, key: self.secret, associatedData: associatedData)
        }
    }

    /// The data key `wrapped` holds for `recordID`; `integrity-failure` when it was wrapped under another
    /// epoch, for another record, or altered.
    package func unwrap(_ wrapped: [UInt8], recordID: RecordID) throws(CaseVaultError) -> DataKey {
        try self.unwrap(wrapped, associatedData: self.associatedData(recordID))
    }

    private func unwrap(_ wrapped: [UInt8], associatedData: [UInt8]) throws(CaseVaultError) -> DataKey {
        do {
            return DataKey(
                secret: try SecureBytes(count: AEAD.keyByteCount, ephemeral: true) { secret in
                    try AEAD.open(wrapped, key: self.secret, associatedData: associatedData, into: secret)
                })
        } catch CryptoError.secureAllocationFailed {
            throw CaseVaultError(.keyUnavailable, "secure memory for a data key could not be allocated")
        } catch {
            throw CaseVaultError(
                .integrityFailure,
                "a wrapped data key failed authentication under epoch \(self.number): it was altered, wrapped under another epoch or copied from another record"
            )
        }
    }

    /// `wrapped` (under this epoch) wrapped again under `next`, for an epoch turn: the data key is opened and
    /// wrapped again here and never leaves the sealing layer.
    package func rewrap(_ wrapped: [UInt8], recordID: RecordID, under next: EpochKey) throws(CaseVaultError)
        -> [UInt8]
    {
        next.wrap(try self.unwrap(wrapped, recordID: recordID), recordID: recordID)
    }

    private func associatedData(_ recordID: RecordID) -> [UInt8] {
        var data = Self.wrapLabel
        data += self.number.littleEndianBytes
        recordID.appendBytes(to: &data)
        return data
    }

    private func associatedData(_ holdID: HoldID) -> [UInt8] {
        var data = Self.holdWrapLabel
        data += self.number.littleEndianBytes
        holdID.appendBytes(to: &data)
        return data
    }

    private static let wrapLabel = Array("casevault epoch wrap v1".utf8)
    private static let holdWrapLabel = Array("casevault epoch hold wrap v1".utf8)

    // MARK: Sealed to a daemon

    /// The key sealed to one daemon's key pair of this epoch (`publicKey`, as the daemon published it), for
    /// the database: what is sealed names the epoch and the daemon, so that a copy moved onto another
    /// epoch's or another daemon's row is refused. Once the daemon destroys the pair's secret half, the
    /// copy, wherever the database kept it, opens for no one.
    package func sealed(to daemon: DaemonName, publicKey: [UInt8]) throws(CaseVaultError) -> [UInt8] {
        let header = Self.sealedHeader(number: self.number, daemon: daemon)
        let message: SecureBytes
        do {
            message = try SecureBytes(count: header.count + self.secret.count) { message in
                message.copyBytes(from: header)
                self.secret.withUnsafeBytes { key in
                    UnsafeMutableRawBufferPointer(rebasing: message[header.count...]).copyMemory(from: key)
                }
            }
        } catch {
            throw CaseVaultError(.keyUnavailable, "secure memory for an epoch key could not be allocated")
        }
        defer { message.wipe() }
        do {
            return try SealedBox.seal(message, to: publicKey)
        } catch {
            throw CaseVaultError(
                .invalidConfiguration, "a daemon's published key is not an X25519 public key", cause: error)
        }
    }

    /// The epoch `number`'s key from the copy sealed to `daemon`'s `pair`; `key-unavailable` when it does not
    /// open with the pair or names another epoch or daemon.
    package static func opening(
        _ sealed: [UInt8], number: UInt64, daemon: DaemonName, pair: SealedBox.KeyPair
    ) throws(CaseVaultError) -> EpochKey {
        let refused = CaseVaultError(
            .keyUnavailable,
            "the copy of epoch \(number)'s key sealed to this daemon does not open with its key pair of that epoch: have a live daemon seal it again"
        )
        let message: SecureBytes
        do {
            message = try SealedBox.open(sealed, with: pair)
        } catch {
            throw refused
        }
        defer { message.wipe() }
        let header = Self.sealedHeader(number: number, daemon: daemon)
        guard message.count == header.count + AEAD.keyByteCount else { throw refused }
        let named = message.withUnsafeBytes {
            Memory.constantTimeEquals(UnsafeRawBufferPointer(rebasing: $0[..<header.count]), header)
        }
        guard named else { throw refused }
        do {
            let secret = try SecureBytes(count: AEAD.keyByteCount) { secret in
                message.withUnsafeBytes {
                    secret.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[header.count...]))
                }
            }
            return EpochKey(number: number, secret: secret)
        } catch {
            throw CaseVaultError(.keyUnavailable, "secure memory for an epoch key could not be allocated")
        }
    }

    private static func sealedHeader(number: UInt64, daemon: DaemonName) -> [UInt8] {
        Array("casevault epoch key v1".utf8) + number.littleEndianBytes + [UInt8(daemon.rawValue.utf8.count)]
            + Array(daemon.rawValue.utf8)
    }
}

/// A daemon's name among the daemons that serve one database: 1 to 64 of `a-z`, `0-9`, `.`, `_` and `-`.
package struct DaemonName: Sendable, Hashable, CustomStringConvertible {
    package let rawValue: String

    package init(_ text: String) throws(CaseVaultError) {
        let allowed = text.utf8.allSatisfy { byte in
            (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte) || byte == 0x2E || byte == 0x5F
                || byte == 0x2D
        }
        guard (1...64).contains(text.utf8.count), allowed else {
            throw CaseVaultError(.invalidConfiguration, "a daemon's name is 1 to 64 of a-z, 0-9, '.', '_' and '-'")
        }
        self.rawValue = text
    }

    package var description: String { self.rawValue }
}

extension DataKey: Equatable {
    /// A new record's data key, from the system's CSPRNG.
    package static func random() -> DataKey {
        DataKey(secret: SecureBytes.random(count: AEAD.keyByteCount, ephemeral: true))
    }

    /// Whether two data keys are the same key, compared in constant time.
    package static func == (left: DataKey, right: DataKey) -> Bool {
        left.secret.constantTimeEquals(right.secret)
    }
}

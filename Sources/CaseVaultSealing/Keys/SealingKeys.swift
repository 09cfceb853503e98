package import CaseVaultCore
package import CaseVaultCrypto

/// The vault's root key, in locked memory. The layers above the sealing layer hold it (from its source to
/// the barrier it opens) but cannot read it: its bytes are visible to this target alone.
public struct RootKey: Sendable {
    let secret: SecureBytes

    /// A key of known bytes, for the fuzz targets' fixed test vault.
    package init(secret: SecureBytes) {
        self.secret = secret
    }

    /// Zeroes the key now. A barrier made from it holds this same memory: call it only once that barrier is
    /// done with (as the offline audit signer does, which keeps the subkeys it derived).
    package func wipe() {
        self.secret.wipe()
    }

    static func random() -> RootKey {
        RootKey(secret: SecureBytes.random(count: RootKeyFile.byteCount))
    }

    /// Splits the key into `count` recovery shares of which `threshold` recover it, each as its text in
    /// locked memory: shown to the operator once, kept nowhere.
    package func recoveryShares(count: Int, threshold: Int) throws(CaseVaultError) -> [SecureBytes] {
        do {
            return try SecretSharing.split(self.secret, count: count, threshold: threshold).map {
                share throws(SecretSharing.Failure) in
                try share.encoded()
            }
        } catch {
            throw CaseVaultError(.keyUnavailable, "the recovery shares could not be made: \(error)")
        }
    }

    /// The key that `shares` recover. Throws `lockedMemoryUnavailable` when no locked memory could be had
    /// (not the shares' fault) and another failure when they do not combine.
    package static func combining(_ shares: [SecretSharing.Share]) throws(SecretSharing.Failure) -> RootKey {
        RootKey(secret: try SecretSharing.combine(shares))
    }
}

/// One record's data key, in locked memory and zeroed on release. A sealed record carries it from sealing
/// to its commit (where the slot number that the wrap binds is known); no target but this one can read it.
package struct DataKey: Sendable {
    let secret: SecureBytes
}

/// One backup's stream key, in locked memory. Kept sealed in the backup key file until the backup
/// retention destroys it.
package struct BackupKey: Sendable {
    let secret: SecureBytes

    /// A key of known bytes, for the fuzz targets' test backup.
    package init(secret: SecureBytes) {
        self.secret = secret
    }

    static func random() -> BackupKey {
        BackupKey(secret: SecureBytes.random(count: AEAD.keyByteCount))
    }

    /// What a backup of a vault on PostgreSQL wraps records' data keys and holds' reason keys under: a
    /// subkey of this backup's key, as an erase epoch numbered 0, which no epoch of a vault is (they count
    /// from 1). A key moves into the backup by `EpochKey.rewrap(_:recordID:under:)` from its epoch to this
    /// one, and out of it at a restore from this one to the restored vault's epoch, without leaving the
    /// sealing layer; destroying the backup's key destroys this one with it.
    package var keyWrapping: EpochKey {
        get throws(CaseVaultError) {
            do {
                return EpochKey(
                    number: 0,
                    secret: try KeyDerivation.deriveKey(from: self.secret, context: "cvbkwrap", id: 1))
            } catch {
                throw CaseVaultError(
                    .keyUnavailable, "secure memory for a backup's wrapping key could not be allocated")
            }
        }
    }
}

package import CaseVaultCore
internal import CaseVaultCrypto

/// Seals a backup as one secretstream under the backup's own key (`BackupKey`): each item a message, the
/// first bound to the backup's header, the last tagged final, so that a backup cut short, reordered or
/// spliced from two fails to authenticate.
package final class BackupSealer {
    private let encryptor: SecretStream.Encryptor

    package init(key: BackupKey) throws(CaseVaultError) {
        do {
            self.encryptor = try SecretStream.Encryptor(key: key.secret)
        } catch {
            throw CaseVaultError(.keyUnavailable, "the backup stream could not be started", cause: error)
        }
    }

    /// The stream's header, written after the backup's own.
    package var header: [UInt8] { self.encryptor.header }

    /// How many bytes longer a sealed message is than the message.
    package static var overhead: Int { SecretStream.chunkOverhead }

    package func seal(_ message: [UInt8], associatedData: [UInt8], isFinal: Bool) -> [UInt8] {
        self.encryptor.push(message, associatedData: associatedData, isFinal: isFinal)
    }
}

/// Opens a backup's stream, message by message.
package final class BackupOpener {
    private let decryptor: SecretStream.Decryptor

    /// How many bytes of stream header follow the backup's own header.
    package static var headerByteCount: Int { SecretStream.headerByteCount }

    /// Throws (any error) when the stream header is damaged.
    package init(key: BackupKey, header: [UInt8]) throws {
        self.decryptor = try SecretStream.Decryptor(key: key.secret, header: header)
    }

    /// Whether the final message has been opened.
    package var isFinished: Bool { self.decryptor.isFinished }

    /// Throws (any error) unless the final message has been opened: a backup cut short.
    package func finish() throws {
        try self.decryptor.finish()
    }

    /// Throws (any error) when the message does not authenticate.
    package func open(_ sealed: [UInt8], associatedData: [UInt8]) throws -> [UInt8] {
        try self.decryptor.pull(sealed, associatedData: associatedData)
    }
}

/// What a backup wrote (`ServedStorage.backup`).
package struct BackupSummary: Sendable, Equatable {
    package var backupID: String
    package var createdAt: Int64
    package var records: Int
    package var attachments: Int
    /// Backup keys destroyed because they were older than the retention.
    package var destroyedKeys: Int

    package init(backupID: String, createdAt: Int64, records: Int, attachments: Int, destroyedKeys: Int) {
        self.backupID = backupID
        self.createdAt = createdAt
        self.records = records
        self.attachments = attachments
        self.destroyedKeys = destroyedKeys
    }
}

/// A backup being restored into a serving vault (`ServedStorage.beginRestore`), fed its bytes as they
/// arrive and kept only whole: `finish` commits it, anything else (an error, `abandon`, the restore's end
/// without `finish`) leaves the vault as it was. Used by one task at a time.
package protocol BackupRestore: AnyObject, Sendable {
    /// Takes the next bytes of the backup, restoring every item they complete.
    func feed(_ bytes: UnsafeRawBufferPointer) throws(CaseVaultError)
    /// Ends the restore (the backup must have ended whole) and returns what was restored.
    func finish() throws(CaseVaultError) -> RestoredBackup
    /// Undoes whatever the restore wrote.
    func abandon()
}

/// What a restore into a serving vault brought back.
package struct RestoredBackup: Sendable, Equatable {
    package var backupID: String
    package var createdAt: Int64
    package var records: Int
    package var attachments: Int
    package var holds: Int
    package var certificates: Int
    /// Records the ledger given with the backup names, which the restore shredded again.
    package var shreddedAgain: Int

    package init(
        backupID: String, createdAt: Int64, records: Int, attachments: Int, holds: Int, certificates: Int,
        shreddedAgain: Int
    ) {
        self.backupID = backupID
        self.createdAt = createdAt
        self.records = records
        self.attachments = attachments
        self.holds = holds
        self.certificates = certificates
        self.shreddedAgain = shreddedAgain
    }
}

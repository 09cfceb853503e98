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

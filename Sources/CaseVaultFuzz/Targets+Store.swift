internal import CaseVaultCore
internal import CaseVaultSealing
internal import CaseVaultStore
internal import Foundation

/// The targets for the store's files: what lies on disk in the data directory, and what an operator hands
/// to a restore. Each opens under the test keys of `FuzzEnvironment`.
enum StoreTargets {
    /// The size of a key slot in `keyslots` (`KeySlot.size`).
    static let slotSize = 128

    /// `sealed-record`: the first 128 bytes are a key slot, the rest a sealed blob, read as
    /// `Vault.get` reads a record (`FuzzOpener.sealedRecord`): the slot unwrapped for the test record
    /// (`Barrier.unwrap`, which decodes it with `KeySlot.decode`), then the blob opened with the data key, and
    /// the content parsed as the read route does. A slot that does not open leaves the blob to be opened
    /// with the test data key, so that the blob's checks are fuzzed whatever the slot holds.
    static func sealedRecord(_ input: [UInt8]) {
        let environment = FuzzEnvironment.shared
        let record = FuzzEnvironment.record
        let slot = Array(input.prefix(Self.slotSize))
        let blob = Array(input.dropFirst(Self.slotSize))
        guard
            let content = environment.opener.sealedRecord(
                slot: slot, slotNumber: FuzzEnvironment.slot, blob: blob, record: record)
        else { return }
        _ = JSONValue.parseStored(content)?.string("category")
    }

    /// `attachment`: the input as the test record's attachment file, opened (`AttachmentDownload`: magic,
    /// stream header, media type) and read chunk by chunk to its end or its first error.
    static func attachment(_ input: [UInt8]) {
        let environment = FuzzEnvironment.shared
        let path = environment.path("attachment")
        FuzzEnvironment.replace(path, with: input)
        guard
            let download = try? environment.opener.attachment(
                AttachmentReader(path: path), record: FuzzEnvironment.record)
        else {
            return
        }
        _ = download.mediaType
        // Each chunk read moves on by at least its overhead, so the file's size bounds the loop; the count
        // is a second bound.
        var chunks = 0
        while chunks < 1 << 16, let chunk = try? download.next() {
            _ = chunk
            chunks += 1
        }
    }

    /// `backup`: the input as a backup file, restored with `RecordStore.restore` into a data directory
    /// that does not exist yet, read through a `FileHandle` as `casevaultctl backup restore` reads it,
    /// with the test root key file and the test backup key file (which holds the key of one backup id).
    /// What a restore leaves (only a backup that authenticates gets that far) is removed after each input.
    static func backup(_ input: [UInt8]) {
        let environment = FuzzEnvironment.shared
        let path = environment.path("backup")
        let target = environment.path("restore")
        FuzzEnvironment.replace(path, with: input)
        defer { FuzzEnvironment.remove(target) }
        guard let handle = FileHandle(forReadingAtPath: path) else { return }
        defer { try? handle.close() }
        let configuration = StoreConfiguration(
            dataDirectory: URL(fileURLWithPath: target),
            rootKeyFile: URL(fileURLWithPath: environment.rootKeyPath)
        )
        _ = try? RecordStore.restore(
            read: { count throws(CaseVaultError) in
                do {
                    return [UInt8](try handle.read(upToCount: count) ?? Data())
                } catch {
                    throw CaseVaultError(.storageFailure, "the fuzz input could not be read")
                }
            },
            into: configuration,
            passphrase: nil,
            keys: BackupKeyFile(path: environment.backupKeysPath),
            ledger: [],
            logger: environment.logger
        )
    }

    /// `shred-ledger`: the input as the shred ledger's copy, read as a restore reads it
    /// (`ShredLedgerFile.entries`: every line's MAC checked under the test root key).
    static func shredLedger(_ input: [UInt8]) {
        let environment = FuzzEnvironment.shared
        let path = environment.path("shred.ledger")
        FuzzEnvironment.replace(path, with: input)
        _ = try? ShredLedgerFile(path: path).entries(sealing: environment.sealing)
    }
}

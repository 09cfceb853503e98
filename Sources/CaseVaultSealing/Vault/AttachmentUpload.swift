package import CaseVaultCore
internal import CaseVaultCrypto

/// An attachment being uploaded (a signed PDF scan): sealed here chunk by chunk into the storage's file, so
/// memory stays at one chunk whatever the size. Used by one task at a time; `Vault.finishAttachment` makes
/// it visible, anything else (an error, a dropped connection) leaves nothing behind.
package final class AttachmentUpload: @unchecked Sendable {
    let file: any AttachmentSink
    private let sealer: AttachmentSealer
    private let maxBytes: Int64
    private var pending: [UInt8] = []
    package private(set) var size: Int64 = 0

    init(file: any AttachmentSink, sealer: AttachmentSealer, maxBytes: Int64) throws(CaseVaultError) {
        self.file = file
        self.sealer = sealer
        self.maxBytes = maxBytes
        try file.append(sealer.head)
        self.pending.reserveCapacity(AttachmentFormat.chunkBytes)
    }

    /// Seals and writes every whole chunk of `bytes`; keeps the rest for the next call.
    package func append(_ bytes: UnsafeRawBufferPointer) throws(CaseVaultError) {
        self.size += Int64(bytes.count)
        guard self.size <= self.maxBytes else {
            throw CaseVaultError(
                .contentTooLarge, "the attachment is larger than the configured limit of \(self.maxBytes) bytes")
        }
        var rest = bytes[...]
        while !rest.isEmpty {
            let take = min(rest.count, AttachmentFormat.chunkBytes - self.pending.count)
            self.pending.append(contentsOf: rest.prefix(take))
            rest = rest.dropFirst(take)
            if self.pending.count == AttachmentFormat.chunkBytes {
                try self.writePending(isFinal: false)
            }
        }
    }

    private func writePending(isFinal: Bool) throws(CaseVaultError) {
        let sealed = self.sealer.seal(self.pending, isFinal: isFinal)
        Memory.zero(&self.pending)
        self.pending.removeAll(keepingCapacity: true)
        try self.file.append(sealed)
    }

    /// Seals the last chunk and flushes the file: the attachment is whole on disk, not yet in place.
    func sealLast() throws(CaseVaultError) {
        try self.writePending(isFinal: true)
        try self.file.flush()
    }

    deinit {
        Memory.zero(&self.pending)
    }
}

package import CaseVaultCore

/// A record's wrapped data key as the storage keeps it: the slot's number (bound into the wrap) and bytes.
package struct StoredKey: Sendable {
    package var metadata: RecordMetadata
    package var slot: Int64
    package var wrapped: [UInt8]

    package init(metadata: RecordMetadata, slot: Int64, wrapped: [UInt8]) {
        self.metadata = metadata
        self.slot = slot
        self.wrapped = wrapped
    }
}

/// A live record as the storage gives it back: its wrapped key and its sealed blob.
package struct StoredRecord: Sendable {
    package var key: StoredKey
    package var blob: [UInt8]
    package var metadata: RecordMetadata { self.key.metadata }

    package init(key: StoredKey, blob: [UInt8]) {
        self.key = key
        self.blob = blob
    }
}

package import CaseVaultCore

/// A record's wrapped data key as the storage keeps it: the bytes, and what they are wrapped under.
package struct StoredKey: Sendable {
    /// What a data key is wrapped under, which the sealing layer unwraps it with.
    package enum Wrap: Sendable {
        /// A key slot of the local store: the slot's number (bound into the wrap) under an epoch of the
        /// root key that the slot's bytes name.
        case slot(Int64)
        /// An erase epoch of a vault on PostgreSQL: the epoch's key, an opaque value the storage holds for
        /// the sealing layer (`EpochKey.wrap`; the wrap binds the record id and the epoch's number).
        case eraseEpoch(EpochKey)
    }

    package var metadata: RecordMetadata
    package var wrap: Wrap
    package var wrapped: [UInt8]

    package init(metadata: RecordMetadata, slot: Int64, wrapped: [UInt8]) {
        self.init(metadata: metadata, wrap: .slot(slot), wrapped: wrapped)
    }

    package init(metadata: RecordMetadata, wrap: Wrap, wrapped: [UInt8]) {
        self.metadata = metadata
        self.wrap = wrap
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

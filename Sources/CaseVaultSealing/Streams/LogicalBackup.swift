package import CaseVaultCore
package import Foundation

/// A vault's rows as one file sealed like a backup of a data directory (`BackupSealer`, a secretstream
/// under a random key of its own kept in a backup key file), in a logical form that depends on no storage's
/// files: what a daemon of a vault on PostgreSQL writes as a backup (`CVBK2`), and what `casevaultctl
/// migrate` writes of a data directory for such a daemon to restore (`CVMG2`, the same layout).
///
///     "CVBK2\n" or "CVMG2\n" | id (16) | created, ms (8) | vault check (8) | secretstream header (24)
///     then frames: length (4, big-endian) ‖ one secretstream message; a zero length ends the file
///
/// Each message is one item: its kind (a byte), then a row as JSON; a record's row as JSON after its length
/// (4, big-endian), then its sealed blob; or an attachment's chunk. In order: the roster, cases, records
/// each followed by its attachment, legal holds, shreds, the ledger (records shredded that the vault no
/// longer holds), certificates, and the end with the counts. Records' data keys and holds' reason keys are
/// wrapped under the file's wrapping key (`BackupKey.keyWrapping`), never under an erase epoch, whose key
/// every daemon destroys within the erase window: so the file opens with the root key and the backup key
/// file alone, until the backup retention destroys its key. Session notes are never in a backup; a
/// migration moves the whole vault, its notes included.
package enum LogicalBackup {
    /// A backup of a vault on PostgreSQL.
    package static let magic = Array("CVBK2\n".utf8)
    /// A vault moved from a data directory (`casevaultctl migrate`): it may hold session notes.
    package static let migrationMagic = Array("CVMG2\n".utf8)
    /// What a backup of a data directory starts with (`BackupFormat` of the local store).
    package static let localMagic = Array("CVBK1\n".utf8)
    package static let headerSize = 6 + 16 + 8 + 8
    /// Rows read at a time.
    package static let page = 200
    /// Attachment chunks read at a time (each 64 KiB and its overhead).
    package static let chunkPage = 16
    /// The bytes of an attachment an item holds.
    package static let chunkBytes = 64 << 10
    /// The longest message a writer writes and a restore accepts: a record's row and its sealed blob, the
    /// largest of which the largest body a daemon takes (`max_body_bytes`, at most 64 MiB) makes, with room
    /// for the row and the sealing's overhead.
    package static let maxMessage = (64 << 20) + (1 << 20)
    /// Ledger entries an item holds.
    package static let ledgerPage = 1000

    package enum Item: UInt8 {
        case roster = 1
        case caseRow = 2
        case record = 3
        case shred = 4
        case attachmentStart = 5
        case attachmentChunk = 6
        case attachmentEnd = 7
        case certificate = 8
        case end = 9
        case hold = 10
        /// A record's row as JSON after its length, then its sealed blob. (`record`, its row with the blob
        /// in base64, is what the first backups of this format wrote; a restore still reads it.)
        case recordAndBlob = 11
        case ledger = 12
    }

    package struct Roster: Codable {
        package var uids: [Int64]

        package init(uids: [Int64]) { self.uids = uids }
    }

    package struct CaseRow: Codable {
        package var id: String
        package var state: String
        package var participantCount: Int
        package var mediators: [Int64]
        package var supervisors: [Int64]
        package var createdAt: Int64
        package var closedAt: Int64?
        package var outcome: String?
        package var headerID: String

        package init(
            id: String, state: String, participantCount: Int, mediators: [Int64], supervisors: [Int64],
            createdAt: Int64, closedAt: Int64?, outcome: String?, headerID: String
        ) {
            self.id = id
            self.state = state
            self.participantCount = participantCount
            self.mediators = mediators
            self.supervisors = supervisors
            self.createdAt = createdAt
            self.closedAt = closedAt
            self.outcome = outcome
            self.headerID = headerID
        }
    }

    package struct Record: Codable {
        package var id: String
        package var caseID: String
        package var type: String
        package var createdAt: Int64
        package var author: String?
        package var supersedes: String?
        /// The data key wrapped under the file's wrapping key.
        package var wrappedKey: Data
        /// The sealed blob, in an item of kind `record` only.
        package var blob: Data?

        package init(
            id: String, caseID: String, type: String, createdAt: Int64, author: String?, supersedes: String?,
            wrappedKey: [UInt8]
        ) {
            self.id = id
            self.caseID = caseID
            self.type = type
            self.createdAt = createdAt
            self.author = author
            self.supersedes = supersedes
            self.wrappedKey = Data(wrappedKey)
            self.blob = nil
        }
    }

    package struct Attachment: Codable {
        package var recordID: String
        package var upload: String
        package var size: Int64

        package init(recordID: String, upload: String, size: Int64) {
            self.recordID = recordID
            self.upload = upload
            self.size = size
        }
    }

    package struct Hold: Codable {
        package var id: String
        package var caseID: String
        package var placedAt: Int64
        package var placedByUID: Int64?
        package var placedByRole: String
        /// The reason key wrapped under the file's wrapping key.
        package var wrappedKey: Data
        package var sealedReason: Data

        package init(
            id: String, caseID: String, placedAt: Int64, placedByUID: Int64?, placedByRole: String,
            wrappedKey: [UInt8], sealedReason: [UInt8]
        ) {
            self.id = id
            self.caseID = caseID
            self.placedAt = placedAt
            self.placedByUID = placedByUID
            self.placedByRole = placedByRole
            self.wrappedKey = Data(wrappedKey)
            self.sealedReason = Data(sealedReason)
        }
    }

    package struct Shred: Codable {
        package var id: String
        package var caseID: String
        package var type: String
        package var shreddedAt: Int64
        package var epoch: Int64
        package var method: String
        package var authorityUID: Int64?
        package var authorityRole: String

        package init(
            id: String, caseID: String, type: String, shreddedAt: Int64, epoch: Int64, method: String,
            authorityUID: Int64?, authorityRole: String
        ) {
            self.id = id
            self.caseID = caseID
            self.type = type
            self.shreddedAt = shreddedAt
            self.epoch = epoch
            self.method = method
            self.authorityUID = authorityUID
            self.authorityRole = authorityRole
        }
    }

    /// Records shredded that the vault no longer holds, with when.
    package struct Ledger: Codable {
        package struct Entry: Codable {
            package var id: String
            package var shreddedAt: Int64

            package init(id: String, shreddedAt: Int64) {
                self.id = id
                self.shreddedAt = shreddedAt
            }
        }

        package var records: [Entry]

        package init(records: [Entry]) { self.records = records }
    }

    package struct Certificate: Codable {
        package var id: String
        package var caseID: String
        package var issuedAt: Int64
        /// The erase epoch whose destruction completes its erasure; 0 for a certificate of a data directory,
        /// whose shred overwrote in place.
        package var epoch: Int64
        package var completes: String?
        package var document: Data

        package init(id: String, caseID: String, issuedAt: Int64, epoch: Int64, completes: String?, document: [UInt8]) {
            self.id = id
            self.caseID = caseID
            self.issuedAt = issuedAt
            self.epoch = epoch
            self.completes = completes
            self.document = Data(document)
        }
    }

    package struct End: Codable {
        package var records: Int
        package var attachments: Int
        package var holds: Int
        package var certificates: Int

        package init(records: Int = 0, attachments: Int = 0, holds: Int = 0, certificates: Int = 0) {
            self.records = records
            self.attachments = attachments
            self.holds = holds
            self.certificates = certificates
        }
    }

    package static func encode(_ value: some Encodable) -> [UInt8] {
        // Every field is a string, a number, an array of numbers or bytes: encoding cannot fail.
        (try? Array(JSONEncoder().encode(value))) ?? []
    }

    package static func decode<T: Decodable>(_ type: T.Type, _ bytes: ArraySlice<UInt8>) throws(CaseVaultError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw Self.damaged("an item of it is not what its kind says")
        }
    }

    /// The body of a `recordAndBlob` item.
    package static func recordItem(_ record: Record, blob: some Collection<UInt8>) -> [UInt8] {
        let row = Self.encode(record)
        return UInt32(row.count).bigEndianBytes + row + Array(blob)
    }

    /// The record and its blob an item of kind `record` or `recordAndBlob` holds.
    package static func record(_ kind: Item, _ body: ArraySlice<UInt8>) throws(CaseVaultError) -> (Record, [UInt8]) {
        guard kind == .recordAndBlob else {
            let record = try Self.decode(Record.self, body)
            guard let blob = record.blob else { throw Self.damaged("a record without its blob") }
            return (record, Array(blob))
        }
        guard body.count >= 4 else { throw Self.damaged("a record's item too short") }
        let length = Int(UInt32(bigEndianBytes: body.prefix(4)))
        guard body.count - 4 >= length else { throw Self.damaged("a record's item too short") }
        let start = body.startIndex + 4
        let record = try Self.decode(Record.self, body[start..<(start + length)])
        guard record.blob == nil else { throw Self.damaged("a record with two blobs") }
        return (record, Array(body[(start + length)...]))
    }

    /// What a restore refuses a file with that does not open or does not hold what it should.
    package static func damaged(_ why: String) -> CaseVaultError {
        CaseVaultError(
            .invalidField, "the backup is damaged or was tampered with (\(why)); nothing was restored", field: "backup")
    }

    /// Seals one file: its start (`start`, the header and the stream's), then each item as a frame
    /// (`frame`), then the end (`end`), each to be written in that order.
    package final class Writer {
        private let header: [UInt8]
        private let stream: BackupSealer
        private var first = true
        /// What the file begins with: the header, then the stream's header.
        package let start: [UInt8]

        /// A file of `magic` (`LogicalBackup.magic` or `migrationMagic`) under a new key, made with
        /// `sealing` and kept in `keys` (where the backup retention destroys it), and the key the file's data
        /// keys and hold reasons' keys are wrapped under.
        package static func begin(
            magic: [UInt8], id: [UInt8], createdAt: Int64, sealing: SealingServices, keys: BackupKeyFile
        ) throws(CaseVaultError) -> (writer: Writer, wrapping: EpochKey) {
            let key = sealing.newBackupKey()
            try keys.add(id: id, createdAt: createdAt, key: key, sealing: sealing)
            let writer = try Writer(
                magic: magic, id: id, createdAt: createdAt, vaultCheck: sealing.rootKeyCheck, key: key)
            return (writer, try key.keyWrapping)
        }

        /// A file of `magic` (`LogicalBackup.magic` or `migrationMagic`) under `key`.
        package init(magic: [UInt8], id: [UInt8], createdAt: Int64, vaultCheck: Int64, key: BackupKey)
            throws(CaseVaultError)
        {
            self.header = magic + id + UInt64(createdAt).bigEndianBytes + vaultCheck.bigEndianBytes
            self.stream = try BackupSealer(key: key)
            self.start = self.header + self.stream.header
        }

        /// One item sealed as a frame; `storage-failure` for one longer than a restore accepts, before the
        /// file could be called written.
        package func frame(_ item: Item, _ body: [UInt8], final: Bool = false) throws(CaseVaultError) -> [UInt8] {
            guard 1 + body.count + BackupSealer.overhead <= LogicalBackup.maxMessage else {
                throw CaseVaultError(
                    .storageFailure,
                    "a record is larger than an item of the file may be (\(LogicalBackup.maxMessage) bytes); the file was not written whole"
                )
            }
            let sealed = self.stream.seal(
                [item.rawValue] + body, associatedData: self.first ? self.header : [], isFinal: final)
            self.first = false
            return UInt32(sealed.count).bigEndianBytes + sealed
        }

        /// The end item, the stream's last, and the zero length that ends the file.
        package func end(_ end: End) throws(CaseVaultError) -> [UInt8] {
            try self.frame(.end, LogicalBackup.encode(end), final: true) + [0, 0, 0, 0]
        }
    }
}

internal import CaseVaultCrypto
internal import Foundation

/// How records came to be destroyed.
public enum ShredMethod: String, Sendable, Codable, CaseIterable {
    /// `DELETE /v1/records/{id}`.
    case request = "shred_request"
    /// Filing the case's final agreement, which shreds its session notes.
    case finalAgreement = "final_agreement"
    /// Closing the case without an agreement, which shreds its session notes.
    case caseClosed = "case_closed"
    /// The retention sweep.
    case retentionSweep = "retention_sweep"
    /// Finished by crash recovery for records marked before orders were kept.
    case recovery = "recovery"
    /// A restore re-applying the live vault's shred ledger: a record shredded there stays shredded.
    case restoreLedger = "restore_ledger"
}

/// Who authorised an action: the peer's uid and the role the action was allowed under.
public struct Authority: Sendable, Equatable {
    /// `nil` for the daemon itself (a tool or a timer acting without a peer).
    public var uid: UInt32?
    public var role: String

    public init(uid: UInt32?, role: String) {
        self.uid = uid
        self.role = role
    }

    /// The daemon acting on its own (tests, tools).
    public static let daemon = Authority(uid: nil, role: "daemon")
}

/// Who ordered a shred and how: kept with the records from the moment they are marked, so that the
/// certificate names the right authority even when crash recovery finishes the shred.
public struct ShredOrder: Sendable, Equatable {
    public var method: ShredMethod
    public var authority: Authority
    /// A reason from a fixed vocabulary (`requestReasons` for a shred on request), never free text.
    public var reason: String?

    /// The reasons a shred on request may give (`DELETE /v1/records/{record_id}`): a fixed vocabulary, so
    /// that no free text (which could carry content) reaches a log line or a destruction certificate.
    public static let requestReasons: Set<String> = ["filed_in_error", "participant_request", "policy"]

    public init(method: ShredMethod, authority: Authority, reason: String? = nil) {
        self.method = method
        self.authority = authority
        self.reason = reason
    }
}

/// A destruction certificate: which records of which case were destroyed, when, how and on whose
/// authority, signed with the vault's Ed25519 key. Never content.
///
/// On the wire and on disk it is one JSON document, `{"certificate":{…},"signature":"<hex>"}`; the
/// signature covers the exact bytes of the `certificate` member, so it verifies offline with nothing but
/// the document and the vault's public key.
public struct DestructionCertificate: Sendable, Codable, Equatable {
    public struct Destroyed: Sendable, Codable, Equatable {
        public var recordID: String
        public var type: String

        enum CodingKeys: String, CodingKey {
            case recordID = "record_id"
            case type
        }
    }

    public struct AuthorisedBy: Sendable, Codable, Equatable {
        public var uid: UInt32?
        public var role: String

        public init(_ authority: Authority) {
            self.uid = authority.uid
            self.role = authority.role
        }
    }

    /// How the records' residue is made unreadable when a shred cannot overwrite it (a vault on PostgreSQL):
    /// by destroying the erase epoch's key their data keys were wrapped under. A shred's certificate states
    /// the epoch and the time by which every daemon will have destroyed it (`completeBy`); a second
    /// certificate, issued once they have, names the first (`completes`) and when the last did
    /// (`completedAt`). Absent from certificates of the local store, whose shreds overwrite in place.
    public struct Erasure: Sendable, Codable, Equatable {
        public var method: String
        public var epoch: UInt64
        public var completeBy: String?
        public var completes: String?
        public var completedAt: String?
        /// In a second certificate: the daemons whose destruction of the epoch's key (or an older one's) rests
        /// on an operator's word that their key file was destroyed with their host (`casevaultctl daemon
        /// forget`), not on the daemon overwriting it; absent when every daemon destroyed its own.
        public var attested: [String]?

        /// The method of every erasure: the epoch's key destroyed in every daemon's epoch key file.
        public static let keyDestruction = "key_destruction"

        public init(epoch: UInt64, completeBy: String) {
            self.method = Self.keyDestruction
            self.epoch = epoch
            self.completeBy = completeBy
        }

        public init(epoch: UInt64, completes certificateID: String, completedAt: String, attested: [String] = []) {
            self.method = Self.keyDestruction
            self.epoch = epoch
            self.completes = certificateID
            self.completedAt = completedAt
            self.attested = attested.isEmpty ? nil : attested.sorted()
        }

        enum CodingKeys: String, CodingKey {
            case method, epoch
            case completeBy = "complete_by"
            case completes
            case completedAt = "completed_at"
            case attested
        }
    }

    public var version: Int
    public var certificateID: String
    public var caseID: String
    public var issuedAt: String
    public var method: String
    public var reason: String?
    public var authorisedBy: AuthorisedBy
    public var records: [Destroyed]
    public var erasure: Erasure?

    enum CodingKeys: String, CodingKey {
        case erasure
        case version
        case certificateID = "certificate_id"
        case caseID = "case_id"
        case issuedAt = "issued_at"
        case method, reason
        case authorisedBy = "authorised_by"
        case records
    }

    /// Version 1 without `erasure`, 2 with it (`version(of:)`).
    public init(
        id: String, caseID: CaseID, issuedAt: String, order: ShredOrder, records: [(RecordID, RecordType)],
        erasure: Erasure? = nil
    ) {
        self.version = Self.version(of: erasure)
        self.erasure = erasure
        self.certificateID = id
        self.caseID = caseID.rawValue
        self.issuedAt = issuedAt
        self.method = order.method.rawValue
        self.reason = order.reason
        self.authorisedBy = AuthorisedBy(order.authority)
        self.records = records.map { Destroyed(recordID: $0.0.rawValue, type: $0.1.rawValue) }.sorted {
            $0.recordID < $1.recordID
        }
    }

    /// The version a certificate with `erasure` has: 1 without one (the local store), 2 with one, 3 when
    /// its completion rests in part on an operator's word (`attested`), which a reader of version 2 would
    /// not know to look for.
    public static func version(of erasure: Erasure?) -> Int {
        guard let erasure else { return 1 }
        return erasure.attested == nil ? 2 : 3
    }

    /// The signed document: the certificate's canonical bytes (sorted keys, no spaces) and the signature.
    public func document(signedWith sign: ([UInt8]) -> [UInt8]) -> [UInt8] {
        let body = self.canonicalBytes()
        return Self.frame(body, signatureHex: Hex.encode(sign(body)))
    }

    /// The certificate's canonical bytes: the bytes `JSONEncoder` writes with `.sortedKeys` and
    /// `.withoutEscapingSlashes` (absent optionals left out, no spaces), written by hand (`JSONObjectWriter`).
    /// A sweep certifies a thousand cases of a hundred records each, and the encoder took three times as long
    /// as the signature over what it wrote (151 µs and 50 µs a certificate of a hundred records, here; by
    /// hand 31–33 µs: `casevault-bench --reads-only`, its `certify` line). The tests hold the two byte for byte
    /// equal (`CertificateTests`).
    func canonicalBytes() -> [UInt8] {
        // Members in the order `.sortedKeys` gives them.
        var writer = JSONObjectWriter(capacity: 256 + 80 * self.records.count)
        writer.object("authorised_by") { by in
            by.string("role", self.authorisedBy.role)
            if let uid = self.authorisedBy.uid { by.integer("uid", uid) }
        }
        writer.string("case_id", self.caseID)
        writer.string("certificate_id", self.certificateID)
        if let erasure = self.erasure {
            writer.object("erasure") { member in
                if let attested = erasure.attested { member.strings("attested", attested) }
                if let completeBy = erasure.completeBy { member.string("complete_by", completeBy) }
                if let completedAt = erasure.completedAt { member.string("completed_at", completedAt) }
                if let completes = erasure.completes { member.string("completes", completes) }
                member.integer("epoch", erasure.epoch)
                member.string("method", erasure.method)
            }
        }
        writer.string("issued_at", self.issuedAt)
        writer.string("method", self.method)
        if let reason = self.reason { writer.string("reason", reason) }
        writer.objects("records", self.records) { record, destroyed in
            record.string("record_id", destroyed.recordID)
            record.string("type", destroyed.type)
        }
        writer.integer("version", self.version)
        return writer.finish()
    }

    static func frame(_ body: [UInt8], signatureHex: String) -> [UInt8] {
        Array(#"{"certificate":"#.utf8) + body + Array(#","signature":""#.utf8) + Array(signatureHex.utf8)
            + Array(#""}"#.utf8)
    }

    /// Verifies a document offline: it must be exactly `{"certificate":{…},"signature":"<hex>"}` and the
    /// signature must be the vault's over the certificate's bytes. Returns the certificate, or `nil` when
    /// anything about it is wrong.
    public static func verify(document: [UInt8], publicKey: [UInt8]) -> DestructionCertificate? {
        guard case .object(let members) = JSONValue.parse(document) ?? .null,
            Set(members.keys) == ["certificate", "signature"],
            case .string(let signatureHex) = members["signature"] ?? .null, let signature = Hex.decode(signatureHex),
            let body = JSONValue.rawMember("certificate", of: document),
            // Exactly the shape the daemon writes: nothing added, nothing reordered.
            document == Self.frame(Array(body), signatureHex: signatureHex),
            SigningKey.isValidSignature(signature, for: Array(body), publicKey: publicKey)
        else { return nil }
        return try? JSONDecoder().decode(DestructionCertificate.self, from: Data(body))
    }
}

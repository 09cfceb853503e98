internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Foundation

/// One entry of the audit log (docs/API.md): who asked for what and what came of it. Never content, never a
/// name a client typed: ids, uids, roles, the route and the result.
///
/// On disk each entry is one line, `<hash> <mac> <json>\n`. `hash` is 64 lowercase hex digits of
/// BLAKE2b-256(previous entry's hash ‖ the JSON bytes exactly as written); the first entry's previous hash
/// is 32 zero bytes. Changing, removing or reordering any entry breaks every hash after it. `mac` is 64 hex
/// digits of a keyed BLAKE2b of the hash under the chain subkey of the root key, so nobody without the
/// root key can add an entry that checks out; it is `-` for an entry written while the vault was sealed
/// (no key exists then), and only what a sealed daemon does may be written so. The Ed25519-signed
/// checkpoints let anyone holding the public key check the chain up to the last one; the anchor in the
/// index (`AuditAnchor`) says how far the log had got.
public struct AuditEntry: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// The audit key: the public key later checkpoints are signed with. Written each time the daemon
        /// has its keys (at start, or at unseal).
        case key
        /// A request that reached its route, written before the route acts: if it cannot be written, the
        /// route does not run.
        case request
        /// What came of a `request` entry (`request` names it).
        case result
        /// A request refused before any route ran (no such path or method), with its result.
        case refused
        /// A signed checkpoint over the chain so far.
        case checkpoint
    }

    public var seq: UInt64
    public var kind: Kind
    /// Milliseconds since the Unix epoch.
    public var time: Int64
    /// The number of the request within this run of the daemon: ties a `result` to its `request`.
    public var request: UInt64?
    public var uid: UInt32?
    public var roles: [String]?
    /// The route: method and path template (`POST /v1/cases/{case_id}/records`).
    public var action: String?
    /// Path parameters that are ids (`case_id`, `record_id`, …), and the id a request created.
    public var ids: [String: String]?
    /// The HTTP status of a `result` or `refused` entry.
    public var status: Int?
    /// The problem code when the request failed.
    public var problem: String?
    /// `key`: the Ed25519 public key, hex.
    public var publicKey: String?
    /// `checkpoint`: the signature over the sequence number and the previous entry's hash, hex.
    public var signature: String?
    /// A `refused` summary (problem `audit-suppressed`): how many requests of this uid were answered
    /// without entries since its last entry, because it had used up its share (`AuditBudget`).
    public var suppressed: UInt64?
    /// `checkpoint`: why it was taken (`interval`, `shutdown`, `seal`, `rotate`). `key`: what the daemon
    /// found when it took its key, when that was a break in the log that the operator accepted (`break: …`).
    public var reason: String?
    /// A `rotate` checkpoint, the first entry of each file after the first: the hash of the entry before
    /// it (the last of the file before, hex), so that a walk can begin at this file once older files are
    /// gone; its signature covers that hash.
    public var previous: String?
    /// A `rotate` checkpoint: the first entry the log still keeps. Older files were removed by the
    /// retention (`audit.keep_files`); any other file missing is a break.
    public var firstKept: UInt64?

    enum CodingKeys: String, CodingKey {
        case seq, kind, time, request, uid, roles, action, ids, status, problem, suppressed, previous
        case publicKey = "public_key"
        case firstKept = "first_kept"
        case signature, reason
    }

    public init(seq: UInt64 = 0, kind: Kind, time: Int64) {
        self.seq = seq
        self.kind = kind
        self.time = time
    }
}

/// The chain's arithmetic, shared by the writer and the verifier.
public enum AuditChain {
    public static let hashByteCount = 32
    public static let genesis = [UInt8](repeating: 0, count: hashByteCount)
    static let checkpointDomain = Array("casevault.audit.checkpoint.v1".utf8)
    static let headDomain = Array("casevault.audit.head.v1".utf8)
    static let macDomain = Array("casevault.audit.entry.v1".utf8)
    /// The reason of the checkpoint that begins each file after the first.
    public static let rotateReason = "rotate"
    /// How the reason of a key entry that records an accepted break begins.
    public static let breakPrefix = "break: "

    /// The routes a sealed daemon serves: the only requests that may stand in the log without a MAC.
    public static let servedWhileSealed: Set<String> = [
        "GET /v1/health", "GET /v1/admin/status", "GET /v1/metrics", "POST /v1/admin/init", "POST /v1/admin/unseal",
        "POST /v1/admin/seal",
    ]

    /// The hash of an entry whose JSON is `json`, following the entry whose hash is `previous`.
    public static func hash(previous: [UInt8], json: some Collection<UInt8>) -> [UInt8] {
        if let hash = json.withContiguousStorageIfAvailable({
            Hash.blake2b(previous, then: UnsafeRawBufferPointer($0), length: hashByteCount)
        }) {
            return hash
        }
        return Hash.blake2b(previous, then: Array(json), length: hashByteCount)
    }

    /// What a checkpoint at `seq` signs: the sequence number and the hash of the entry before it.
    static func checkpointMessage(seq: UInt64, previous: [UInt8]) -> [UInt8] {
        checkpointDomain + seq.bigEndianBytes + previous
    }

    /// What the head file signs: the last checkpoint's sequence number and its own hash.
    static func headMessage(seq: UInt64, hash: [UInt8]) -> [UInt8] {
        headDomain + seq.bigEndianBytes + hash
    }

    /// The entry's JSON as written: sorted keys, no whitespace, no escaped slashes; what `JSONEncoder`
    /// with `.sortedKeys` and `.withoutEscapingSlashes` writes for the same entry (a test holds the two to
    /// the same bytes). Written by hand because it runs twice for every request, where Foundation's
    /// encoder (a fresh encoder, a container tree, a `Data`) cost most of the audit log's share of a put.
    package static func encode(_ entry: AuditEntry) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        Self.encode(entry, into: &out)
        return out
    }

    /// `encode`, appended to `out`.
    static func encode(_ entry: AuditEntry, into out: inout [UInt8]) {
        var first = true
        func key(_ name: StaticString) {
            out.append(first ? UInt8(ascii: "{") : UInt8(ascii: ","))
            first = false
            out.append(UInt8(ascii: "\""))
            name.withUTF8Buffer { out.append(contentsOf: $0) }
            out.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
        }
        func number(_ value: some BinaryInteger) {
            JSONText.appendInteger(value, to: &out)
        }
        func string(_ text: String) {
            JSONText.appendString(text, to: &out)
        }
        // The keys in the order `.sortedKeys` gives them.
        if let action = entry.action {
            key("action")
            string(action)
        }
        if let kept = entry.firstKept {
            key("first_kept")
            number(kept)
        }
        if let ids = entry.ids {
            key("ids")
            out.append(UInt8(ascii: "{"))
            for (index, name) in ids.keys.sorted().enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                string(name)
                out.append(UInt8(ascii: ":"))
                string(ids[name] ?? "")
            }
            out.append(UInt8(ascii: "}"))
        }
        key("kind")
        string(entry.kind.rawValue)
        if let previous = entry.previous {
            key("previous")
            string(previous)
        }
        if let problem = entry.problem {
            key("problem")
            string(problem)
        }
        if let publicKey = entry.publicKey {
            key("public_key")
            string(publicKey)
        }
        if let reason = entry.reason {
            key("reason")
            string(reason)
        }
        if let request = entry.request {
            key("request")
            number(request)
        }
        if let roles = entry.roles {
            key("roles")
            out.append(UInt8(ascii: "["))
            for (index, role) in roles.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                string(role)
            }
            out.append(UInt8(ascii: "]"))
        }
        key("seq")
        number(entry.seq)
        if let signature = entry.signature {
            key("signature")
            string(signature)
        }
        if let status = entry.status {
            key("status")
            number(status)
        }
        if let suppressed = entry.suppressed {
            key("suppressed")
            number(suppressed)
        }
        key("time")
        number(entry.time)
        if let uid = entry.uid {
            key("uid")
            number(uid)
        }
        out.append(UInt8(ascii: "}"))
    }

    /// What an entry's MAC covers: its hash, which covers every entry before it.
    static func macMessage(_ hash: [UInt8]) -> [UInt8] {
        macDomain + hash
    }

    /// Appends the line of `entry` after the entry whose hash is `previous`, keyed by `signer` (`-` without
    /// one), to `out`, and returns the new hash. The JSON is written in place and hashed there, and the hash
    /// and MAC are spelled in front of it: no copy of the line is made on the way.
    static func appendLine(_ entry: AuditEntry, previous: [UInt8], signer: AuditSigner?, to out: inout [UInt8])
        -> [UInt8]
    {
        let start = out.count
        let macStart = start + hashByteCount * 2 + 1
        let jsonStart = macStart + (signer == nil ? 1 : hashByteCount * 2) + 1
        out.append(contentsOf: repeatElement(UInt8(ascii: " "), count: jsonStart - start))
        Self.encode(entry, into: &out)
        let hash = Self.hash(previous: previous, json: out[jsonStart...])
        out.append(UInt8(ascii: "\n"))
        Hex.write(hash, over: &out, at: start)
        if let signer {
            let mac = signer.mac(Self.macMessage(hash))
            // The room left for it holds one MAC of a hash's length, and no more: a longer one would run
            // over the JSON already hashed.
            precondition(mac.count == hashByteCount, "an audit MAC is 32 bytes")
            Hex.write(mac, over: &out, at: macStart)
        } else {
            out[macStart] = UInt8(ascii: "-")
        }
        return hash
    }
}

/// The head file (`audit/head`): the last checkpoint's sequence number and hash, signed. It lives beside
/// the log and is replaced atomically at each checkpoint, so that cutting the log short before its last
/// checkpoint is noticed.
public struct AuditHead: Codable, Sendable, Equatable {
    public var seq: UInt64
    public var hash: String
    public var signature: String
}

internal import CaseVaultCore
internal import CaseVaultCrypto
internal import Foundation

/// One line of the log, taken apart strictly: 64 lowercase hex digits, one space, 64 more or `-`, one space,
/// a JSON object. Any other shape (upper-case hex, a second space, a stray byte) is refused, so that every
/// byte of the file is covered by the hash, the MAC or the shape.
enum AuditLine {
    struct Tail {
        var seq: UInt64
        var hash: [UInt8]
    }

    struct Parsed {
        var hash: [UInt8]
        /// `nil` for an entry written without a key (`-`).
        var mac: [UInt8]?
        var json: ArraySlice<UInt8>
        var entry: AuditEntry
    }

    static let hexLength = AuditChain.hashByteCount * 2

    static func parse(_ line: ArraySlice<UInt8>) -> Parsed? {
        guard line.count > hexLength + 4 else { return nil }
        let hexEnd = line.index(line.startIndex, offsetBy: hexLength)
        guard line[hexEnd] == UInt8(ascii: " "), let hash = Self.hex(line[..<hexEnd]) else { return nil }
        let macStart = line.index(after: hexEnd)
        let mac: [UInt8]?
        let jsonStart: Int
        if line[macStart] == UInt8(ascii: "-") {
            mac = nil
            jsonStart = macStart + 1
        } else {
            guard line.count > 2 * hexLength + 4, let value = Self.hex(line[macStart..<(macStart + hexLength)]) else {
                return nil
            }
            mac = value
            jsonStart = macStart + hexLength
        }
        guard line[jsonStart] == UInt8(ascii: " ") else { return nil }
        let json = line[(jsonStart + 1)...]
        guard json.first == UInt8(ascii: "{"), json.last == UInt8(ascii: "}"),
            let entry = try? JSONDecoder().decode(AuditEntry.self, from: Data(json))
        else { return nil }
        return Parsed(hash: hash, mac: mac, json: json, entry: entry)
    }

    /// 64 lowercase hex digits, and nothing else.
    private static func hex(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        guard
            text.allSatisfy({
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                    || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0)
            })
        else { return nil }
        return Hex.decode(String(decoding: text, as: UTF8.self))
    }
}

/// Walks the chain one entry at a time: the same rules for `audit verify` (from the first entry) and for
/// the daemon's check at attach (from the anchor).
struct AuditWalker {
    /// The hash and number of the last entry that checked out.
    var previous: [UInt8]
    var seq: UInt64
    /// Checks the MACs, when given; the checkpoints are checked against its public key.
    let signer: AuditSigner?
    /// The key checkpoints are signed with: pinned, or the first key entry's.
    var key: [UInt8]?
    let keyPinned: Bool
    var checkpoints = 0
    var lastCheckpoint: UInt64?
    var unkeyed: UInt64 = 0
    /// Key entries that record a break the operator accepted.
    var breaks: [UInt64] = []
    /// The requests of the current run of entries without a MAC, by number: their routes.
    var sealedRequests: [UInt64: String] = [:]
    /// Right after a `seal` checkpoint: the seal's own success, whose request was keyed, may follow
    /// without a MAC, once.
    var sealSuccessAllowed = false

    /// The first entry the log still keeps, as the newest `rotate` checkpoint walked says.
    var firstKept: UInt64?

    init(previous: [UInt8], seq: UInt64, signer: AuditSigner?, expectedKey: [UInt8]?) {
        self.previous = previous
        self.seq = seq
        self.signer = signer
        self.key = signer?.publicKey ?? expectedKey
        self.keyPinned = self.key != nil
    }

    /// An entry without a MAC stands for what a sealed daemon did: it answered health, status, metrics, init, unseal
    /// and seal, and refused every other route (and the seal that sealed it succeeded). So a key or a
    /// checkpoint, a success of any other route, a result of no request it took, or a refusal of a route,
    /// cannot be one: such an entry was forged.
    mutating func checkUnkeyed(_ entry: AuditEntry) -> String? {
        let forged = "the entry was forged: only a daemon holding the root key writes"
        switch entry.kind {
        case .key, .checkpoint:
            return "a \(entry.kind.rawValue) entry without a MAC: \(forged) one"
        case .request:
            guard let number = entry.request, let action = entry.action else {
                return "a request without a MAC names no request number or route: \(forged) it"
            }
            self.sealedRequests[number] = action
        case .result:
            guard let number = entry.request, let status = entry.status else {
                return "a result without a MAC names no request or status: \(forged) it"
            }
            if let action = self.sealedRequests[number] {
                if status < 400, !AuditChain.servedWhileSealed.contains(action) {
                    return "a success without a MAC for a route a sealed daemon refuses: \(forged) it"
                }
            } else if status < 400 {
                guard self.sealSuccessAllowed else {
                    return "a success without a MAC for a request made while the vault was unsealed: \(forged) it"
                }
                self.sealSuccessAllowed = false
            }
        case .refused:
            guard entry.action == "unrouted", (entry.status ?? 0) >= 400 else {
                return "a refusal without a MAC that names a route or a success: \(forged) it"
            }
        }
        self.unkeyed += 1
        return nil
    }

    /// Takes `parsed` as the first entry of a walk from the start of what the log keeps: entry 1, or the
    /// `rotate` checkpoint that begins a file once the files before it are gone, whose signed `previous`
    /// stands in for them. The reason when it can be neither.
    mutating func begin(_ parsed: AuditLine.Parsed) -> String? {
        let entry = parsed.entry
        guard entry.seq != 1 else { return nil }
        guard entry.seq > 1 else { return "the log's first entry has the number 0; 1 was expected" }
        guard entry.kind == .checkpoint, entry.reason == AuditChain.rotateReason,
            let text = entry.previous, let previous = Hex.decode(text), previous.count == AuditChain.hashByteCount
        else {
            return
                "the log begins at entry \(entry.seq), which does not begin a rotated file: entries 1 to \(entry.seq - 1) are missing"
        }
        if self.key == nil, let text = entry.publicKey, let key = Hex.decode(text), key.count == 32 { self.key = key }
        self.previous = previous
        self.seq = entry.seq - 1
        return nil
    }

    /// Checks `parsed` as the next entry; the reason when it does not check out.
    mutating func step(_ parsed: AuditLine.Parsed) -> String? {
        guard AuditChain.hash(previous: self.previous, json: parsed.json) == parsed.hash else {
            return "the entry's hash does not follow from the entry before it: the entry was altered, removed or moved"
        }
        let entry = parsed.entry
        guard entry.seq == self.seq &+ 1 else {
            return "the entry's number is \(entry.seq); \(self.seq &+ 1) was expected"
        }
        if let mac = parsed.mac {
            if let signer, !Memory.constantTimeEquals(signer.mac(AuditChain.macMessage(parsed.hash)), mac) {
                return "the entry's MAC does not verify: it was not written by a daemon holding this vault's root key"
            }
            self.sealedRequests = [:]
            self.sealSuccessAllowed = entry.kind == .checkpoint && entry.reason == "seal"
        } else if let reason = self.checkUnkeyed(entry) {
            return reason
        }
        switch entry.kind {
        case .key:
            guard let text = entry.publicKey, let publicKey = Hex.decode(text), publicKey.count == 32 else {
                return "the key entry does not hold an Ed25519 public key"
            }
            if let key, key != publicKey {
                return
                    "the log names another signing key than \(self.keyPinned ? "the daemon's" : "its first key entry")"
            }
            self.key = publicKey
            if entry.reason?.hasPrefix(AuditChain.breakPrefix) == true {
                self.breaks.append(entry.seq)
                // An accepted break with files missing: the log now begins where the entry says.
                if let kept = entry.firstKept { self.firstKept = kept }
            }
        case .checkpoint:
            guard let key else { return "a checkpoint comes before any key entry" }
            guard let text = entry.signature, let signature = Hex.decode(text),
                SigningKey.isValidSignature(
                    signature, for: AuditChain.checkpointMessage(seq: entry.seq, previous: self.previous),
                    publicKey: key)
            else {
                return "the checkpoint's signature does not verify"
            }
            if entry.reason == AuditChain.rotateReason {
                guard entry.previous == Hex.encode(self.previous), entry.publicKey == Hex.encode(key),
                    let kept = entry.firstKept,
                    kept >= 1, kept <= entry.seq, kept >= (self.firstKept ?? 1)
                else {
                    return
                        "the rotate checkpoint does not name the entry before it, the signing key and what the log keeps"
                }
                self.firstKept = kept
            }
            self.checkpoints += 1
            self.lastCheckpoint = entry.seq
        case .request, .result, .refused:
            break
        }
        self.previous = parsed.hash
        self.seq = entry.seq
        return nil
    }
}

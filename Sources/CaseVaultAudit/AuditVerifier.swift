internal import CaseVaultCore
internal import CaseVaultCrypto
public import CaseVaultStore
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
            guard line.count > 2 * hexLength + 4, let value = Self.hex(line[macStart..<(macStart + hexLength)]) else { return nil }
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
        guard text.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) })
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

    init(previous: [UInt8], seq: UInt64, signer: AuditSigner?, expectedKey: [UInt8]?) {
        self.previous = previous
        self.seq = seq
        self.signer = signer
        self.key = signer?.publicKey ?? expectedKey
        self.keyPinned = self.key != nil
    }

    /// An entry without a MAC stands for what a sealed daemon did: it answered health, status, init, unseal
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

    /// Checks `parsed` as the next entry; the reason when it does not check out.
    mutating func step(_ parsed: AuditLine.Parsed) -> String? {
        guard AuditChain.hash(previous: self.previous, json: parsed.json) == parsed.hash else {
            return "the entry's hash does not follow from the entry before it: the entry was altered, removed or moved"
        }
        let entry = parsed.entry
        guard entry.seq == self.seq + 1 else {
            return "the entry's number is \(entry.seq); \(self.seq + 1) was expected"
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
                return "the log names another signing key than \(self.keyPinned ? "the daemon's" : "its first key entry")"
            }
            self.key = publicKey
            if entry.reason?.hasPrefix(AuditChain.breakPrefix) == true { self.breaks.append(entry.seq) }
        case .checkpoint:
            guard let key else { return "a checkpoint comes before any key entry" }
            guard let text = entry.signature, let signature = Hex.decode(text),
                SigningKey.isValidSignature(signature, for: AuditChain.checkpointMessage(seq: entry.seq, previous: self.previous), publicKey: key)
            else {
                return "the checkpoint's signature does not verify"
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

/// What `audit verify` found.
public struct AuditReport: Codable, Sendable, Equatable {
    public struct Problem: Codable, Sendable, Equatable {
        /// The number the first bad entry has, or should have had (the one after the last good entry).
        public var seq: UInt64
        /// Its line in the file (1-based) and the byte where that line starts.
        public var line: Int
        public var offset: Int
        public var reason: String

        public init(seq: UInt64, line: Int, offset: Int, reason: String) {
            self.seq = seq
            self.line = line
            self.offset = offset
            self.reason = reason
        }
    }

    public var ok: Bool
    /// Entries that check out, from the first.
    public var entries: UInt64
    public var checkpoints: Int
    /// The last signed checkpoint, and the entries after it that no signature covers yet.
    public var lastCheckpoint: UInt64?
    public var unsignedEntries: UInt64
    /// The key the log's checkpoints are signed with, hex.
    public var publicKey: String?
    /// Whether every entry's MAC was checked (with the root key's chain subkey); without the root key only
    /// the hashes and signatures are.
    public var macsChecked: Bool
    /// Entries written while the vault was sealed, without a MAC.
    public var unkeyedEntries: UInt64
    /// The entry the index's anchor names, when it was compared.
    public var anchor: UInt64?
    /// Key entries that record a break an operator accepted (`casevaultd --accept-audit-break`).
    public var breaks: [UInt64]
    public var firstBad: Problem?

    enum CodingKeys: String, CodingKey {
        case ok, entries, checkpoints, anchor, breaks
        case lastCheckpoint = "last_checkpoint"
        case unsignedEntries = "unsigned_entries"
        case publicKey = "public_key"
        case macsChecked = "macs_checked"
        case unkeyedEntries = "unkeyed_entries"
        case firstBad = "first_bad"
    }
}

/// Recomputes the chain and checks every MAC, signature and the anchor: the same code for the daemon
/// (online) and for `casevaultctl audit verify --offline` on a copy of the data directory.
public enum AuditVerifier {
    /// Verifies `log` (the file's bytes) against `head` (the head file's bytes, `nil` when absent). With
    /// `signer` (the vault's, from its root key), every MAC is checked and the checkpoints must be signed
    /// with its key; without it, `expectedKey` pins the checkpoints' key. With `anchor` (the index's), the
    /// log must hold the entry it names: a log cut short, replaced or deleted fails.
    public static func verify(
        log: [UInt8], head: [UInt8]?, expectedKey: [UInt8]? = nil, signer: AuditSigner? = nil, anchor: AuditAnchor? = nil
    ) -> AuditReport {
        var walker = AuditWalker(previous: AuditChain.genesis, seq: 0, signer: signer, expectedKey: expectedKey)
        var report = AuditReport(
            ok: true, entries: 0, checkpoints: 0, lastCheckpoint: nil, unsignedEntries: 0,
            publicKey: walker.key.map { Hex.encode($0) }, macsChecked: signer != nil, unkeyedEntries: 0,
            anchor: anchor?.seq, breaks: [], firstBad: nil
        )
        var hashes: [UInt8] = []
        hashes.reserveCapacity(log.count / 6)
        var offset = 0
        var lineNumber = 0
        // The file is zero-filled past its last entry (it grows in steps); the entries end before that.
        let end = log.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0

        /// What the walk found so far, into the report.
        func tally() {
            report.entries = walker.seq
            report.checkpoints = walker.checkpoints
            report.lastCheckpoint = walker.lastCheckpoint
            report.unkeyedEntries = walker.unkeyed
            report.breaks = walker.breaks
            report.unsignedEntries = walker.seq - (walker.lastCheckpoint ?? 0)
        }

        func fail(_ reason: String) -> AuditReport {
            report.ok = false
            tally()
            report.firstBad = AuditReport.Problem(seq: walker.seq + 1, line: lineNumber, offset: offset, reason: reason)
            return report
        }

        while offset < end {
            lineNumber += 1
            guard let newline = log[offset..<end].firstIndex(of: UInt8(ascii: "\n")) else {
                return fail("the last entry is incomplete: the log was cut short or a write was torn")
            }
            guard let parsed = AuditLine.parse(log[offset..<newline]) else {
                return fail("the line is not an entry (its shape was altered)")
            }
            if let reason = walker.step(parsed) { return fail(reason) }
            if parsed.entry.kind == .key { report.publicKey = parsed.entry.publicKey }
            hashes += parsed.hash
            offset = newline + 1
        }
        tally()

        func hash(of seq: UInt64) -> [UInt8]? {
            guard seq >= 1, seq <= walker.seq else { return nil }
            let index = Int(seq - 1) * AuditChain.hashByteCount
            return Array(hashes[index..<index + AuditChain.hashByteCount])
        }

        // The anchor: how far the index says the log had got.
        lineNumber += 1
        if let anchor, anchor.seq > 0 {
            guard anchor.seq <= walker.seq else {
                return fail(
                    "the log ends at entry \(walker.seq) but the index's anchor names entry \(anchor.seq): "
                        + "entries \(walker.seq + 1) to \(anchor.seq) at least were cut away, or the log was replaced"
                )
            }
            guard hash(of: anchor.seq) == anchor.hash else {
                return fail("entry \(anchor.seq) is not the one the index's anchor names: the log was replaced")
            }
        }

        // The head: the last checkpoint, kept apart, so that cutting the log before it shows.
        guard let head else {
            if report.checkpoints > 0 {
                return fail("the head file (audit/head) is missing, though the log has checkpoints")
            }
            return report
        }
        guard let parsedHead = try? JSONDecoder().decode(AuditHead.self, from: Data(head)),
            let headHash = Hex.decode(parsedHead.hash), headHash.count == AuditChain.hashByteCount,
            let headSignature = Hex.decode(parsedHead.signature), head.last == UInt8(ascii: "\n"),
            Self.canonical(parsedHead) == head
        else {
            return fail("the head file (audit/head) is damaged")
        }
        guard let key = walker.key else { return fail("the head file names a checkpoint but the log holds no key entry") }
        guard SigningKey.isValidSignature(headSignature, for: AuditChain.headMessage(seq: parsedHead.seq, hash: headHash), publicKey: key) else {
            return fail("the head file's signature does not verify")
        }
        guard parsedHead.seq <= walker.seq else {
            return fail("the log ends at entry \(walker.seq) but its last checkpoint is entry \(parsedHead.seq): the log was cut short")
        }
        guard hash(of: parsedHead.seq) == headHash else {
            return fail("entry \(parsedHead.seq) is not the checkpoint the head file names")
        }
        return report
    }

    /// What is wrong with `log` (the file's bytes) against `anchor`, without the root key: whether it holds
    /// the entry the anchor names, where it names it. `nil` when it does. For `casevaultctl doctor`; a start
    /// also checks every entry after it under the root key.
    public static func anchorProblem(log: [UInt8], anchor: AuditAnchor) -> String? {
        let end = log.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0
        guard anchor.seq > 0 else { return nil }
        guard anchor.offset >= 0, anchor.offset < end else {
            let entries = log[..<end].reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
            return "the log ends at entry \(entries) but the index's anchor names entry \(anchor.seq): "
                + "entries \(entries + 1) to \(anchor.seq) at least were cut away, or the log was replaced"
        }
        let start = Int(anchor.offset)
        let newline = log[start..<end].firstIndex(of: UInt8(ascii: "\n")) ?? end
        guard let parsed = AuditLine.parse(log[start..<newline]), parsed.entry.seq == anchor.seq, parsed.hash == anchor.hash else {
            return "entry \(anchor.seq) is not the one the index's anchor names: the log was replaced"
        }
        return nil
    }

    /// The head file exactly as the daemon writes it: any other spelling of the same values is refused.
    static func canonical(_ head: AuditHead) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(head)) ?? Data()) + [UInt8(ascii: "\n")]
    }
}

public import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Foundation

#if canImport(Glibc)
internal import Glibc
#endif

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

/// What `audit verify` found.
public struct AuditReport: Codable, Sendable, Equatable {
    public struct Problem: Codable, Sendable, Equatable {
        /// The number the first bad entry has, or should have had (the one after the last good entry).
        public var seq: UInt64
        /// The file of the log it is in (`log`, or a rotated `log.<first entry>`), when it is in one.
        public var file: String?
        /// Its line in that file (1-based) and the byte where that line starts.
        public var line: Int
        public var offset: Int
        public var reason: String

        public init(seq: UInt64, file: String? = nil, line: Int, offset: Int, reason: String) {
            self.seq = seq
            self.file = file
            self.line = line
            self.offset = offset
            self.reason = reason
        }
    }

    public var ok: Bool
    /// The number of the last entry that checks out.
    public var entries: UInt64
    /// The first entry the log keeps (1 unless the retention removed older files), and how many files
    /// were read.
    public var firstEntry: UInt64
    public var files: Int
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
        case ok, entries, files, checkpoints, anchor, breaks
        case firstEntry = "first_entry"
        case lastCheckpoint = "last_checkpoint"
        case unsignedEntries = "unsigned_entries"
        case publicKey = "public_key"
        case macsChecked = "macs_checked"
        case unkeyedEntries = "unkeyed_entries"
        case firstBad = "first_bad"
    }
}

/// One file of the log for `AuditVerifier`, read when the walk reaches it: only one file is in memory
/// at a time.
public struct AuditSegment: Sendable {
    public var name: String
    /// A rotated file's first entry, from its name; `nil` for `log`.
    public var first: UInt64?
    public var load: @Sendable () throws(CaseVaultError) -> [UInt8]

    public init(name: String, first: UInt64?, load: @escaping @Sendable () throws(CaseVaultError) -> [UInt8]) {
        self.name = name
        self.first = first
        self.load = load
    }

    /// The log's files in `directory`, each read when its turn comes.
    public static func files(in directory: String) throws(CaseVaultError) -> [AuditSegment] {
        try AuditFiles.list(directory).map { file in
            let path = directory + "/" + file.name
            return AuditSegment(name: file.name, first: file.first) { () throws(CaseVaultError) in
                try PosixFile(path: path, flags: O_RDONLY).readAll()
            }
        }
    }
}

/// Recomputes the chain and checks every MAC, signature and the anchor: the same code for the daemon
/// (online) and for `casevaultctl audit verify --offline` on a copy of the data directory.
public enum AuditVerifier {
    /// Verifies one file's bytes as the whole log.
    public static func verify(
        log: [UInt8], head: [UInt8]?, expectedKey: [UInt8]? = nil, signer: AuditSigner? = nil,
        anchor: AuditAnchor? = nil
    ) -> AuditReport {
        Self.verify(
            segments: [AuditSegment(name: AuditFiles.current, first: nil) { () throws(CaseVaultError) in log }],
            head: head, expectedKey: expectedKey, signer: signer, anchor: anchor
        )
    }

    /// Verifies the log's files, in order, as one chain against `head` (the head file's bytes, `nil` when
    /// absent). With `signer` (the vault's, from its root key), every MAC is checked and the checkpoints
    /// must be signed with its key; without it, `expectedKey` pins the checkpoints' key. With `anchor` (the
    /// index's), the log must hold the entry it names: a log cut short, replaced or deleted fails. The
    /// chain must run unbroken from entry 1, or from the first entry the retention kept, to the end.
    public static func verify(
        segments: [AuditSegment], head: [UInt8]?, expectedKey: [UInt8]? = nil, signer: AuditSigner? = nil,
        anchor: AuditAnchor? = nil
    ) -> AuditReport {
        var walker = AuditWalker(previous: AuditChain.genesis, seq: 0, signer: signer, expectedKey: expectedKey)
        var report = AuditReport(
            ok: true, entries: 0, firstEntry: 1, files: 0, checkpoints: 0, lastCheckpoint: nil, unsignedEntries: 0,
            publicKey: walker.key.map { Hex.encode($0) }, macsChecked: signer != nil, unkeyedEntries: 0,
            anchor: anchor?.seq, breaks: [], firstBad: nil
        )
        let parsedHead = head.flatMap { try? JSONDecoder().decode(AuditHead.self, from: Data($0)) }
        // The hashes of the two entries the anchor and the head name, as the walk passes them.
        var anchorHash: [UInt8]?
        var headHash: [UInt8]?
        var file: String?
        var offset = 0
        var lineNumber = 0
        var first: UInt64?

        /// What the walk found so far, into the report.
        func tally() {
            report.entries = walker.seq
            report.firstEntry = first ?? 1
            report.checkpoints = walker.checkpoints
            report.lastCheckpoint = walker.lastCheckpoint
            report.unkeyedEntries = walker.unkeyed
            report.breaks = walker.breaks
            report.unsignedEntries = walker.seq - min(walker.seq, walker.lastCheckpoint ?? (first.map { $0 - 1 } ?? 0))
        }

        func fail(_ reason: String) -> AuditReport {
            report.ok = false
            tally()
            report.firstBad = AuditReport.Problem(
                seq: walker.seq &+ 1, file: file, line: lineNumber, offset: offset, reason: reason)
            return report
        }

        for segment in segments {
            file = segment.name
            (offset, lineNumber) = (0, 0)
            report.files += 1
            let log: [UInt8]
            do {
                log = try segment.load()
            } catch {
                return fail("the file cannot be read: \(error.message)")
            }
            // The file is zero-filled past its last entry (it grows in steps); the entries end before that.
            let end = log.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0
            if segment.first != nil, end == 0 {
                return fail("a rotated file of the log is empty: its entries were removed")
            }
            while offset < end {
                lineNumber += 1
                guard let newline = log[offset..<end].firstIndex(of: UInt8(ascii: "\n")) else {
                    return fail("the last entry is incomplete: the log was cut short or a write was torn")
                }
                guard let parsed = AuditLine.parse(log[offset..<newline]) else {
                    return fail("the line is not an entry (its shape was altered)")
                }
                if let expected = segment.first, lineNumber == 1, parsed.entry.seq != expected {
                    return fail(
                        "the file's name says it begins at entry \(expected) but it begins at entry \(parsed.entry.seq): it was renamed or replaced"
                    )
                }
                if first == nil {
                    if let reason = walker.begin(parsed) { return fail(reason) }
                    first = parsed.entry.seq
                }
                if let reason = walker.step(parsed) { return fail(reason) }
                if parsed.entry.kind == .key { report.publicKey = parsed.entry.publicKey }
                if walker.seq == anchor?.seq { anchorHash = parsed.hash }
                if walker.seq == parsedHead?.seq { headHash = parsed.hash }
                offset = newline + 1
            }
        }
        tally()
        (file, lineNumber, offset) = (nil, 0, 0)

        // What the retention removed is named in the log; anything else missing from its start is a break.
        if let first, first > (walker.firstKept ?? 1) {
            return fail(
                "entries \(walker.firstKept ?? 1) to \(first - 1) are missing: a file of the log was removed, and the log's own "
                    + "record of its retention keeps them"
            )
        }

        // The anchor: how far the index says the log had got.
        if let anchor, anchor.seq > 0 {
            guard anchor.seq <= walker.seq else {
                return fail(
                    "the log ends at entry \(walker.seq) but the index's anchor names entry \(anchor.seq): "
                        + "entries \(walker.seq &+ 1) to \(anchor.seq) at least were cut away, or the log was replaced"
                )
            }
            guard anchorHash == anchor.hash else {
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
        guard let parsedHead,
            let expectedHeadHash = Hex.decode(parsedHead.hash), expectedHeadHash.count == AuditChain.hashByteCount,
            let headSignature = Hex.decode(parsedHead.signature), head.last == UInt8(ascii: "\n"),
            Self.canonical(parsedHead) == head
        else {
            return fail("the head file (audit/head) is damaged")
        }
        guard let key = walker.key else {
            return fail("the head file names a checkpoint but the log holds no key entry")
        }
        guard
            SigningKey.isValidSignature(
                headSignature, for: AuditChain.headMessage(seq: parsedHead.seq, hash: expectedHeadHash), publicKey: key)
        else {
            return fail("the head file's signature does not verify")
        }
        guard parsedHead.seq <= walker.seq else {
            return fail(
                "the log ends at entry \(walker.seq) but its last checkpoint is entry \(parsedHead.seq): the log was cut short"
            )
        }
        guard headHash == expectedHeadHash else {
            return fail("entry \(parsedHead.seq) is not the checkpoint the head file names")
        }
        return report
    }

    /// What is wrong with the log in `directory` against `anchor`, without the root key: whether the file
    /// the anchor names holds its entry, where it names it. `nil` when it does. For `casevaultctl doctor`; a
    /// start also checks that the files follow one another and every entry after the anchor under the root
    /// key.
    public static func anchorProblem(directory: String, anchor: AuditAnchor) -> String? {
        guard anchor.seq > 0 else { return nil }
        let files = (try? AuditFiles.list(directory)) ?? []
        let name = files.first(where: { $0.first == anchor.file })?.name ?? AuditFiles.current
        let log = (try? PosixFile(path: directory + "/" + name, flags: O_RDONLY).readAll()) ?? []
        let end = log.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0
        let start = Int(anchor.offset)
        guard anchor.offset >= 0, start < end else {
            return "the log's file \(name) ends before entry \(anchor.seq), which the index's anchor names there: "
                + "entries were cut away from it, or the log was replaced or removed"
        }
        let newline = log[start..<end].firstIndex(of: UInt8(ascii: "\n")) ?? end
        guard let parsed = AuditLine.parse(log[start..<newline]), parsed.entry.seq == anchor.seq,
            parsed.hash == anchor.hash
        else {
            return "entry \(anchor.seq) is not the one the index's anchor names in \(name): the log was replaced"
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

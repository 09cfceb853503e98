internal import CaseVaultCore
internal import CaseVaultCrypto
internal import Foundation

/// One line of the log, taken apart strictly: 64 lowercase hex digits, one space, a JSON object. Any other
/// shape (upper-case hex, a second space, a stray byte) is refused, so that every byte of the file is
/// covered either by the hash or by the shape.
enum AuditLine {
    struct Tail {
        var seq: UInt64
        var hash: [UInt8]
    }

    struct Parsed {
        var hash: [UInt8]
        var json: ArraySlice<UInt8>
        var entry: AuditEntry
    }

    static let hexLength = AuditChain.hashByteCount * 2

    static func parse(_ line: ArraySlice<UInt8>) -> Parsed? {
        guard line.count > hexLength + 2 else { return nil }
        let hexEnd = line.index(line.startIndex, offsetBy: hexLength)
        guard line[hexEnd] == UInt8(ascii: " "),
            let hash = Hex.decode(String(decoding: line[..<hexEnd], as: UTF8.self))
        else { return nil }
        let json = line[line.index(after: hexEnd)...]
        guard json.first == UInt8(ascii: "{"), json.last == UInt8(ascii: "}"),
            let entry = try? JSONDecoder().decode(AuditEntry.self, from: Data(json))
        else { return nil }
        return Parsed(hash: hash, json: json, entry: entry)
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
    public var firstBad: Problem?

    enum CodingKeys: String, CodingKey {
        case ok, entries, checkpoints
        case lastCheckpoint = "last_checkpoint"
        case unsignedEntries = "unsigned_entries"
        case publicKey = "public_key"
        case firstBad = "first_bad"
    }
}

/// Recomputes the chain and checks every signature: the same code for the daemon (online) and for
/// `casevaultctl audit verify --offline` on a copy of the data directory.
public enum AuditVerifier {
    /// Verifies `log` (the file's bytes) against `head` (the head file's bytes, `nil` when absent). With
    /// `expectedKey`, the log must be signed with that key and no other.
    public static func verify(log: [UInt8], head: [UInt8]?, expectedKey: [UInt8]? = nil) -> AuditReport {
        var report = AuditReport(
            ok: true, entries: 0, checkpoints: 0, lastCheckpoint: nil, unsignedEntries: 0,
            publicKey: expectedKey.map { Hex.encode($0) }, firstBad: nil
        )
        var previous = AuditChain.genesis
        var hashes: [UInt8] = []
        hashes.reserveCapacity(log.count / 6)
        var key = expectedKey
        var offset = 0
        var lineNumber = 0
        // The file is zero-filled past its last entry (it grows in steps); the entries end before that.
        let end = log.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0

        func fail(_ reason: String) -> AuditReport {
            report.ok = false
            report.unsignedEntries = report.entries - (report.lastCheckpoint ?? 0)
            report.firstBad = AuditReport.Problem(seq: report.entries + 1, line: lineNumber, offset: offset, reason: reason)
            return report
        }

        while offset < end {
            lineNumber += 1
            guard let newline = log[offset..<end].firstIndex(of: UInt8(ascii: "\n")) else {
                return fail("the last entry is incomplete: the log was cut short or a write was torn")
            }
            let line = log[offset..<newline]
            guard let parsed = AuditLine.parse(line) else {
                return fail("the line is not an entry (its shape was altered)")
            }
            guard AuditChain.hash(previous: previous, json: parsed.json) == parsed.hash else {
                return fail("the entry's hash does not follow from the entry before it: the entry was altered, removed or moved")
            }
            let entry = parsed.entry
            guard entry.seq == report.entries + 1 else {
                return fail("the entry's number is \(entry.seq); \(report.entries + 1) was expected")
            }
            switch entry.kind {
            case .key:
                guard let text = entry.publicKey, let publicKey = Hex.decode(text), publicKey.count == 32 else {
                    return fail("the key entry does not hold an Ed25519 public key")
                }
                if let key, key != publicKey {
                    return fail("the log names another signing key than \(expectedKey == nil ? "its first key entry" : "the daemon's")")
                }
                key = publicKey
                report.publicKey = text
            case .checkpoint:
                guard let key else { return fail("a checkpoint comes before any key entry") }
                guard let text = entry.signature, let signature = Hex.decode(text),
                    SigningKey.isValidSignature(signature, for: AuditChain.checkpointMessage(seq: entry.seq, previous: previous), publicKey: key)
                else {
                    return fail("the checkpoint's signature does not verify")
                }
                report.checkpoints += 1
                report.lastCheckpoint = entry.seq
            case .request, .result, .refused:
                break
            }
            previous = parsed.hash
            hashes += parsed.hash
            report.entries += 1
            offset = newline + 1
        }
        report.unsignedEntries = report.entries - (report.lastCheckpoint ?? 0)

        // The head: the last checkpoint, kept apart, so that cutting the log before it shows.
        lineNumber += 1
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
        guard let key else { return fail("the head file names a checkpoint but the log holds no key entry") }
        guard SigningKey.isValidSignature(headSignature, for: AuditChain.headMessage(seq: parsedHead.seq, hash: headHash), publicKey: key) else {
            return fail("the head file's signature does not verify")
        }
        guard parsedHead.seq <= report.entries else {
            return fail("the log ends at entry \(report.entries) but its last checkpoint is entry \(parsedHead.seq): the log was cut short")
        }
        let index = Int(parsedHead.seq - 1) * AuditChain.hashByteCount
        guard parsedHead.seq >= 1, Array(hashes[index..<index + AuditChain.hashByteCount]) == headHash else {
            return fail("entry \(parsedHead.seq) is not the checkpoint the head file names")
        }
        return report
    }

    /// The head file exactly as the daemon writes it: any other spelling of the same values is refused.
    static func canonical(_ head: AuditHead) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(head)) ?? Data()) + [UInt8(ascii: "\n")]
    }
}

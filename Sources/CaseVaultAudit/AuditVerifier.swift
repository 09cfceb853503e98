public import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultFiles
internal import Foundation

#if canImport(Glibc)
internal import Glibc
#endif

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

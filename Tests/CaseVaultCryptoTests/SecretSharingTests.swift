import CaseVaultCrypto
import Foundation
import Testing

@Suite("Recovery shares (Shamir over GF(2⁸))")
struct SecretSharingTests {
    static func key() throws -> SecureBytes {
        try SecureBytes(copying: (0..<32).map { _ in UInt8.random(in: 0...255) })
    }

    static func subsets<T>(_ items: [T], size: Int) -> [[T]] {
        guard size > 0 else { return [[]] }
        guard items.count >= size else { return [] }
        let rest = Array(items.dropFirst())
        return Self.subsets(rest, size: size - 1).map { [items[0]] + $0 } + Self.subsets(rest, size: size)
    }

    @Test(
        "any t of n shares recover the key, whatever their order; t − 1 are refused",
        arguments: [(2, 2), (2, 3), (3, 5), (5, 7)])
    func thresholds(_ parameters: (threshold: Int, count: Int)) throws {
        let key = try Self.key()
        let shares = try SecretSharing.split(key, count: parameters.count, threshold: parameters.threshold)
        #expect(shares.count == parameters.count && Set(shares.map(\.index)).count == parameters.count)
        for subset in Self.subsets(shares, size: parameters.threshold) {
            let recovered = try SecretSharing.combine(subset.shuffled())
            #expect(recovered.constantTimeEquals(key))
        }
        for subset in Self.subsets(shares, size: parameters.threshold - 1) {
            #expect(
                throws: SecretSharing.Failure.notEnoughShares(
                    have: parameters.threshold - 1, need: parameters.threshold)
            ) {
                _ = try SecretSharing.combine(subset)
            }
        }
    }

    @Test("t − 1 shares say nothing: for any candidate secret, some polynomial agrees with them")
    func lessThanThresholdRevealsNothing() throws {
        // With threshold 2, one share (x, y) and any secret s fit the line through (0, s) and (x, y): check that
        // the shares of two different secrets can coincide, i.e. a share's value is uniform over the byte values.
        var seen = Set<UInt8>()
        let secret = try SecureBytes(copying: [0x42])
        for _ in 0..<6000 {
            let share = try SecretSharing.split(secret, count: 2, threshold: 2)[0]
            seen.insert(share.values.withUnsafeBytes { $0[0] })
        }
        #expect(seen.count == 256, "a single share of a fixed secret takes every byte value (\(seen.count) seen)")
    }

    @Test("a share survives its text form; a damaged or mistyped share is named; mixed or wrong shares are refused")
    func integrity() throws {
        let key = try Self.key()
        let shares = try SecretSharing.split(key, count: 5, threshold: 3)
        let texts = try shares.map(Self.text)
        #expect(try texts.map { try Self.share($0) } == shares)
        // Spaces and line breaks, as a person copies a share, are ignored.
        #expect(try Self.share(" " + texts[0].prefix(20) + "\n" + texts[0].dropFirst(20) + "\r\n") == shares[0])
        #expect(texts[0].hasPrefix("cvshare1-3-1-"))
        // Every single-character change in the hex parts is caught by the checksum (or the format).
        let text = texts[1]
        let start = text.index(text.startIndex, offsetBy: "cvshare1-3-2-".count)
        for offset in stride(from: 0, to: text.distance(from: start, to: text.endIndex), by: 7) {
            let position = text.index(start, offsetBy: offset)
            guard text[position] != "-" else { continue }
            let replacement: Character = text[position] == "0" ? "1" : "0"
            var damaged = text
            damaged.replaceSubrange(position...position, with: String(replacement))
            #expect(throws: SecretSharing.Failure.self) { _ = try Self.share(damaged) }
        }
        #expect(throws: SecretSharing.Failure.corruptedShare(index: 2)) {
            _ = try Self.share(String(text.dropLast()) + (text.last == "0" ? "1" : "0"))
        }
        for malformed in [
            "hello", "", "   ", "cvshare1-3-2-zz-0011223344556677-00112233",
            "cvshare1-3-0-00-0011223344556677-00112233",
            "cvshare1-3-2-0-0011223344556677-00112233", "cvshare1-3-2-00-0011223344556677-00112233-00",
            "cvshare1-999-2-00-0011223344556677-00112233",
        ] {
            #expect(throws: SecretSharing.Failure.malformedShare, "\(malformed)") { _ = try Self.share(malformed) }
        }
        // Shares of another split, or a share given twice, are refused.
        let other = try SecretSharing.split(try Self.key(), count: 5, threshold: 3)
        #expect(throws: SecretSharing.Failure.mismatchedShares) {
            _ = try SecretSharing.combine([shares[0], shares[1], other[2]])
        }
        #expect(throws: SecretSharing.Failure.mismatchedShares) {
            _ = try SecretSharing.combine([shares[0], shares[0], shares[1]])
        }
        // A share whose values were altered but re-checksummed (a forged share) yields a wrong secret: refused.
        var values = shares[2].values.withUnsafeBytes { Array($0) }
        values[0] ^= 1
        let forged = try Self.share(try Self.reencoded(shares[2], values: values))
        #expect(throws: SecretSharing.Failure.wrongSecret) {
            _ = try SecretSharing.combine([shares[0], shares[1], forged])
        }
        #expect(throws: SecretSharing.Failure.invalidParameters) {
            _ = try SecretSharing.split(key, count: 2, threshold: 3)
        }
        #expect(throws: SecretSharing.Failure.invalidParameters) {
            _ = try SecretSharing.split(key, count: 300, threshold: 3)
        }
    }

    /// The share's text, out of locked memory (as a person holds it).
    static func text(_ share: SecretSharing.Share) throws -> String {
        try share.encoded().withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
    }

    static func share(_ text: String) throws -> SecretSharing.Share {
        try SecretSharing.Share(encoded: Array(text.utf8))
    }

    /// The share's text with other values and a checksum made to match, as a forger would.
    static func reencoded(_ share: SecretSharing.Share, values: [UInt8]) throws -> String {
        let hex = values.map { String(format: "%02x", $0) }.joined()
        let parts = try Self.text(share).split(separator: "-")
        let body = ([String(parts[0]), String(parts[1]), String(parts[2]), hex, String(parts[4])]).joined(
            separator: "-")
        // Recompute the checksum the way the format defines it: BLAKE2b-32 of the prefix and body.
        let checksum = Array(Hash.blake2b(Array(("casevault.share.v1:" + body).utf8), length: 16).prefix(4)).map {
            String(format: "%02x", $0)
        }.joined()
        return body + "-" + checksum
    }
}

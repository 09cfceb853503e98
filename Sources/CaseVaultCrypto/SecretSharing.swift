internal import CSodium

/// Shamir's secret sharing over GF(2⁸), byte by byte, for recovery shares of the root key (DESIGN §4):
/// `split` makes n shares of which any t recover the secret, and t − 1 say nothing about it.
///
/// Field arithmetic is the AES field (x⁸ + x⁴ + x³ + x + 1), multiplied bit by bit with masks rather than
/// through log tables, so that no table index depends on a secret byte. libsodium has no secret sharing;
/// this is written by hand after Shamir (1979), with each share carrying:
/// - a checksum of itself (BLAKE2b), so that a mistyped or damaged share is named when it is entered;
/// - a commitment to the secret (BLAKE2b of it, 8 bytes), so that a combination of wrong shares is refused
///   instead of yielding a wrong key.
public enum SecretSharing {
    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        case invalidParameters
        case malformedShare
        case corruptedShare(index: Int)
        case notEnoughShares(have: Int, need: Int)
        case mismatchedShares
        case wrongSecret

        public var description: String {
            switch self {
            case .invalidParameters: return "a split takes 2 ≤ threshold ≤ shares ≤ 255"
            case .malformedShare: return "this is not a CaseVault recovery share (cvshare1-…)"
            case .corruptedShare(let index): return "share \(index) is damaged or mistyped: its checksum does not match"
            case .notEnoughShares(let have, let need): return "\(have) of the \(need) shares needed"
            case .mismatchedShares: return "the shares come from different splits, or one is given twice"
            case .wrongSecret: return "the shares do not combine to the secret they were made from"
            }
        }
    }

    /// One share: its x (1…255), the threshold, the y bytes, the secret's commitment.
    public struct Share: Sendable, Equatable {
        public let index: UInt8
        public let threshold: UInt8
        public let values: [UInt8]
        public let commitment: [UInt8]

        static let prefix = "cvshare1"

        /// `cvshare1-<threshold>-<index>-<values hex>-<commitment hex>-<checksum hex>`: text a person can
        /// copy, print or read out.
        public var encoded: String {
            let body = "\(Self.prefix)-\(self.threshold)-\(self.index)-\(Self.hex(self.values))-\(Self.hex(self.commitment))"
            return body + "-" + Self.hex(Self.checksum(body))
        }

        public init(encoded text: String) throws(Failure) {
            let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).joined().split(separator: "-").map(String.init)
            guard parts.count == 6, parts[0] == Self.prefix, let threshold = UInt8(parts[1]), let index = UInt8(parts[2]),
                index > 0, threshold >= 2, let values = Self.bytes(parts[3]), !values.isEmpty,
                let commitment = Self.bytes(parts[4]), commitment.count == 8, let checksum = Self.bytes(parts[5])
            else { throw .malformedShare }
            let body = parts[0..<5].joined(separator: "-")
            guard Memory.constantTimeEquals(checksum, Self.checksum(body)) else {
                throw .corruptedShare(index: Int(index))
            }
            self.init(index: index, threshold: threshold, values: values, commitment: commitment)
        }

        init(index: UInt8, threshold: UInt8, values: [UInt8], commitment: [UInt8]) {
            self.index = index
            self.threshold = threshold
            self.values = values
            self.commitment = commitment
        }

        /// Lowercase hex, by libsodium.
        static func hex(_ bytes: [UInt8]) -> String {
            var text = [CChar](repeating: 0, count: bytes.count * 2 + 1)
            _ = sodium_bin2hex(&text, text.count, bytes, bytes.count)
            return String(decoding: text.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }

        /// Bytes from hex (either case), by libsodium; nil for anything else.
        static func bytes(_ text: String) -> [UInt8]? {
            let characters = Array(text.utf8)
            guard !characters.isEmpty, characters.count % 2 == 0 else { return nil }
            var result = [UInt8](repeating: 0, count: characters.count / 2)
            var length = 0
            let status = characters.withUnsafeBufferPointer { input in
                input.withMemoryRebound(to: CChar.self) { text in
                    sodium_hex2bin(&result, result.count, text.baseAddress, text.count, nil, &length, nil)
                }
            }
            return status == 0 && length == result.count ? result : nil
        }

        static func checksum(_ body: String) -> [UInt8] {
            Array(Hash.blake2b(Array(("casevault.share.v1:" + body).utf8), length: 16).prefix(4))
        }
    }

    /// Splits `secret` into `count` shares, any `threshold` of which recover it.
    public static func split(_ secret: SecureBytes, count: Int, threshold: Int) throws(Failure) -> [Share] {
        guard threshold >= 2, threshold <= count, count <= 255 else { throw .invalidParameters }
        let commitment = Self.commitment(secret)
        var values = Array(repeating: [UInt8](repeating: 0, count: secret.count), count: count)
        secret.withUnsafeBytes { bytes in
            // One polynomial per byte: the secret byte, then threshold − 1 random coefficients.
            var coefficients = [UInt8](repeating: 0, count: threshold)
            defer { Memory.zero(&coefficients) }
            for position in 0..<bytes.count {
                coefficients[0] = bytes[position]
                coefficients.withUnsafeMutableBytes { Random.fill(UnsafeMutableRawBufferPointer(rebasing: $0[1...])) }
                for share in 0..<count {
                    values[share][position] = Self.evaluate(coefficients, at: UInt8(share + 1))
                }
            }
        }
        return (0..<count).map { Share(index: UInt8($0 + 1), threshold: UInt8(threshold), values: values[$0], commitment: commitment) }
    }

    /// The secret from at least `threshold` shares of one split; throws rather than return a wrong secret.
    public static func combine(_ shares: [Share]) throws(Failure) -> SecureBytes {
        guard let first = shares.first else { throw .notEnoughShares(have: 0, need: 2) }
        let threshold = Int(first.threshold)
        guard shares.allSatisfy({ $0.threshold == first.threshold && $0.commitment == first.commitment && $0.values.count == first.values.count }),
            Set(shares.map(\.index)).count == shares.count
        else { throw .mismatchedShares }
        guard shares.count >= threshold else { throw .notEnoughShares(have: shares.count, need: threshold) }
        let used = Array(shares.prefix(threshold))
        // Lagrange at x = 0: secret = Σ yᵢ · Π_{j≠i} xⱼ / (xⱼ − xᵢ), and − is ⊕ in GF(2⁸).
        let weights = used.map { share in
            used.filter { $0.index != share.index }.reduce(UInt8(1)) { product, other in
                Self.multiply(product, Self.multiply(other.index, Self.inverse(other.index ^ share.index)))
            }
        }
        var secret = [UInt8](repeating: 0, count: first.values.count)
        defer { Memory.zero(&secret) }
        for position in 0..<secret.count {
            var byte: UInt8 = 0
            for (share, weight) in zip(used, weights) {
                byte ^= Self.multiply(share.values[position], weight)
            }
            secret[position] = byte
        }
        guard let key = try? SecureBytes(copying: secret) else { throw .wrongSecret }
        guard Memory.constantTimeEquals(Self.commitment(key), first.commitment) else { throw .wrongSecret }
        return key
    }

    static func commitment(_ secret: SecureBytes) -> [UInt8] {
        // Hashed in place: the secret is never copied out of its secure memory.
        secret.withUnsafeBytes { Array(Hash.blake2b($0, length: 16).prefix(8)) }
    }

    // MARK: GF(2⁸)

    /// a · b in GF(2⁸) mod x⁸ + x⁴ + x³ + x + 1, without branches or tables on the operands.
    static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        var a = a
        var b = b
        var product: UInt8 = 0
        for _ in 0..<8 {
            product ^= a & (0 &- (b & 1))
            let carry = 0 &- (a >> 7)
            a = (a << 1) ^ (0x1B & carry)
            b >>= 1
        }
        return product
    }

    /// a⁻¹ = a²⁵⁴ (a ≠ 0).
    static func inverse(_ a: UInt8) -> UInt8 {
        var result: UInt8 = 1
        var base = a
        var exponent = 254
        while exponent > 0 {
            if exponent & 1 == 1 { result = Self.multiply(result, base) }
            base = Self.multiply(base, base)
            exponent >>= 1
        }
        return result
    }

    /// The polynomial with `coefficients` (constant first) at x, by Horner's rule.
    static func evaluate(_ coefficients: [UInt8], at x: UInt8) -> UInt8 {
        coefficients.reversed().reduce(UInt8(0)) { Self.multiply($0, x) ^ $1 }
    }
}

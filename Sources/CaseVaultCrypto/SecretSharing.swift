internal import CSodium

/// Shamir's secret sharing over GF(2⁸), byte by byte, for recovery shares of the root key (docs/SECURITY.md):
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
        case lockedMemoryUnavailable

        public var description: String {
            switch self {
            case .invalidParameters: return "a split takes 2 ≤ threshold ≤ shares ≤ 255"
            case .malformedShare: return "this is not a CaseVault recovery share (cvshare1-…)"
            case .corruptedShare(let index): return "share \(index) is damaged or mistyped: its checksum does not match"
            case .notEnoughShares(let have, let need): return "\(have) of the \(need) shares needed"
            case .mismatchedShares: return "the shares come from different splits, or one is given twice"
            case .wrongSecret: return "the shares do not combine to the secret they were made from"
            case .lockedMemoryUnavailable: return "no locked memory for the shares (RLIMIT_MEMLOCK)"
            }
        }
    }

    /// One share: its x (1…255), the threshold, the y bytes (in locked memory: with `threshold` − 1 others
    /// they give the root key), the secret's commitment.
    public struct Share: Sendable, Equatable {
        public let index: UInt8
        public let threshold: UInt8
        public let values: SecureBytes
        public let commitment: [UInt8]

        static let prefix = Array("cvshare1".utf8)
        static let checksumDomain = Array("casevault.share.v1:".utf8)
        static let dash = UInt8(ascii: "-")

        public static func == (left: Share, right: Share) -> Bool {
            left.index == right.index && left.threshold == right.threshold && left.commitment == right.commitment
                && left.values.constantTimeEquals(right.values)
        }

        /// `cvshare1-<threshold>-<index>-<values hex>-<commitment hex>-<checksum hex>`: text a person can
        /// copy, print or read out, made in locked memory (never a Swift string).
        public func encoded() throws(Failure) -> SecureBytes {
            let header = Self.prefix + Array("-\(self.threshold)-\(self.index)-".utf8)
            let tail = [Self.dash] + Array(Self.hex(self.commitment).utf8)
            let bodyCount = header.count + 2 * self.values.count + tail.count
            do {
                // The checksum covers the domain and the body; the body is written twice, both times in
                // locked memory.
                let covered = try SecureBytes(count: Self.checksumDomain.count + bodyCount) { output in
                    output.copyBytes(from: Self.checksumDomain)
                    self.writeBody(
                        into: UnsafeMutableRawBufferPointer(rebasing: output[Self.checksumDomain.count...]),
                        header: header, tail: tail)
                }
                let checksum = [Self.dash] + Array(Self.hex(Self.checksum(covered)).utf8)
                return try SecureBytes(count: bodyCount + checksum.count) { output in
                    self.writeBody(into: output, header: header, tail: tail)
                    UnsafeMutableRawBufferPointer(rebasing: output[bodyCount...]).copyBytes(from: checksum)
                }
            } catch {
                throw .lockedMemoryUnavailable
            }
        }

        /// Writes `header`, the values in lowercase hex (by libsodium, straight from locked memory) and `tail`.
        private func writeBody(into output: UnsafeMutableRawBufferPointer, header: [UInt8], tail: [UInt8]) {
            output.copyBytes(from: header)
            let hexCount = 2 * self.values.count
            self.values.withUnsafeBytes { values in
                // bin2hex ends its output with a NUL, which the tail then overwrites.
                let room = UnsafeMutableRawBufferPointer(rebasing: output[header.count...])
                _ = sodium_bin2hex(
                    UnsafeMutableRawPointer(room.u8).assumingMemoryBound(to: CChar.self), room.count, values.u8,
                    values.count)
            }
            UnsafeMutableRawBufferPointer(rebasing: output[(header.count + hexCount)...]).copyBytes(from: tail)
        }

        /// Reads a share from its text (`encoded()`; spaces, tabs and line breaks anywhere are ignored)
        /// without copying the values out of locked memory: the text is compacted into locked memory, and
        /// the values are decoded from there into locked memory.
        public init(encoded text: some CryptoBytes) throws(Failure) {
            let compact: SecureBytes
            do {
                compact = try text.withUnsafeBytes { input in
                    let count = input.reduce(0) { $0 + (Self.isSpace($1) ? 0 : 1) }
                    guard count > 0 else { throw Failure.malformedShare }
                    return try SecureBytes(count: count) { output in
                        var position = 0
                        for byte in input where !Self.isSpace(byte) {
                            output[position] = byte
                            position += 1
                        }
                    }
                }
            } catch let failure as Failure {
                throw failure
            } catch {
                throw .lockedMemoryUnavailable
            }
            let parsed:
                (
                    threshold: UInt8, index: UInt8, values: SecureBytes, commitment: [UInt8], checksum: [UInt8],
                    bodyCount: Int
                )? =
                    compact.withUnsafeBytes { bytes in
                        let dashes = bytes.indices.filter { bytes[$0] == Self.dash }
                        guard dashes.count == 5 else { return nil }
                        let bounds = [0] + dashes.map { $0 + 1 }
                        let ends = dashes + [bytes.count]
                        func part(_ number: Int) -> UnsafeRawBufferPointer {
                            UnsafeRawBufferPointer(rebasing: bytes[bounds[number]..<ends[number]])
                        }
                        func small(_ number: Int) -> UInt8? {
                            let digits = part(number)
                            guard (1...3).contains(digits.count),
                                digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
                            else { return nil }
                            return UInt8(exactly: digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) })
                        }
                        let valuesHex = part(3)
                        guard part(0).elementsEqual(Self.prefix), let threshold = small(1), let index = small(2),
                            index > 0, threshold >= 2,
                            !valuesHex.isEmpty, valuesHex.count % 2 == 0,
                            let commitment = Self.bytes(part(4)), commitment.count == 8,
                            let checksum = Self.bytes(part(5)),
                            let values = try? SecureBytes(
                                count: valuesHex.count / 2,
                                initializer: { output in
                                    guard Self.decode(valuesHex, into: output) else { throw Failure.malformedShare }
                                })
                        else { return nil }
                        return (threshold, index, values, commitment, checksum, dashes[4])
                    }
            guard let parsed else { throw .malformedShare }
            let covered: SecureBytes
            do {
                covered = try SecureBytes(count: Self.checksumDomain.count + parsed.bodyCount) { output in
                    output.copyBytes(from: Self.checksumDomain)
                    compact.withUnsafeBytes { bytes in
                        UnsafeMutableRawBufferPointer(rebasing: output[Self.checksumDomain.count...])
                            .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[..<parsed.bodyCount]))
                    }
                }
            } catch {
                throw .malformedShare
            }
            guard Memory.constantTimeEquals(parsed.checksum, Self.checksum(covered)) else {
                throw .corruptedShare(index: Int(parsed.index))
            }
            self.init(
                index: parsed.index, threshold: parsed.threshold, values: parsed.values, commitment: parsed.commitment)
        }

        init(index: UInt8, threshold: UInt8, values: SecureBytes, commitment: [UInt8]) {
            self.index = index
            self.threshold = threshold
            self.values = values
            self.commitment = commitment
        }

        static func isSpace(_ byte: UInt8) -> Bool {
            byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\t")
                || byte == UInt8(ascii: "\r")
        }

        /// Lowercase hex, by libsodium: for the public parts (commitment, checksum).
        static func hex(_ bytes: [UInt8]) -> String {
            var text = [CChar](repeating: 0, count: bytes.count * 2 + 1)
            _ = sodium_bin2hex(&text, text.count, bytes, bytes.count)
            return String(decoding: text.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }

        /// Bytes from hex (either case), by libsodium; nil for anything else.
        static func bytes(_ text: UnsafeRawBufferPointer) -> [UInt8]? {
            guard !text.isEmpty, text.count % 2 == 0 else { return nil }
            var result = [UInt8](repeating: 0, count: text.count / 2)
            let decoded = result.withUnsafeMutableBytes { Self.decode(text, into: $0) }
            return decoded ? result : nil
        }

        /// Decodes hex `text` into exactly `output` (half its length), by libsodium (constant time).
        static func decode(_ text: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Bool {
            var length = 0
            let status = sodium_hex2bin(output.u8, output.count, text.cchar, text.count, nil, &length, nil)
            return status == 0 && length == output.count && 2 * length == text.count
        }

        static func checksum(_ covered: SecureBytes) -> [UInt8] {
            Array(Hash.blake2b(covered, length: 16).prefix(4))
        }
    }

    /// Splits `secret` into `count` shares, any `threshold` of which recover it.
    public static func split(_ secret: SecureBytes, count: Int, threshold: Int) throws(Failure) -> [Share] {
        guard threshold >= 2, threshold <= count, count <= 255 else { throw .invalidParameters }
        let commitment = Self.commitment(secret)
        var values = Array(repeating: [UInt8](repeating: 0, count: secret.count), count: count)
        defer { for index in values.indices { Memory.zero(&values[index]) } }
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
        return try (0..<count).map { number throws(Failure) in
            guard let locked = try? SecureBytes(copying: values[number]) else { throw .lockedMemoryUnavailable }
            return Share(index: UInt8(number + 1), threshold: UInt8(threshold), values: locked, commitment: commitment)
        }
    }

    /// The secret from at least `threshold` shares of one split; throws rather than return a wrong secret.
    public static func combine(_ shares: [Share]) throws(Failure) -> SecureBytes {
        guard let first = shares.first else { throw .notEnoughShares(have: 0, need: 2) }
        let threshold = Int(first.threshold)
        guard
            shares.allSatisfy({
                $0.threshold == first.threshold && $0.commitment == first.commitment
                    && $0.values.count == first.values.count
            }),
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
        // Summed share by share straight into locked memory.
        guard
            let key = try? SecureBytes(
                count: first.values.count,
                initializer: { secret in
                    for (share, weight) in zip(used, weights) {
                        share.values.withUnsafeBytes { values in
                            for position in 0..<secret.count {
                                secret[position] ^= Self.multiply(values[position], weight)
                            }
                        }
                    }
                })
        else { throw .lockedMemoryUnavailable }
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

extension Statistics {
    /// Arithmetic modulo the Mersenne prime p = 2^61 − 1, in which the suppression decides what the published
    /// values determine.
    ///
    /// Whether a suppressed value can be worked out is a question over the rationals: is its vector in the span
    /// of the published vectors? Over GF(p) the answer is the same unless p divides every non-zero minor of the
    /// largest size of the published vectors (their rank mod p is then smaller than over the rationals), and
    /// only in that case could a value derivable over the rationals be judged safe here. Nothing rules that out
    /// by proof for every set of 0/±1 vectors, but it needs every such minor to be a multiple of a 61-bit prime;
    /// the tests check the published families with a second prime.
    enum Field {
        static let prime: UInt64 = (1 << 61) - 1
        static let minusOne: UInt64 = Self.prime - 1

        static func multiply(_ a: UInt64, _ b: UInt64) -> UInt64 {
            let (high, low) = a.multipliedFullWidth(by: b)
            // 2^64 ≡ 8 and 2^61 ≡ 1 modulo 2^61 − 1; high < 2^58 since a, b < 2^61.
            let folded = (low & Self.prime) &+ (low >> 61) &+ (high << 3)
            let once = (folded & Self.prime) &+ (folded >> 61)
            return once >= Self.prime ? once &- Self.prime : once
        }

        static func inverse(_ a: UInt64) -> UInt64 {
            var result: UInt64 = 1
            var base = a
            var exponent = Self.prime - 2
            while exponent > 0 {
                if exponent & 1 == 1 { result = Self.multiply(result, base) }
                base = Self.multiply(base, base)
                exponent >>= 1
            }
            return result
        }

        /// `vector −= factor × row`, entry by entry.
        static func subtract(_ factor: UInt64, times row: [UInt64], from vector: inout [UInt64]) {
            row.withUnsafeBufferPointer { row in
                vector.withUnsafeMutableBufferPointer { vector in
                    for index in 0..<row.count where row[index] != 0 {
                        let product = Self.multiply(factor, row[index])
                        let value = vector[index]
                        vector[index] = value >= product ? value &- product : value &+ (Self.prime &- product)
                    }
                }
            }
        }

        /// `vector` scaled so that its entry at `pivot` is 1.
        static func normalized(_ vector: [UInt64], at pivot: Int) -> [UInt64] {
            let scale = Self.inverse(vector[pivot])
            return vector.map { Self.multiply($0, scale) }
        }
    }

    /// The span of the vectors published so far, in echelon form: each row has a pivot (its first non-zero
    /// entry, scaled to 1), and every later row is zero at the pivots of the rows before it.
    struct Span: Sendable {
        private(set) var rows: [[UInt64]] = []
        private(set) var pivots: [Int] = []

        /// `vector` less a combination of the rows that clears every pivot: all zeros exactly when the span
        /// holds `vector` (a non-zero vector of the span is non-zero at the pivot of its first row).
        func reduced(_ vector: [UInt64]) -> [UInt64] {
            var vector = vector
            for (row, pivot) in zip(self.rows, self.pivots) where vector[pivot] != 0 {
                Field.subtract(vector[pivot], times: row, from: &vector)
            }
            return vector
        }

        /// Adds `vector` to the span; returns the new row and its pivot, or `nil` when the span held it already.
        mutating func insert(_ vector: [UInt64]) -> (row: [UInt64], pivot: Int)? {
            let rest = self.reduced(vector)
            guard let pivot = rest.firstIndex(where: { $0 != 0 }) else { return nil }
            let row = Field.normalized(rest, at: pivot)
            self.rows.append(row)
            self.pivots.append(pivot)
            return (row, pivot)
        }
    }

    /// Elimination over a few vectors that keeps track of how each row was made from them, to tell which of
    /// them a derivation of another vector uses.
    struct Combinations {
        let width: Int
        let count: Int
        /// Each row: its vector part (`width` entries), then its coefficients on the input vectors.
        private var rows: [[UInt64]] = []
        private var pivots: [Int] = []
        /// Whether each input vector lies in a linear dependency among them; one that does not is needed
        /// (with the same coefficient) by every way of writing a vector of their span.
        private(set) var dependent: [Bool]

        init(_ vectors: [[UInt64]], width: Int) {
            self.width = width
            self.count = vectors.count
            self.dependent = Array(repeating: false, count: vectors.count)
            for (index, vector) in vectors.enumerated() {
                var row = vector + Array(repeating: 0, count: vectors.count)
                row[width + index] = 1
                self.reduce(&row)
                if let pivot = row[..<width].firstIndex(where: { $0 != 0 }) {
                    self.rows.append(Field.normalized(row, at: pivot))
                    self.pivots.append(pivot)
                } else {
                    // The coefficients now spell a dependency; together these span every dependency.
                    for other in 0..<vectors.count where row[width + other] != 0 { self.dependent[other] = true }
                }
            }
        }

        private func reduce(_ row: inout [UInt64]) {
            for (basis, pivot) in zip(self.rows, self.pivots) where row[pivot] != 0 {
                Field.subtract(row[pivot], times: basis, from: &row)
            }
        }

        /// For one way of writing `target` from the input vectors, which of them it uses; `nil` when `target`
        /// is not in their span.
        func uses(_ target: [UInt64]) -> [Bool]? {
            var row = target + Array(repeating: 0, count: self.count)
            self.reduce(&row)
            guard row[..<self.width].allSatisfy({ $0 == 0 }) else { return nil }
            // The coefficient part now holds the negated coefficients.
            return row[self.width...].map { $0 != 0 }
        }
    }
}

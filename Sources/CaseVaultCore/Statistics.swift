/// Aggregate statistics (docs/API.md): counts of cases by the month, quarter or year they were opened in (rows,
/// UTC) and their dispute category or outcome (columns), with totals, and evaluation satisfaction as means.
/// Only aggregates leave the daemon, and values are suppressed so that no case can be singled out. The six
/// tables (three periods × two dimensions) are one family, computed and suppressed together; each answer is
/// one table of it, and what every answer up to a time reveals together is what the latest family reveals
/// (as long as the counted facts do not change: see the last paragraph).
///
/// What is counted. A row is published from the first month start at which its period has ended and every
/// case opened in it is closed; until then no case of that period counts anywhere. A closed case takes no
/// new intake form and keeps its outcome, so a row's counts are final when it appears. Rows appear only at
/// month starts, so an answer says nothing of when within a month a case closed. Column totals, the total
/// and the overall mean cover the complete years (those whose year row is published) and are the same in
/// the three tables: a total over rows that are still being added would give each new row away by its change.
/// A category has its own column from the month start by which k of its counted cases are in published rows;
/// until then, and for rarer categories, its cases count under `other` (a rare category is not even named).
/// When a category gets its column, every row already published gets that cell and a new `other`.
///
/// Suppression. Each published value is a sum of the unknown numbers of cases per month, category and
/// outcome. Every count from 1 to k−1 is suppressed (primary suppression), and a suppressed value can be
/// worked out exactly when its vector lies in the span of the published vectors. The family is replayed
/// month start by month start from the first: the values first published at a month start (new rows, the
/// cells of a newly named category) are decided with every earlier decision standing, and further new values
/// are suppressed, cheapest first (a value costs its count; zeros cost the most, since a suppressed zero
/// narrows its partners' range), until no suppressed value of that or any earlier month start lies in the
/// span of all values published so far (`Statistics+Suppression.swift`, over GF(2^61 − 1): see `Field`).
/// Suppressing every new value always suffices: each involves unknowns that no earlier value tells apart (a
/// newly published month's, or a newly named category's). So a later answer repeats every earlier decision,
/// and old answers add nothing to the latest one. A row total is one value, published in both dimensions'
/// tables or in neither. Values of different years involve different unknowns, so each year is replayed on
/// its own; a total over the complete years is published only when every year's value it adds up is, so it
/// adds nothing either.
///
/// Means. A row's mean is withheld when fewer than k of its cases were evaluated; a quarter's or year's mean
/// also when exactly one of its months with evaluations has its mean withheld, and a year's when exactly one
/// of its quarters with evaluations has, since a single withheld mean beside the coarser one would be bounded
/// by them. The overall mean
/// is published only when every complete year with evaluations has its mean published. The numbers of
/// evaluated cases are not published, so no mean is derivable from the others, only bounded.
///
/// What still changes in a published row, and is not covered: a record shredded, on request or by the
/// retention sweep (intake forms by default 3 years after filing, final agreements 7 years after closing,
/// evaluations 2 years after filing), and an evaluation filed after the row appeared. A shredded intake form
/// moves its case to `unknown` (and can take a category's column away); a shredded final agreement moves its
/// case to outcome `unknown`; an evaluation filed or shredded moves a mean. Answers from before and after then
/// differ by that one case, so whoever knows which case's record changed, and when, can learn from the
/// difference which column it left or how it moved the mean; and the replay runs on the changed facts, so the
/// old and new answers together are not checked as one family. Cases themselves are never removed.
public enum Statistics {
    /// What the statistics know of a case: never content, only the fields they count.
    public struct CaseFacts: Sendable, Equatable {
        /// When the case was opened, milliseconds since the Unix epoch.
        public var openedAt: Int64
        /// When the case was closed, or `nil` while it is open.
        public var closedAt: Int64?
        /// The intake form's `dispute_category`, if one is on file.
        public var category: String?
        /// `resolved`, `partially_resolved`, `no_agreement`, `withdrawn`, or `nil` while open (or when the
        /// record that gave it has been shredded).
        public var outcome: String?
        /// Each evaluation's `satisfaction` (1 to 5).
        public var satisfaction: [Int]

        public init(openedAt: Int64, closedAt: Int64?, category: String?, outcome: String?, satisfaction: [Int]) {
            self.openedAt = openedAt
            self.closedAt = closedAt
            self.category = category
            self.outcome = outcome
            self.satisfaction = satisfaction
        }
    }

    public enum Period: String, Sendable, CaseIterable {
        case month, quarter, year

        /// The period a time falls in: `2026-03`, `2026-Q1`, `2026` (UTC).
        public func label(_ time: Int64) -> String {
            self.label(index: self.index(ofMonth: Statistics.month(of: time)))
        }

        /// The period a month (counted from January of year 0) falls in, counted the same way.
        func index(ofMonth month: Int) -> Int {
            switch self {
            case .month: return month
            case .quarter: return Statistics.floorDivide(month, 3)
            case .year: return Statistics.floorDivide(month, 12)
            }
        }

        /// The months of period `index`.
        func months(_ index: Int) -> Range<Int> {
            switch self {
            case .month: return index..<(index + 1)
            case .quarter: return (3 * index)..<(3 * index + 3)
            case .year: return (12 * index)..<(12 * index + 12)
            }
        }

        func label(index: Int) -> String {
            let month = self.months(index).lowerBound
            let year = Statistics.floorDivide(month, 12)
            let monthOfYear = month - 12 * year + 1
            switch self {
            case .year: return "\(year)"
            case .quarter: return "\(year)-Q\((monthOfYear - 1) / 3 + 1)"
            case .month: return "\(year)-" + (monthOfYear < 10 ? "0\(monthOfYear)" : "\(monthOfYear)")
            }
        }
    }

    public enum Dimension: String, Sendable, CaseIterable {
        case category = "dispute_category"
        case outcome
    }

    /// A published table. `nil` marks a suppressed value.
    public struct Table: Sendable, Equatable {
        public var period: Period
        public var dimension: Dimension
        public var k: Int
        /// The published periods, oldest first: ended, with every case opened in them closed.
        public var rows: [String]
        public var columns: [String]
        public var cells: [[Int?]]
        public var rowTotals: [Int?]
        /// Per column, the cases of the complete years (the same in the three tables); `nil` when one of those
        /// years' values in the column is suppressed.
        public var columnTotals: [Int?]
        /// The cases of the complete years.
        public var grandTotal: Int?
        /// Mean satisfaction per row; `nil` when withheld (see `Statistics`) or when no case was evaluated.
        public var rowSatisfaction: [Double?]
        /// Mean satisfaction over the complete years.
        public var satisfaction: Double?
    }

    /// The six tables computed and suppressed together from the same cases at the same time.
    public struct Family: Sendable, Equatable {
        public let k: Int
        /// Every period × dimension, in the order of `Period.allCases` then `Dimension.allCases`.
        public let tables: [Table]

        public func table(_ period: Period, by dimension: Dimension) -> Table {
            // `family(_:k:now:)` builds all six, so the lookup finds one.
            self.tables.first { $0.period == period && $0.dimension == dimension }!
        }
    }

    /// The column of cases with no intake form (or no category on it), and of cases closed with no outcome
    /// on file.
    public static let unknownLabel = "unknown"
    /// The column of the categories without a column of their own.
    public static let otherCategory = "other"
    /// The outcome columns, always all of them: the outcomes a final agreement or a closing can record.
    public static let outcomes: [String] = RecordValidator.finalOutcomes
        .union(ClosingOutcome.allCases.map(\.rawValue)).union([Self.unknownLabel]).sorted()

    /// The family of `cases` as published at `now` (milliseconds since the Unix epoch): every table,
    /// suppressed together (see `Statistics`). A `k` under 1 counts as 1.
    public static func family(_ cases: [CaseFacts], k: Int, now: Int64) -> Family {
        let census = Census(cases, k: k, now: now)
        var published: [Key: Int] = [:]
        for year in census.years {
            var replay = YearReplay(census, year: year)
            replay.run()
            published.merge(replay.published) { _, latest in latest }
        }
        let means = census.means()
        let tables = Period.allCases.flatMap { period in
            Dimension.allCases.map { dimension in
                census.table(period, by: dimension, published: published, means: means)
            }
        }
        return Family(k: census.k, tables: tables)
    }

    /// The month `time` falls in, counted from January of year 0 (UTC).
    static func month(of time: Int64) -> Int {
        let (year, month, _) = CivilTime.civil(fromDays: CivilTime.floorDivide(time, CivilTime.millisecondsPerDay))
        return Int(year * 12 + month - 1)
    }

    static func floorDivide(_ a: Int, _ b: Int) -> Int {
        a >= 0 ? a / b : -((-a + b - 1) / b)
    }

    static func mean(_ sum: Int, _ n: Int) -> Double {
        (Double(sum) / Double(n) * 100).rounded() / 100
    }
}

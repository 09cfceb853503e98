package import CaseVaultCore

/// A legal hold on a case: while it stands, the case's records are not disposed of (docs/API.md).
package struct LegalHold: Sendable, Equatable {
    package var id: HoldID
    package var caseID: CaseID
    /// Milliseconds since the Unix epoch.
    package var placedAt: Int64
    package var placedBy: Authority
    /// The reason, opened from its sealed form: it may name people or matters, so it is never logged.
    package var reason: String
}

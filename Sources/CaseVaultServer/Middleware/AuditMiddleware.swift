internal import CaseVaultAudit
internal import CaseVaultCore
internal import CaseVaultSealing
internal import CaseVaultStore
internal import Foundation
internal import Hummingbird
internal import Synchronization

/// What the audit records of one request, shared between the middleware (which writes the result) and the
/// route (which writes the request entry before it acts, and names what it created).
final class AuditTicket: Sendable {
    private struct State {
        var number: UInt64?
        var receipt: AuditLog.Receipt?
        var created: [String: String] = [:]
        var suppressed = false
    }

    private let state = Mutex(State())

    /// The request's number, and the receipt for its `request` entry, once the entry is written.
    var written: (number: UInt64, receipt: AuditLog.Receipt)? {
        get { self.state.withLock { state in state.number.flatMap { number in state.receipt.map { (number, $0) } } } }
        set { self.state.withLock { state in (state.number, state.receipt) = (newValue?.number, newValue?.receipt) } }
    }

    /// Records an id the request created (`case_id`, `record_id`, `hold_id`), for the result entry.
    func created(_ name: String, _ id: String) {
        self.state.withLock { $0.created[name] = id }
    }

    var createdIDs: [String: String] {
        self.state.withLock { $0.created }
    }

    /// The request of a peer with no role past its `AuditBudget`: answered, counted, and not written.
    var suppressed: Bool {
        get { self.state.withLock { $0.suppressed } }
        set { self.state.withLock { $0.suppressed = newValue } }
    }
}

/// Audits every request (docs/API.md). Routes write their `request` entry through `Audited.before` before
/// they act; this middleware writes the `result` entry after, or one `refused` entry for a request that
/// no route took (no such path or method, or refused before its route ran).
///
/// A peer with no role can act on nothing, so its entries are limited by the `AuditBudget` (counted and
/// summarised past it). A request the connection handler cut off for arriving too slowly is recorded as
/// the 408 its client got, not as whatever its route made of the broken body.
struct AuditMiddleware: RouterMiddleware {
    typealias Context = CaseVaultContext
    let audit: AuditLog
    let budget: AuditBudget
    let identities: ConnectionIdentities
    /// How long a read's entry may wait for its flush once the answer has left; `nil`: every answer waits.
    let readWindow: Duration?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var context = context
        let ticket = AuditTicket()
        context.audit = ticket
        if context.roles.isEmpty, !self.budget.allow(context.identity?.uid) {
            ticket.suppressed = true
        } else {
            self.budget.summariseDue()
        }
        let outcome: Result<Response, any Error>
        do {
            let response = try await next(request, context)
            self.finish(ticket, context, status: response.status.code, problem: nil)
            outcome = .success(response)
        } catch {
            let failure = Self.classify(error)
            self.finish(ticket, context, status: failure.status, problem: failure.problem)
            outcome = .failure(error)
        }
        // An answer that changed something leaves once its request entry is on disk: the flush ran while
        // the route worked; if it failed, the route has acted, so the answer says what happened, and the
        // failure shows in health and status and refuses the next requests. A read's entry was written
        // before the route acted (a log that cannot be written refused it); unless reads are durable, its
        // answer leaves at once and a flush of the entry starts within `readWindow` (one for the reads of
        // that window).
        if let receipt = ticket.written?.receipt {
            if let window = self.readWindow, Self.isRead(request.method) {
                self.audit.flushWithin(receipt, window)
            } else {
                try? await self.audit.awaitDurable(receipt)
            }
        }
        return try outcome.get()
    }

    private func finish(_ ticket: AuditTicket, _ context: Context, status: Int, problem: String?) {
        guard !ticket.suppressed else { return }
        var (status, problem) = (status, problem)
        if self.identities.takeTimedOut(context.channel) {
            (status, problem) = (408, CaseVaultError.Code.requestTimeout.rawValue)
        }
        var entry: AuditEntry
        if let number = ticket.written?.number {
            entry = AuditEntry(kind: .result, time: self.audit.clock())
            entry.request = number
            let created = ticket.createdIDs
            entry.ids = created.isEmpty ? nil : created
        } else {
            entry = Audited.caller(AuditEntry(kind: .refused, time: self.audit.clock()), context)
            entry.action = "unrouted"
        }
        entry.status = status
        entry.problem = problem
        self.audit.record(entry)
    }

    /// Whether requests of `method` are reads, whose entries are made durable within the read window.
    static func isRead(_ method: HTTPRequest.Method) -> Bool {
        method == .get || method == .head
    }

    /// The status and problem code the problem middleware will answer with.
    static func classify(_ error: any Error) -> (status: Int, problem: String) {
        switch error {
        case let error as CaseVaultError:
            return (Problem.status(error.code).code, error.code.rawValue)
        case is MethodNotAllowed:
            return (405, CaseVaultError.Code.methodNotAllowed.rawValue)
        case let error as any HTTPResponseError:
            let translated = ProblemMiddleware.translate(error.status)
            return (Problem.status(translated.code).code, translated.code.rawValue)
        default:
            return (500, CaseVaultError.Code.storageFailure.rawValue)
        }
    }
}

/// The `request` entry, written before a route acts.
enum Audited {
    /// Writes the request entry for `endpoint` and waits until it is written; throws `audit-unavailable`
    /// (503) when it is not, so the route never acts unaudited, unless its row says it answers anyway. (With
    /// `flushingSoon`, its flush overlaps the route's work and the middleware waits for it before
    /// answering; a read's waits for its window.)
    static func before<Storage>(
        _ endpoint: API.Endpoint<Storage>, _ context: CaseVaultContext, _ audit: AuditLog, flushingSoon: Bool
    ) async throws {
        // A peer with no role past its budget: it can act on nothing, and is counted instead.
        if context.audit?.suppressed == true { return }
        let number = audit.nextRequestNumber()
        var entry = Self.caller(AuditEntry(kind: .request, time: audit.clock()), context)
        entry.request = number
        entry.action = endpoint.route.description
        entry.ids = Self.ids(context)
        do {
            let receipt = try await audit.append(entry, flushingSoon: flushingSoon)
            context.audit?.written = (number, receipt)
        } catch {
            if endpoint.auditing == .beforeActing { throw error }
        }
    }

    static func caller(_ entry: AuditEntry, _ context: CaseVaultContext) -> AuditEntry {
        var entry = entry
        entry.uid = context.identity?.uid
        entry.roles = context.roles.sorted().map(\.description)
        return entry
    }

    /// The path parameters that are ids. A roster user given by name is left out: the audit names people
    /// by uid only.
    static func ids(_ context: CaseVaultContext) -> [String: String]? {
        var ids: [String: String] = [:]
        for (name, value) in context.parameters {
            let key = String(name)
            let uid = value.hasPrefix("uid:") ? value.dropFirst(4) : value[...]
            if key.hasSuffix("_id") || (key == "user" && !uid.isEmpty && uid.allSatisfy(\.isNumber)) {
                ids[key] = String(value.prefix(64))
            }
        }
        return ids.isEmpty ? nil : ids
    }
}

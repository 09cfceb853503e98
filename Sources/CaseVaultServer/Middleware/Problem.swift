internal import CaseVaultCore
internal import Foundation
internal import Hummingbird
internal import Logging
internal import NIOCore

/// RFC 9457 problem details: every error the socket returns, in one shape and one place.
struct Problem: Encodable {
    var type: String
    var title: String
    var status: Int
    var detail: String
    var field: String?
    /// Sent as the `Retry-After` header, not in the body.
    var retryAfter: Int?

    enum CodingKeys: String, CodingKey {
        case type, title, status, detail, field
    }

    init(_ error: CaseVaultError) {
        let status = Self.status(error.code)
        self.type = "urn:casevault:problem:\(error.code.rawValue)"
        self.title = status.reasonPhrase
        self.status = status.code
        self.detail = error.message
        self.field = error.field
        // A log that cannot be written is retried at once by the daemon: a client may try again shortly.
        self.retryAfter =
            error.retryAfter ?? (error.code == .auditUnavailable || error.code == .storageUnavailable ? 1 : nil)
    }

    /// The HTTP status of each stable error code.
    static func status(_ code: CaseVaultError.Code) -> HTTPResponse.Status {
        switch code {
        case .malformedContent, .missingField, .invalidField, .unknownRecordType, .invalidIdentifier, .nestingTooDeep:
            return .badRequest
        case .unsupportedMediaType:
            return .unsupportedMediaType
        case .requestTimeout:
            return .requestTimeout
        case .overloaded:
            return .serviceUnavailable
        case .headerTooLarge:
            return .requestHeaderFieldsTooLarge
        case .malformedRequest:
            return .badRequest
        case .forbiddenRecordType:
            return .unprocessableContent
        case .contentTooLarge:
            return .contentTooLarge
        case .notFound, .routeNotFound, .unknownUser:
            return .notFound
        case .shredded:
            return .gone
        case .forbidden:
            return .forbidden
        case .methodNotAllowed:
            return .methodNotAllowed
        case .caseClosed, .agreementsMissing, .notOnRoster, .attachmentExists, .held:
            return .conflict
        case .integrityFailure, .auditMismatch, .storageFailure, .insecurePermissions, .invalidConfiguration,
            .socketUnavailable:
            return .internalServerError
        case .keyUnavailable, .auditUnavailable, .sealed, .storageUnavailable, .vaultMoved:
            return .serviceUnavailable
        case .unsealRefused:
            return .forbidden
        case .unsealThrottled:
            return .tooManyRequests
        case .notOnThisBackend:
            return .notImplemented
        case .alreadyInitialised, .wrongKeySource, .daemonPresent, .soleKeyHolder, .vaultNotEmpty:
            return .conflict
        }
    }

    func response() -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let body = (try? encoder.encode(self)) ?? Data(#"{"status":500}"#.utf8)
        var headers = HTTPFields()
        headers[.contentType] = "application/problem+json"
        if let seconds = self.retryAfter {
            headers[.retryAfter] = "\(seconds)"
        }
        return Response(
            status: HTTPResponse.Status(code: self.status),
            headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body))
        )
    }
}

/// Turns every error a route or Hummingbird throws into problem+json; nothing else leaves the socket.
/// Unknown errors become a generic 500 whose detail says nothing about the request.
struct ProblemMiddleware: RouterMiddleware {
    typealias Context = CaseVaultContext
    /// Integrity failures are logged once a second at most: a client may read a damaged record in a loop.
    let integrityLog: LogThrottle

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as CaseVaultError {
            // Damage or tampering found in what the vault stores is the operator's to know of, not only the
            // client's (the audit log has the code too): its code, in the daemon's log.
            if error.code == .integrityFailure {
                self.integrityLog.error(
                    context.logger, "stored data failed an integrity check",
                    metadata: ["error.code": "\(error.code.rawValue)"])
            }
            return Problem(error).response()
        } catch let error as MethodNotAllowed {
            var response = Problem(
                CaseVaultError(.methodNotAllowed, "this route takes \(error.allow); see docs/openapi.yaml")
            ).response()
            response.headers[.allow] = error.allow
            return response
        } catch let error as any HTTPResponseError {
            return Problem(Self.translate(error.status)).response()
        } catch {
            context.logger.error("request failed", metadata: ["error.type": "\(type(of: error))"])
            return Problem(CaseVaultError(.storageFailure, "the daemon failed to handle the request; see its log"))
                .response()
        }
    }

    static func translate(_ status: HTTPResponse.Status) -> CaseVaultError {
        switch status {
        case .notFound:
            return CaseVaultError(.routeNotFound, "no route has this path; see docs/openapi.yaml")
        case .methodNotAllowed:
            return CaseVaultError(.methodNotAllowed, "this route does not take this method; see docs/openapi.yaml")
        case .contentTooLarge:
            return CaseVaultError(.contentTooLarge, "the request body is larger than the configured limit")
        default:
            return CaseVaultError(.malformedContent, "the request could not be understood (HTTP \(status.code))")
        }
    }
}

/// Thrown by the catch-all handlers of a path for the methods it does not take.
struct MethodNotAllowed: Error {
    var allow: String
}

internal import AsyncHTTPClient
internal import Foundation
internal import NIOCore
internal import NIOFoundationCompat
internal import NIOHTTP1

#if canImport(Glibc)
internal import Glibc
#endif

/// One request to the daemon over its Unix socket, through AsyncHTTPClient's `http+unix` URLs.
struct DaemonClient {
    let socketPath: String

    struct Reply {
        var status: Int
        var body: Data

        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: self.body)) as? [String: Any] ?? [:]
        }

        /// The problem's stable code, for a problem+json reply.
        var problemCode: String? {
            (self.json["type"] as? String).map { $0.replacingOccurrences(of: "urn:casevault:problem:", with: "") }
        }
    }

    /// Sends `method path` and hands each piece of the body to `sink` as it arrives; returns the status,
    /// and the body only when it is not 200 (a problem).
    func stream(_ method: HTTPMethod, _ path: String, into sink: (ByteBuffer) throws -> Void) async throws(CLIError)
        -> Reply
    {
        let url = try self.url(path)
        do {
            var request = HTTPClientRequest(url: url.absoluteString)
            request.method = method
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(24 * 3600))
            guard response.status == .ok else {
                let body = try await response.body.collect(upTo: 1 << 20)
                return Reply(status: Int(response.status.code), body: Data(buffer: body))
            }
            for try await piece in response.body {
                try sink(piece)
            }
            return Reply(status: 200, body: Data())
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError.problem("the transfer failed: \(error)")
        }
    }

    /// The `http+unix` URL of `path`. AsyncHTTPClient retries a failed connect until the request's
    /// deadline; a missing or forbidden socket is told at once instead.
    private func url(_ path: String) throws(CLIError) -> URL {
        var info = stat()
        guard stat(self.socketPath, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else {
            throw CLIError.unreachable("no casevaultd socket at \(self.socketPath): is the daemon running?")
        }
        guard access(self.socketPath, W_OK) == 0 else {
            throw CLIError.unreachable("this user may not open \(self.socketPath); it must be in the socket's group")
        }
        guard let url = URL(httpURLWithSocketPath: self.socketPath, uri: path) else {
            throw CLIError.unreachable("the socket path \(self.socketPath) cannot be used in a URL")
        }
        return url
    }

    func get(_ path: String) async throws(CLIError) -> Reply {
        try await self.request(.GET, path)
    }

    /// Sends `method path`, with `json` as the body when given; the reply whatever its status.
    func request(_ method: HTTPMethod, _ path: String, json: [String: Any]? = nil) async throws(CLIError) -> Reply {
        let url = try self.url(path)
        do {
            var request = HTTPClientRequest(url: url.absoluteString)
            request.method = method
            if let json {
                let body = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: body))
            }
            // A sweep of a large vault runs for a while: the deadline is generous.
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(3600))
            let body = try await response.body.collect(upTo: 16 << 20)
            return Reply(status: Int(response.status.code), body: Data(buffer: body))
        } catch {
            throw CLIError.unreachable(
                "cannot reach casevaultd on \(self.socketPath): is it running, and may this user open the socket? (\(error))"
            )
        }
    }
}

/// What can go wrong, each with its exit code (sysexits(3), as OpenSSH's tools use them).
enum CLIError: Error {
    /// The socket could not be reached (EX_UNAVAILABLE).
    case unreachable(String)
    /// The daemon refused the caller (EX_NOPERM).
    case forbidden(String)
    /// The daemon answered with another problem (1).
    case problem(String)
    /// The configuration could not be read (EX_CONFIG).
    case configuration(String)
    /// An input file could not be read (EX_NOINPUT).
    case unreadable(String)
    /// The command line or its input cannot be used (EX_USAGE).
    case usage(String)

    var exitCode: Int32 {
        switch self {
        case .unreachable: return ExitStatus.unavailable
        case .forbidden: return ExitStatus.noPermission
        case .problem: return ExitStatus.failed
        case .configuration: return ExitStatus.configuration
        case .unreadable: return ExitStatus.noInput
        case .usage: return ExitStatus.usage
        }
    }

    var message: String {
        switch self {
        case .unreachable(let text), .forbidden(let text), .problem(let text), .configuration(let text),
            .unreadable(let text),
            .usage(let text):
            return text
        }
    }

    /// The error a problem reply stands for.
    static func from(_ reply: DaemonClient.Reply) -> CLIError {
        let detail = reply.json["detail"] as? String ?? "HTTP \(reply.status)"
        if reply.status == 403, reply.problemCode == "forbidden" {
            return .forbidden("refused: \(detail)")
        }
        return .problem("\(reply.problemCode ?? "error"): \(detail)")
    }
}

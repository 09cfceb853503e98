// One keep-alive HTTP/1.1 connection to the daemon's socket, for the power-cut test's load and checks.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One HTTP/1.1 connection to the daemon's Unix socket, kept alive; blocking. Any failure to send or read
/// throws `Closed` and drops the connection (the daemon died, or the power went).
final class SocketClient {
    struct Closed: Error {}

    struct Reply {
        var status: Int
        var body: [UInt8]

        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(self.body))) as? [String: Any] ?? [:]
        }

        /// The problem type without its prefix, or the status.
        var code: String {
            (self.json["type"] as? String).map { $0.replacingOccurrences(of: "urn:casevault:problem:", with: "") }
                ?? "\(self.status)"
        }
    }

    private let path: String
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []

    init(path: String) {
        self.path = path
    }

    deinit {
        self.drop()
    }

    private func drop() {
        if self.fd >= 0 { close(self.fd) }
        self.fd = -1
        self.buffer = []
    }

    private func connect() throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Closed() }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { sunPath in
            for (index, byte) in self.path.utf8.enumerated() where index < sunPath.count - 1 { sunPath[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            close(fd)
            throw Closed()
        }
        self.fd = fd
    }

    /// Sends one request and reads its whole response (Content-Length or chunked).
    func call(_ method: String, _ target: String, _ body: String? = nil) throws -> Reply {
        do {
            if self.fd < 0 { try self.connect() }
            let payload = Array((body ?? "").utf8)
            var head = "\(method) \(target) HTTP/1.1\r\nHost: casevault\r\n"
            if body != nil { head += "Content-Type: application/json\r\n" }
            if body != nil || method == "POST" || method == "PUT" { head += "Content-Length: \(payload.count)\r\n" }
            try self.send(Array((head + "\r\n").utf8) + payload)
            return try self.readResponse()
        } catch {
            self.drop()
            throw Closed()
        }
    }

    private func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes {
                Glibc.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw Closed() }
            sent += count
        }
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(self.fd, &chunk, chunk.count, 0)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw Closed() }
            self.buffer += chunk[..<count]
            return
        }
    }

    /// The bytes up to (not including) the next CRLF, consumed with it.
    private func line() throws -> String {
        while true {
            if let end = self.crlf() {
                let text = String(decoding: self.buffer[..<end], as: UTF8.self)
                self.buffer.removeSubrange(..<(end + 2))
                return text
            }
            try self.fill()
        }
    }

    private func crlf() -> Int? {
        guard self.buffer.count >= 2 else { return nil }
        for index in 0..<(self.buffer.count - 1) where self.buffer[index] == 13 && self.buffer[index + 1] == 10 {
            return index
        }
        return nil
    }

    private func take(_ count: Int) throws -> [UInt8] {
        while self.buffer.count < count { try self.fill() }
        defer { self.buffer.removeSubrange(..<count) }
        return Array(self.buffer[..<count])
    }

    private func readResponse() throws -> Reply {
        let status = try self.line().split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        var length: Int?
        var chunked = false
        var closes = false
        while case let header = try self.line(), !header.isEmpty {
            let parts = header.split(separator: ":", maxSplits: 1).map {
                $0.trimmingCharacters(in: .whitespaces).lowercased()
            }
            guard parts.count == 2 else { continue }
            if parts[0] == "content-length" { length = Int(parts[1]) }
            if parts[0] == "transfer-encoding" && parts[1].contains("chunked") { chunked = true }
            if parts[0] == "connection" && parts[1] == "close" { closes = true }
        }
        var body: [UInt8] = []
        if chunked {
            while let size = Int(try self.line().split(separator: ";").first ?? "", radix: 16), size > 0 {
                body += try self.take(size)
                _ = try self.line()
            }
            // The trailer section ends with an empty line.
            while try !self.line().isEmpty {}
        } else {
            body = try self.take(length ?? 0)
        }
        if closes { self.drop() }
        return Reply(status: status, body: body)
    }
}

// casevault-load: a small HTTP/1.1 load generator for Unix sockets (wrk has no Unix socket support).
// N threads, one keep-alive connection each, requests back to back; prints the rate and the latency
// percentiles. `scripts/bench-socket.sh` runs it against casevaultd and against nginx alike.
import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

struct Load: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "casevault-load",
        abstract: "Requests per second and latency over a Unix socket, keep-alive, one connection per thread."
    )

    @Option(help: "The Unix socket.") var socket: String
    @Option(help: "The request path; with --paths-file, ignored.") var path: String = "/"
    @Option(help: "A file of request paths, one a line, used in turn by each connection.") var pathsFile: String?
    @Option(help: "GET or POST.") var method: String = "GET"
    @Option(help: "A file whose content is the body of every POST.") var bodyFile: String?
    @Option(help: "Concurrent connections.") var connections: Int = 1
    @Option(help: "Seconds to run.") var seconds: Double = 5
    @Option(help: "A label for the output line.") var label: String = "load"

    func run() throws {
        let paths =
            try self.pathsFile.map {
                try String(contentsOfFile: $0, encoding: .utf8).split(separator: "\n").map(String.init)
            } ?? [self.path]
        let body = try self.bodyFile.map { try Data(contentsOf: URL(fileURLWithPath: $0)) } ?? Data()
        let deadline = Self.now() + UInt64(self.seconds * 1e9)
        let results = Results()
        var threads: [Thread] = []
        for index in 0..<self.connections {
            let thread = Thread { [socket, method] in
                var latencies: [UInt64] = []
                var failures = 0
                guard var connection = Connection(path: socket) else {
                    results.add([], failures: 1)
                    return
                }
                var next = index
                while Self.now() < deadline {
                    let path = paths[next % paths.count]
                    next += self.connections
                    var request = "\(method) \(path) HTTP/1.1\r\nHost: casevault\r\n"
                    if method == "POST" {
                        request += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
                    }
                    let bytes = Array((request + "\r\n").utf8) + body
                    let start = Self.now()
                    guard let status = connection.exchange(bytes) else {
                        // The server closed the connection (a keep-alive limit): count it and reconnect.
                        failures += 1
                        guard let fresh = Connection(path: socket) else { break }
                        connection = fresh
                        continue
                    }
                    latencies.append(Self.now() - start)
                    if status >= 400 { failures += 1 }
                }
                results.add(latencies, failures: failures)
            }
            thread.stackSize = 1 << 20
            threads.append(thread)
        }
        let started = Self.now()
        for thread in threads { thread.start() }
        while results.finished < self.connections { usleep(10_000) }
        let elapsed = Double(Self.now() - started) / 1e9
        var all = results.latencies
        all.sort()
        func percentile(_ p: Double) -> Double {
            all.isEmpty ? 0 : Double(all[min(all.count - 1, Int(Double(all.count) * p))]) / 1e6
        }
        print(
            String(
                format: "%@  %2d conn  %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  (%d requests, %d failed)",
                self.label, self.connections, Double(all.count) / elapsed, percentile(0.50), percentile(0.99),
                all.count, results.failures
            ))
    }

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

final class Results: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var latencies: [UInt64] = []
    private(set) var failures = 0
    private(set) var finished = 0

    func add(_ values: [UInt64], failures: Int) {
        self.lock.withLock {
            self.latencies += values
            self.failures += failures
            self.finished += 1
        }
    }
}

/// One keep-alive connection; reads responses framed by Content-Length.
final class Connection {
    let fd: Int32
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    var pending: [UInt8] = []

    init?(path: String) {
        self.fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(self.fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            close(self.fd)
            return nil
        }
    }

    deinit { close(self.fd) }

    /// Sends a request and reads its response; the status, or nil when the connection failed.
    func exchange(_ request: [UInt8]) -> Int? {
        var sent = 0
        while sent < request.count {
            let count = request.withUnsafeBytes {
                send(self.fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL))
            }
            if count <= 0 { return nil }
            sent += count
        }
        var headEnd: Int?
        while headEnd == nil {
            headEnd = Self.find(self.pending)
            if headEnd == nil { guard self.fill() else { return nil } }
        }
        let head = String(decoding: self.pending[..<headEnd!], as: UTF8.self)
        let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
        var length = 0
        for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
            length = Int(line.dropFirst(15).trimmingCharacters(in: .whitespaces)) ?? 0
        }
        let total = headEnd! + 4 + length
        while self.pending.count < total { guard self.fill() else { return nil } }
        self.pending.removeFirst(total)
        return status
    }

    private func fill() -> Bool {
        let count = recv(self.fd, &self.buffer, self.buffer.count, 0)
        if count <= 0 { return false }
        self.pending += self.buffer[..<count]
        return true
    }

    private static func find(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4)
        where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index
        }
        return nil
    }
}

Load.main()

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Attachments through a real daemon: streamed through secretstream, byte-identical, memory flat, gone with
/// their record, refused when damaged, and nothing left by an upload cut short by SIGKILL.
@Suite("Attachments", .enabled(if: isRoot, "acting as other uids needs root"), .serialized)
struct AttachmentTests {
    static let director = Peer(uid: 4001)
    static let mediator = Peer(uid: 4002)

    /// curl as the director, with a file body or output; returns (HTTP status, curl's exit code).
    static func curl(_ daemon: DaemonProcess, _ arguments: [String]) throws -> (Int, Int32) {
        let (exit, output) = try Self.director.run(
            "/usr/bin/curl", ["-s", "-w", "%{http_code}", "--unix-socket", daemon.socket] + arguments)
        return (Int(String(decoding: output, as: UTF8.self).suffix(3)) ?? 0, exit)
    }

    static func peakResidentKiB(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    static func randomFile(_ path: String, megabytes: Int) throws {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        let random = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/dev/urandom"))
        for _ in 0..<megabytes {
            handle.write(try random.read(upToCount: 1 << 20) ?? Data())
        }
        try handle.close()
        try random.close()
        chmod(path, 0o644)
    }

    @Test(
        "a 256 MiB attachment goes in and out byte for byte, streamed: the daemon's peak memory grows by less than half of it"
    )
    func roundTripKeepsMemoryFlat() throws {
        let daemon = try DaemonProcess(roles: LifecycleOverSocketTests.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let record = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let input = daemon.root + "/in.bin"
        let output = daemon.root + "/out.bin"
        try Self.randomFile(input, megabytes: 256)
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        chmod(output, 0o666)
        let before = Self.peakResidentKiB(daemon.process.processIdentifier)
        let url = "http://casevault/v1/records/\(record)/attachment"
        #expect(
            try Self.curl(
                daemon,
                [
                    "-o", "/dev/null", "-X", "PUT", "-H", "Content-Type: application/pdf", "--data-binary", "@" + input,
                    url,
                ]
            ).0 == 201)
        #expect(try Self.curl(daemon, ["-o", output, url]) == (200, 0))
        let after = Self.peakResidentKiB(daemon.process.processIdentifier)
        #expect(FileManager.default.contentsEqual(atPath: input, andPath: output), "the attachment came back different")
        print("attachment 256 MiB in and out: daemon peak RSS \(before / 1024) MiB -> \(after / 1024) MiB")
        // A bound that only streaming meets (buffering the upload or the download would take 256 MiB), loose
        // enough for a build with AddressSanitizer (+86 MiB there; +9 MiB in a debug build). The
        // figure above is the measurement; this is not a speed or memory goal.
        #expect(after - before < 128 * 1024, "peak RSS grew from \(before) KiB to \(after) KiB")
        // Stored sealed: no 16-byte window of the plaintext is in the file.
        let sealed = try Data(contentsOf: URL(fileURLWithPath: daemon.root + "/data/attachments/\(record)"))
        let plain = try Data(contentsOf: URL(fileURLWithPath: input))
        #expect(sealed.range(of: plain.subdata(in: 1_000_000..<1_000_016)) == nil)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test(
        "one attachment per record; a media type is required; the size limit answers 413 at once; shredding removes it")
    func rulesAndShred() throws {
        let daemon = try DaemonProcess(roles: LifecycleOverSocketTests.roles) { root in
            var text = try String(contentsOfFile: root + "/casevault.toml", encoding: .utf8)
            text = text.replacingOccurrences(
                of: "max_body_bytes = 131072", with: "max_body_bytes = 131072\nmax_attachment_bytes = 100000")
            try text.write(toFile: root + "/casevault.toml", atomically: true, encoding: .utf8)
        }
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let record = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let path = "/v1/records/\(record)/attachment"
        #expect(try daemon.call("GET", path, as: Self.director, expect: 404).problemType == "not-found")
        let oversized = String(repeating: "x", count: 100_001)
        #expect(
            try Client.request(daemon, "PUT", path, as: Self.director, body: oversized, contentType: "application/pdf")
                .problemType == "content-too-large")
        #expect(
            try Client.request(daemon, "PUT", path, as: Self.director, body: "x", contentType: "nonsense").problemType
                == "unsupported-media-type")
        #expect(
            try Client.request(
                daemon, "PUT", path, as: Self.director, body: "scan \(LeakCheck.marker)", contentType: "application/pdf"
            ).status == 201)
        #expect(
            try Client.request(daemon, "PUT", path, as: Self.director, body: "again", contentType: "application/pdf")
                .problemType == "attachment-exists")
        let read = try Client.request(daemon, "GET", path, as: Self.director)
        #expect(read.status == 200 && String(decoding: read.body, as: UTF8.self) == "scan \(LeakCheck.marker)")
        // The uploader's media type is named, not vouched for.
        #expect(
            read.contentType == "application/octet-stream" && read.mediaType == "application/pdf",
            "\(read.contentType) \(read.mediaType ?? "")")
        try daemon.call(
            "DELETE", "/v1/records/\(record)", as: Self.director, body: #"{"reason": "filed_in_error"}"#, expect: 200)
        #expect(try daemon.call("GET", path, as: Self.director, expect: 410).problemType == "shredded")
        #expect(!FileManager.default.fileExists(atPath: daemon.root + "/data/attachments/\(record)"))
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("a damaged attachment is refused: a bad head gets a problem, a bad chunk cuts the download short")
    func tamperIsDetected() throws {
        let daemon = try DaemonProcess(roles: LifecycleOverSocketTests.roles)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let first = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let second = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let input = daemon.root + "/in.bin"
        try Self.randomFile(input, megabytes: 1)
        for record in [first, second] {
            #expect(
                try Self.curl(
                    daemon,
                    [
                        "-o", "/dev/null", "-X", "PUT", "-H", "Content-Type: image/png", "--data-binary", "@" + input,
                        "http://casevault/v1/records/\(record)/attachment",
                    ]
                ).0 == 201)
        }
        func flip(_ record: String, at offset: UInt64) throws {
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: daemon.root + "/data/attachments/\(record)"))
            try handle.seek(toOffset: offset)
            let byte = try handle.read(upToCount: 1)![0]
            try handle.seek(toOffset: offset)
            handle.write(Data([byte ^ 0x01]))
            try handle.close()
        }
        try flip(first, at: 40)
        // Asked for again and again, as a client in a loop would.
        let reads = 10
        let start = ContinuousClock.now
        for _ in 0..<reads {
            let refused = try daemon.call("GET", "/v1/records/\(first)/attachment", as: Self.director, expect: 500)
            #expect(refused.problemType == "integrity-failure")
        }
        let elapsed = ContinuousClock.now - start
        // The operator learns of the damage from the daemon's log too, once a second at most (however slow the
        // build): the lines, and the ones left out that the later lines count, add up to the reads.
        let logged = daemon.log.split(separator: "\n").filter {
            $0.contains("error.code=integrity-failure") && $0.contains("stored data failed an integrity check")
        }
        #expect(!logged.isEmpty, "the integrity failure is not in the daemon's log:\n\(daemon.log.suffix(2000))")
        #expect(
            logged.count <= Int(elapsed.components.seconds) + 1,
            "\(logged.count) lines for \(reads) reads in a row in \(elapsed)")
        let leftOut = logged.compactMap { line in
            line.split(separator: " ").first { $0.hasPrefix("log.left_out=") }.flatMap { Int($0.dropFirst(13)) }
        }
        #expect(logged.count + leftOut.reduce(0, +) <= reads)
        try flip(second, at: 600_000)
        let (status, exit) = try Self.curl(
            daemon, ["-o", "/dev/null", "http://casevault/v1/records/\(second)/attachment"])
        #expect(status == 200 && exit != 0, "curl must see the download cut short (exit \(exit))")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("SIGKILL during an upload leaves no partial file; the upload can be made again")
    func killedUploadLeavesNothing() throws {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        var daemon = try DaemonProcess(roles: LifecycleOverSocketTests.roles, root: root)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let record = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let input = root + "/in.bin"
        try Self.randomFile(input, megabytes: 64)
        let upload = Self.director.process(
            "/usr/bin/curl",
            [
                "-s", "-o", "/dev/null", "--limit-rate", "8M", "--unix-socket", daemon.socket, "-X", "PUT", "-H",
                "Content-Type: application/pdf",
                "--data-binary", "@" + input, "http://casevault/v1/records/\(record)/attachment",
            ])
        try upload.run()
        var partial = false
        for _ in 0..<100 where !partial {
            usleep(50_000)
            partial = FileManager.default.fileExists(atPath: root + "/data/attachments/\(record).partial")
        }
        #expect(partial, "the upload should be under way")
        daemon.crash()
        upload.waitUntilExit()
        daemon = try DaemonProcess(roles: LifecycleOverSocketTests.roles, root: root)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        #expect((try? FileManager.default.contentsOfDirectory(atPath: root + "/data/attachments")) == [])
        #expect(try Client.request(daemon, "GET", "/v1/records/\(record)/attachment", as: Self.director).status == 404)
        #expect(
            try Client.request(
                daemon, "PUT", "/v1/records/\(record)/attachment", as: Self.director, body: "again",
                contentType: "application/pdf"
            ).status == 201)
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }

    @Test("a shred wins over an upload under way: the upload fails with 410, and no file keeps any of its sealed bytes")
    func shredWinsOverUpload() throws {
        let daemon = try DaemonProcess(
            roles: LifecycleOverSocketTests.roles.replacingOccurrences(
                of: #"director = ["uid:4001"]"#, with: #"director = ["uid:4001", "uid:0"]"#)
        )
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let record = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let total = 600_000
        let body = [UInt8]((0..<total).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
        let connection = try UnixConnection(path: daemon.socket)
        let head =
            "PUT /v1/records/\(record)/attachment HTTP/1.1\r\nHost: casevault\r\nContent-Type: application/pdf\r\n"
            + "Content-Length: \(total)\r\n\r\n"
        func send(_ bytes: [UInt8]) {
            var sent = 0
            while sent < bytes.count {
                let count = bytes[sent...].withUnsafeBytes {
                    Glibc.send(connection.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                }
                if count <= 0 { return }
                sent += count
            }
        }
        send(Array(head.utf8) + body[..<(total / 2)])
        // Wait until the daemon has sealed and written some of it.
        let partial = daemon.root + "/data/attachments/\(record).partial"
        var sealed: [UInt8] = []
        for _ in 0..<100 where sealed.count < 256 << 10 {
            usleep(50_000)
            sealed = (FileManager.default.contents(atPath: partial)).map(Array.init) ?? []
        }
        #expect(sealed.count >= 256 << 10, "the upload should be under way (\(sealed.count) bytes sealed)")
        try daemon.call(
            "DELETE", "/v1/records/\(record)", as: Self.director, body: #"{"reason": "filed_in_error"}"#, expect: 200)
        #expect(!FileManager.default.fileExists(atPath: partial), "the shred leaves the partial upload in place")
        send(Array(body[(total / 2)...]))
        let answer = try connection.exchange("")
        #expect(answer.hasPrefix("HTTP/1.1 410") && answer.contains("shredded"), "\(answer.prefix(300))")

        let attachments = try FileManager.default.contentsOfDirectory(atPath: daemon.root + "/data/attachments")
        #expect(attachments.isEmpty, "left behind: \(attachments)")
        #expect(daemon.stop() == 0, "\(daemon.log)")
        // No file of the data directory holds a 16-byte window of what was sealed (past the plain header).
        let windows = stride(from: 4096, to: sealed.count - 16, by: 4096).map { Data(sealed[$0..<($0 + 16)]) }
        let files = FileManager.default.enumerator(atPath: daemon.root + "/data")?.compactMap { $0 as? String } ?? []
        for file in files {
            guard let contents = FileManager.default.contents(atPath: daemon.root + "/data/" + file) else { continue }
            #expect(
                !windows.contains { contents.range(of: $0) != nil }, "\(file) holds sealed bytes of the shredded upload"
            )
        }
    }

    @Test("a client that stops taking a download loses the connection after the read time")
    func stalledDownloadIsCut() throws {
        let daemon = try DaemonProcess(
            roles: LifecycleOverSocketTests.roles.replacingOccurrences(
                of: #"director = ["uid:4001"]"#, with: #"director = ["uid:4001", "uid:0"]"#)
        ) { root in
            var text = try String(contentsOfFile: root + "/casevault.toml", encoding: .utf8)
            text = text.replacingOccurrences(
                of: "max_body_bytes = 131072", with: "max_body_bytes = 131072\nread_timeout_seconds = 2")
            try text.write(toFile: root + "/casevault.toml", atomically: true, encoding: .utf8)
        }
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let caseID = try LifecycleOverSocketTests.agreedCase(daemon)
        let record = try daemon.file(caseID, Bodies.intake, as: Self.director).string("record_id")
        let input = daemon.root + "/in.bin"
        try Self.randomFile(input, megabytes: 16)
        #expect(
            try Self.curl(
                daemon,
                [
                    "-o", "/dev/null", "-X", "PUT", "-H", "Content-Type: application/pdf", "--data-binary", "@" + input,
                    "http://casevault/v1/records/\(record)/attachment",
                ]
            ).0 == 201)
        let connection = try UnixConnection(path: daemon.socket)
        let request = "GET /v1/records/\(record)/attachment HTTP/1.1\r\nHost: casevault\r\n\r\n"
        _ = Array(request.utf8).withUnsafeBytes { send(connection.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        // Take nothing for longer than the read time, then everything there is.
        sleep(4)
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = recv(connection.fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received += count
        }
        #expect(received < 16 << 20, "the whole download arrived (\(received) bytes): the stalled connection was kept")
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }
}

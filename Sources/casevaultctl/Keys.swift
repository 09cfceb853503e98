import ArgumentParser
import CaseVaultCrypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Reading a secret: from the terminal without echo, or one line of standard input (`--stdin`), byte by
/// byte straight into locked memory (`SecureBytes`), never into a Swift string or a stdio buffer; and the
/// request body that carries it, built in locked memory too.
enum Secret {
    /// The longest line taken as a secret (the daemon takes passphrases up to 1,024 bytes; a share is
    /// some 100 characters): small, so that locking it stays within RLIMIT_MEMLOCK.
    static let maxLine = 4 << 10

    /// A line of a secret: its bytes, or nothing when the line was empty; `nil` at the end of the input.
    typealias Line = SecureBytes??

    /// One line from `fd`, read a byte at a time (so that nothing past the newline is taken, and no buffer
    /// outside locked memory holds it), without its newline (or carriage return).
    static func line(from fd: Int32) throws(CLIError) -> Line {
        var ended = false
        let bytes: SecureBytes?
        do {
            bytes = try SecureBytes.collecting(capacity: Self.maxLine) { buffer in
                var count = 0
                var byte: UInt8 = 0
                while true {
                    let got = read(fd, &byte, 1)
                    if got < 0, errno == EINTR { continue }
                    guard got >= 0 else {
                        throw CLIError.unreadable("the secret could not be read (\(String(cString: strerror(errno))))")
                    }
                    guard got == 1 else {
                        ended = count == 0
                        break
                    }
                    if byte == UInt8(ascii: "\n") { break }
                    guard count < buffer.count else {
                        throw CLIError.usage("the secret's line is longer than \(Self.maxLine) bytes")
                    }
                    buffer[count] = byte
                    count += 1
                }
                byte = 0
                if count > 0, buffer[count - 1] == UInt8(ascii: "\r") { count -= 1 }
                return count
            }
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError.usage("no locked memory for the secret")
        }
        return ended ? nil : .some(bytes)
    }

    /// One line from the controlling terminal with echo off; restored however the read ends. `nil` at the
    /// end of input (Ctrl-D).
    static func fromTerminal(prompt: String) throws(CLIError) -> Line {
        let fd = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            throw CLIError.usage(
                "no terminal to read the secret from without echo; pass --stdin to read it from standard input")
        }
        defer { close(fd) }
        _ = prompt.withCString { write(fd, $0, strlen($0)) }
        var saved = termios()
        let isTerminal = tcgetattr(fd, &saved) == 0
        if isTerminal {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(fd, TCSAFLUSH, &quiet)
        }
        defer {
            if isTerminal { tcsetattr(fd, TCSAFLUSH, &saved) }
            _ = write(fd, "\n", 1)
        }
        return try Self.line(from: fd)
    }

    /// The next line of standard input; `nil` at the end.
    static func fromStandardInput() throws(CLIError) -> Line {
        try Self.line(from: STDIN_FILENO)
    }

    /// The passphrase: the next line of standard input with `stdin`, else from the terminal without echo.
    static func passphrase(stdin: Bool, prompt: String = "Passphrase: ") throws(CLIError) -> SecureBytes {
        let line = stdin ? try Self.fromStandardInput() : try Self.fromTerminal(prompt: prompt)
        guard let line else { throw CLIError.usage("no passphrase was given (the input ended)") }
        guard let passphrase = line else { throw CLIError.usage("the passphrase is empty") }
        return passphrase
    }

    /// Whether `bytes` are well-formed UTF-8, checked in place (no copy of the secret is made).
    static func isUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        while index < bytes.count {
            let lead = bytes[index]
            let length: Int
            var minimum: UInt32 = 0
            switch lead {
            case 0x00...0x7F: length = 1
            case 0xC2...0xDF:
                length = 2
                minimum = 0x80
            case 0xE0...0xEF:
                length = 3
                minimum = 0x800
            case 0xF0...0xF4:
                length = 4
                minimum = 0x10000
            default: return false
            }
            guard index + length <= bytes.count else { return false }
            var scalar = UInt32(lead) & (length == 1 ? 0x7F : UInt32(0xFF >> (length + 1)))
            for offset in 1..<max(1, length) {
                let next = bytes[index + offset]
                guard next & 0xC0 == 0x80 else { return false }
                scalar = scalar << 6 | UInt32(next & 0x3F)
            }
            guard scalar >= minimum, scalar <= 0x10FFFF, !(0xD800...0xDFFF).contains(scalar) else { return false }
            index += length
        }
        return true
    }

    /// Whether every byte of `secret` is a space or tab (a blank line).
    static func isBlank(_ secret: SecureBytes) -> Bool {
        secret.withUnsafeBytes { bytes in bytes.allSatisfy { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") } }
    }

    /// `{"<name>":"<secret, JSON-escaped>",<extra members>}`, in locked memory. A secret that is not UTF-8
    /// is refused: it could not be sent as a JSON string.
    static func body(_ name: String, _ secret: SecureBytes, extra: [(String, Int)] = []) throws(CLIError) -> SecureBytes
    {
        guard secret.withUnsafeBytes({ Self.isUTF8($0) }) else {
            throw CLIError.usage(
                "the \(name) is not valid UTF-8 text; type it in a UTF-8 terminal or give it in a UTF-8 file")
        }
        let head = Array("{\"\(name)\":\"".utf8)
        let tail = Array(("\"" + extra.map { ",\"\($0.0)\":\($0.1)" }.joined() + "}").utf8)
        let escaped = secret.withUnsafeBytes { bytes in
            bytes.reduce(0) { $0 + ($1 < 0x20 ? 6 : ($1 == UInt8(ascii: "\"") || $1 == UInt8(ascii: "\\")) ? 2 : 1) }
        }
        let hex = Array("0123456789abcdef".utf8)
        do {
            return try SecureBytes(count: head.count + escaped + tail.count) { output in
                var position = 0
                func put(_ byte: UInt8) {
                    output[position] = byte
                    position += 1
                }
                head.forEach(put)
                secret.withUnsafeBytes { bytes in
                    for byte in bytes {
                        if byte < 0x20 {
                            Array("\\u00".utf8).forEach(put)
                            put(hex[Int(byte >> 4)])
                            put(hex[Int(byte & 0x0f)])
                        } else if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                            put(UInt8(ascii: "\\"))
                            put(byte)
                        } else {
                            put(byte)
                        }
                    }
                }
                tail.forEach(put)
            }
        } catch {
            throw CLIError.usage("no locked memory for the request")
        }
    }
}

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Initialise a vault whose key source is passphrase (operator): make the root key, wrap it, unseal.",
        discussion: """
            The daemon makes a random root key, wraps it under the passphrase with Argon2id (the cost of \
            [keys] argon2_operations and argon2_memory_mib), and unseals. With --shares N --threshold T it \
            also splits the root key into N recovery shares of which any T recover it (`unseal --share`):
            they are printed once, here, and kept nowhere; give each to a different person. \
            The passphrase is read twice from the terminal without echo, or once from standard input with --stdin.
            """
    )

    @Option(help: "Recovery shares to make (2 to 255; 0 for none).") var shares: Int = 0
    @Option(help: "Shares needed to recover the key (2 to --shares; default 3, or --shares if fewer).") var threshold:
        Int?
    @Flag(help: "Read the passphrase from standard input instead of the terminal.") var stdin = false
    @OptionGroup var connection: Connection

    func validate() throws {
        guard self.shares == 0 || (2...255).contains(self.shares) else {
            throw ValidationError("--shares must be 0 or 2 to 255")
        }
        if let threshold {
            guard self.shares > 0, (2...self.shares).contains(threshold) else {
                throw ValidationError("--threshold must be 2 to --shares")
            }
        }
    }

    func run() async throws {
        try await runReporting { () throws(CLIError) in
            let passphrase = try Secret.passphrase(stdin: self.stdin, prompt: "New passphrase: ")
            if !self.stdin,
                (try Secret.fromTerminal(prompt: "Again: ") ?? nil).map({ $0.constantTimeEquals(passphrase) }) != true
            {
                throw CLIError.usage("the two passphrases differ; nothing was changed")
            }
            var extra = [("shares", self.shares)]
            if self.shares > 0 { extra.append(("threshold", self.threshold ?? min(3, self.shares))) }
            let body = try Secret.body("passphrase", passphrase, extra: extra)
            let reply = try await self.connection.client().requestSecret(.POST, "/v1/admin/init", body: body)
            guard reply.status == 201 else { throw CLIError.from(reply) }
            let shares = reply.json["shares"] as? [String] ?? []
            if self.connection.json {
                output(json: true, document: reply.json, rows: [])
                return
            }
            print("initialised and unsealed")
            if !shares.isEmpty {
                print(
                    "recovery shares (any \(reply.json["threshold"] as? Int ?? 0) of \(shares.count) recover the root key; shown once, kept nowhere):"
                )
                for share in shares { print(share) }
            }
        }
    }
}

struct Unseal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unseal the vault (operator): with the passphrase, or with recovery shares one at a time.",
        discussion: """
            The passphrase is read from the terminal without echo, or from standard input with --stdin. With \
            --share, shares are read the same way (one a line with --stdin) until the vault unseals; each answer \
            says how many are in. A refused attempt is slowed down: the next is accepted only after a delay that \
            doubles with each refusal (up to 5 minutes). Exit 0 unsealed, 1 refused or throttled, 2 the shares \
            ran out before the vault unsealed.
            """
    )

    @Flag(help: "Give recovery shares instead of the passphrase.") var share = false
    @Flag(help: "Read from standard input instead of the terminal.") var stdin = false
    @OptionGroup var connection: Connection

    func run() async throws {
        var unsealed = true
        try await runReporting { () throws(CLIError) in
            let client = try self.connection.client()
            guard self.share else {
                let passphrase = try Secret.passphrase(stdin: self.stdin)
                let reply = try await client.requestSecret(
                    .POST, "/v1/admin/unseal", body: try Secret.body("passphrase", passphrase))
                guard reply.status == 200 else { throw CLIError.from(reply) }
                print("unsealed")
                return
            }
            var given = 0
            while true {
                let next =
                    self.stdin
                    ? try Secret.fromStandardInput() : try Secret.fromTerminal(prompt: "Recovery share \(given + 1): ")
                guard let line = next else {
                    unsealed = false
                    print("still sealed: the shares ran out after \(given)")
                    return
                }
                // Blank lines are passed over; the daemon ignores spaces within a share.
                guard let share = line, !Secret.isBlank(share) else { continue }
                given += 1
                let reply = try await client.requestSecret(
                    .POST, "/v1/admin/unseal", body: try Secret.body("share", share))
                guard reply.status == 200 else { throw CLIError.from(reply) }
                if reply.json["sealed"] as? Bool == false {
                    print("unsealed")
                    return
                }
                print("share accepted: \(reply.json["shares"] as? Int ?? 0) of \(reply.json["threshold"] as? Int ?? 0)")
            }
        }
        if !unsealed { throw ExitCode(ExitStatus.incomplete) }
    }
}

struct Seal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Seal the vault (operator): close the store and zero every key; only health, status and unseal answer until unsealed."
    )

    @OptionGroup var connection: Connection

    func run() async throws {
        try await runReporting { () throws(CLIError) in
            let reply = try await self.connection.client().request(.POST, "/v1/admin/seal")
            guard reply.status == 200 else { throw CLIError.from(reply) }
            print("sealed")
        }
    }
}

struct Rotate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Rotate the key-encryption key (operator): a new epoch, every key slot rewrapped under it, the old epoch retired.",
        discussion: """
            Rewraps in requests of --step slots and shows progress on a terminal. Interrupted (a crash, a \
            signal), it is resumable: run it again and it carries on the same rotation. Exit 0 when complete.
            """
    )

    @Option(help: "Key slots per request.") var step: Int = 5000
    @OptionGroup var connection: Connection

    func validate() throws {
        guard self.step > 0 else { throw ValidationError("--step must be at least 1") }
    }

    func run() async throws {
        try await runReporting { () throws(CLIError) in
            let client = try self.connection.client()
            let terminal = isatty(2) == 1
            var rewrapped = 0
            var retired: [Int] = []
            var epoch = 0
            while true {
                let reply = try await client.request(.POST, "/v1/admin/rotate", json: ["limit": self.step])
                guard reply.status == 200 else { throw CLIError.from(reply) }
                epoch = reply.json["epoch"] as? Int ?? 0
                rewrapped += reply.json["rewrapped"] as? Int ?? 0
                retired += reply.json["retired"] as? [Int] ?? []
                let remaining = reply.json["remaining"] as? Int ?? 0
                if terminal {
                    // Progress on the terminal's standard error; the result goes to standard output.
                    let end = remaining == 0 ? "\n" : ""
                    FileHandle.standardError.write(
                        Data("\repoch \(epoch): \(rewrapped) slots rewrapped, \(remaining) to go\(end)".utf8))
                }
                if reply.json["complete"] as? Bool == true { break }
            }
            output(
                json: self.connection.json,
                document: ["epoch": epoch, "rewrapped": rewrapped, "retired": retired, "complete": true],
                rows: [
                    ("epoch", "\(epoch)"), ("rewrapped", "\(rewrapped) slots"),
                    ("retired", retired.isEmpty ? "none" : retired.map(String.init).joined(separator: ", ")),
                ]
            )
        }
    }
}

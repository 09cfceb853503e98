import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Reading a secret: from the terminal without echo, or one line of standard input (`--stdin`).
enum Secret {
    /// One line from the controlling terminal with echo off; restored however the read ends.
    static func fromTerminal(prompt: String) throws(CLIError) -> String {
        let fd = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            throw CLIError.usage("no terminal to read the secret from without echo; pass --stdin to read it from standard input")
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
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1, byte != UInt8(ascii: "\n") {
            bytes.append(byte)
        }
        defer { bytes.withUnsafeMutableBytes { if let base = $0.baseAddress { memset(base, 0, $0.count) } } }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The next line of standard input, without its newline; `nil` at the end.
    static func fromStandardInput() -> String? {
        readLine(strippingNewline: true)
    }

    /// The passphrase: the next line of standard input with `stdin`, else from the terminal without echo.
    static func passphrase(stdin: Bool, prompt: String = "Passphrase: ") throws(CLIError) -> String {
        guard stdin else { return try Self.fromTerminal(prompt: prompt) }
        guard let line = Self.fromStandardInput() else { throw CLIError.usage("no passphrase on standard input") }
        return line
    }
}

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Initialise a vault whose key source is passphrase (operator): make the root key, wrap it, unseal.",
        discussion: """
            The daemon makes a random root key, wraps it under the passphrase with Argon2id (the cost of
            [keys] argon2_operations and argon2_memory_mib), and unseals. With --shares N --threshold T it
            also splits the root key into N recovery shares of which any T recover it (`unseal --share`):
            they are printed once, here, and kept nowhere; give each to a different person.
            The passphrase is read twice from the terminal without echo, or once from standard input with --stdin.
            """
    )

    @Option(help: "Recovery shares to make (2 to 255; 0 for none).") var shares: Int = 0
    @Option(help: "Shares needed to recover the key (2 to --shares; default 3, or --shares if fewer).") var threshold: Int?
    @Flag(help: "Read the passphrase from standard input instead of the terminal.") var stdin = false
    @OptionGroup var connection: Connection

    func validate() throws {
        guard self.shares == 0 || (2...255).contains(self.shares) else { throw ValidationError("--shares must be 0 or 2 to 255") }
        if let threshold {
            guard self.shares > 0, (2...self.shares).contains(threshold) else {
                throw ValidationError("--threshold must be 2 to --shares")
            }
        }
    }

    func run() async throws {
        try await runReporting { () throws(CLIError) in
            let passphrase = try Secret.passphrase(stdin: self.stdin, prompt: "New passphrase: ")
            if !self.stdin, try Secret.fromTerminal(prompt: "Again: ") != passphrase {
                throw CLIError.usage("the two passphrases differ; nothing was changed")
            }
            var body: [String: Any] = ["passphrase": passphrase, "shares": self.shares]
            if self.shares > 0 { body["threshold"] = self.threshold ?? min(3, self.shares) }
            let reply = try await self.connection.client().requestSecret(.POST, "/v1/admin/init", json: body)
            guard reply.status == 201 else { throw CLIError.from(reply) }
            let shares = reply.json["shares"] as? [String] ?? []
            if self.connection.json {
                output(json: true, document: reply.json, rows: [])
                return
            }
            print("initialised and unsealed")
            if !shares.isEmpty {
                print("recovery shares (any \(reply.json["threshold"] as? Int ?? 0) of \(shares.count) recover the root key; shown once, kept nowhere):")
                for share in shares { print(share) }
            }
        }
    }
}

struct Unseal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unseal the vault (operator): with the passphrase, or with recovery shares one at a time.",
        discussion: """
            The passphrase is read from the terminal without echo, or from standard input with --stdin. With
            --share, shares are read the same way (one a line with --stdin) until the vault unseals; each answer
            says how many are in. A refused attempt is slowed down: the next is accepted only after a delay that
            doubles with each refusal (up to 5 minutes). Exit 0 unsealed, 1 refused or throttled, 2 the shares
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
                let reply = try await client.requestSecret(.POST, "/v1/admin/unseal", json: ["passphrase": passphrase])
                guard reply.status == 200 else { throw CLIError.from(reply) }
                print("unsealed")
                return
            }
            var given = 0
            while true {
                let text: String
                if self.stdin {
                    guard let line = Secret.fromStandardInput() else {
                        unsealed = false
                        print("still sealed: the shares on standard input ran out after \(given)")
                        return
                    }
                    text = line.trimmingCharacters(in: .whitespaces)
                    if text.isEmpty { continue }
                } else {
                    text = try Secret.fromTerminal(prompt: "Recovery share \(given + 1): ").trimmingCharacters(in: .whitespaces)
                }
                given += 1
                let reply = try await client.requestSecret(.POST, "/v1/admin/unseal", json: ["share": text])
                guard reply.status == 200 else { throw CLIError.from(reply) }
                if reply.json["sealed"] as? Bool == false {
                    print("unsealed")
                    return
                }
                print("share accepted: \(reply.json["shares"] as? Int ?? 0) of \(reply.json["threshold"] as? Int ?? 0)")
            }
        }
        if !unsealed { throw ExitCode(2) }
    }
}

struct Seal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Seal the vault (operator): close the store and zero every key; only health, status and unseal answer until unsealed."
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
        abstract: "Rotate the key-encryption key (operator): a new epoch, every key slot rewrapped under it, the old epoch retired.",
        discussion: """
            Rewraps in requests of --step slots and shows progress on a terminal. Interrupted (a crash, a
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
                    FileHandle.standardError.write(Data("\repoch \(epoch): \(rewrapped) slots rewrapped, \(remaining) to go\(end)".utf8))
                }
                if reply.json["complete"] as? Bool == true { break }
            }
            output(
                json: self.connection.json,
                document: ["epoch": epoch, "rewrapped": rewrapped, "retired": retired, "complete": true],
                rows: [("epoch", "\(epoch)"), ("rewrapped", "\(rewrapped) slots"), ("retired", retired.isEmpty ? "none" : retired.map(String.init).joined(separator: ", "))]
            )
        }
    }
}

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

internal import CaseVaultClient

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
    /// Nothing was sent: the editor failed, or its file was left empty or unchanged (1).
    case aborted(String)
    /// A signal stopped the command once what it held was cleaned up (128 + the signal, as a shell shows
    /// a process the signal ended).
    case stopped(Int32, String)

    var exitCode: Int32 {
        switch self {
        case .unreachable: return ExitStatus.unavailable
        case .forbidden: return ExitStatus.noPermission
        case .problem, .aborted: return ExitStatus.failed
        case .configuration: return ExitStatus.configuration
        case .unreadable: return ExitStatus.noInput
        case .usage: return ExitStatus.usage
        case .stopped(let signal, _): return 128 + signal
        }
    }

    var message: String {
        switch self {
        case .unreachable(let text), .forbidden(let text), .problem(let text), .configuration(let text),
            .unreadable(let text), .usage(let text), .aborted(let text):
            return text
        case .stopped(let signal, let what):
            return "stopped by signal \(signal); \(what)"
        }
    }

    /// A request that got no answer.
    init(_ error: VaultClientError) {
        switch error {
        case .unreachable(let text): self = .unreachable(text)
        case .transfer(let text): self = .problem(text)
        }
    }

    /// The error a problem reply stands for: its stable code, then its detail (what to fix), as
    /// `forbidden: …` or `agreements-missing: …`. A problem's detail never holds content.
    static func from(_ reply: VaultClient.Reply) -> CLIError {
        let detail = reply.problemDetail ?? "HTTP \(reply.status)"
        let text = "\(reply.problemCode ?? "error"): \(detail)"
        if reply.status == 403, reply.problemCode == "forbidden" {
            return .forbidden(text)
        }
        return .problem(text)
    }
}

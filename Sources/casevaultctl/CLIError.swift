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
    /// A file the command writes cannot be written (EX_CANTCREAT).
    case unwritable(String)
    /// Nothing was filed (1): the editor could not be started, failed, was killed or was lost, its file was
    /// left empty or unchanged, or the directory it edited in could not be removed.
    case aborted(String)
    /// A caught signal stopped the command once what it held was removed (`ExitStatus.stopped(by:)`); the
    /// text says what was removed.
    case stopped(Int32, String)

    var exitCode: Int32 {
        switch self {
        case .unreachable: return ExitStatus.unavailable
        case .forbidden: return ExitStatus.noPermission
        case .problem, .aborted: return ExitStatus.failed
        case .configuration: return ExitStatus.configuration
        case .unreadable: return ExitStatus.noInput
        case .usage: return ExitStatus.usage
        case .unwritable: return ExitStatus.cannotCreate
        case .stopped(let signal, _): return ExitStatus.stopped(by: signal)
        }
    }

    var message: String {
        switch self {
        case .unreachable(let text), .forbidden(let text), .problem(let text), .configuration(let text),
            .unreadable(let text), .usage(let text), .unwritable(let text), .aborted(let text):
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

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

    /// A request that got no answer.
    init(_ error: VaultClientError) {
        switch error {
        case .unreachable(let text): self = .unreachable(text)
        case .transfer(let text): self = .problem(text)
        }
    }

    /// The error a problem reply stands for.
    static func from(_ reply: VaultClient.Reply) -> CLIError {
        let detail = reply.problemDetail ?? "HTTP \(reply.status)"
        if reply.status == 403, reply.problemCode == "forbidden" {
            return .forbidden("refused: \(detail)")
        }
        return .problem("\(reply.problemCode ?? "error"): \(detail)")
    }
}

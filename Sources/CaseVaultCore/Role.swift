/// What a caller may be (docs/API.md). A caller can hold several roles; what it may do is the union.
public enum Role: Hashable, Sendable, Comparable, CustomStringConvertible {
    case director
    case mediator
    /// Discusses sessions with the mediators of the cases they are assigned to supervise (debriefs).
    case supervisor
    case intake
    case submitter
    /// An office that receives disclosures of the categories routed to it (`office:title-ix`).
    case office(String)
    case statistician
    case `operator`

    /// Parses `director`, `office:NAME`, ….
    public init?(name: String) {
        switch name {
        case "director": self = .director
        case "mediator": self = .mediator
        case "supervisor": self = .supervisor
        case "intake": self = .intake
        case "submitter": self = .submitter
        case "statistician": self = .statistician
        case "operator": self = .operator
        default:
            guard name.hasPrefix("office:"), Self.isOfficeName(String(name.dropFirst(7))) else { return nil }
            self = .office(String(name.dropFirst(7)))
        }
    }

    /// Office names are short lowercase slugs: they appear in configuration, never in logs with content.
    public static func isOfficeName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64
            && name.utf8.allSatisfy {
                ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x5f
            }
    }

    public var description: String {
        switch self {
        case .director: return "director"
        case .mediator: return "mediator"
        case .supervisor: return "supervisor"
        case .intake: return "intake"
        case .submitter: return "submitter"
        case .office(let name): return "office:\(name)"
        case .statistician: return "statistician"
        case .operator: return "operator"
        }
    }

    public static func < (lhs: Role, rhs: Role) -> Bool { lhs.description < rhs.description }
}

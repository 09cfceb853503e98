package import CaseVaultCore
internal import Foundation

/// Where a vault's PostgreSQL database is and how to reach it, read from a connection string in libpq's URI
/// form: `postgresql://USER@HOST[:PORT][,HOST[:PORT]…]/DATABASE[?PARAMETERS]`. The servers are tried in turn
/// for the writable primary (`PrimaryLocator`). A server over TCP is reached with TLS and its certificate
/// verified (`sslmode=verify-full`, the default; `sslrootcert` names the CA file, else the system's trust
/// store); a local server through its Unix socket (`host=/run/postgresql`, a directory, as libpq takes it),
/// where TLS does not apply. The password never comes from the string (`PostgresPassword`).
///
/// libpq's multi-host URIs are parsed here by hand: neither PostgresNIO nor Foundation's URL parser reads a
/// list of hosts. Errors name the part that is wrong and never repeat the string, which an operator may have
/// pasted a password into.
package struct PostgresLocation: Sendable, Equatable {
    /// One server of the list.
    package enum Server: Sendable, Equatable, CustomStringConvertible {
        case tcp(host: String, port: Int)
        /// A Unix socket in `directory`, named for `port` as PostgreSQL names it (`.s.PGSQL.PORT`).
        case socket(directory: String, port: Int)

        package var description: String {
            switch self {
            case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .socket(let directory, let port): "\(directory)/.s.PGSQL.\(port)"
            }
        }
    }

    package enum TLSMode: String, Sendable {
        /// TLS with the server's certificate checked against the CA and the host name.
        case verifyFull = "verify-full"
        /// No TLS: allowed only when every server is a local socket.
        case disable
    }

    package var servers: [Server]
    package var user: String
    package var database: String
    package var tls: TLSMode
    /// The CA certificates (PEM) a TCP server's certificate must chain to; nil for the system's trust store.
    package var rootCertificatePath: String?
    /// How long one server is given to answer before the next is tried.
    package var connectTimeoutSeconds: Int
    /// The user a local server's process must run as (libpq's `requirepeer`); nil: root or the owner of
    /// the socket's directory (`PrimaryLocator.trustedPeers`).
    package var requirePeer: String?

    static let defaultPort = 5432
    static let defaultConnectTimeout = 5

    package init(parsing text: String) throws(CaseVaultError) {
        func invalid(_ detail: String) -> CaseVaultError {
            CaseVaultError(.invalidConfiguration, "the PostgreSQL connection string \(detail)")
        }
        var rest = Substring(text)
        if rest.hasPrefix("postgresql://") {
            rest = rest.dropFirst("postgresql://".count)
        } else if rest.hasPrefix("postgres://") {
            rest = rest.dropFirst("postgres://".count)
        } else {
            throw invalid("must begin with postgresql://")
        }
        var query = Substring("")
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        var user = ""
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            guard !userInfo.contains(":") else {
                throw invalid(
                    "carries a password: give it in a file (password_file) or a systemd credential instead, and change it, for it was written in the configuration"
                )
            }
            user = try Self.decode(userInfo, what: "user name")
            rest = rest[rest.index(after: at)...]
        }
        let database = try Self.decode(path, what: "database name")

        var socketDirectories: [String] = []
        var defaultPort = Self.defaultPort
        var socketPorts: [Int] = []
        var tls = TLSMode.verifyFull
        var rootCertificatePath: String?
        var connectTimeout = Self.defaultConnectTimeout
        var requirePeer: String?
        var seen: Set<String> = []
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            guard let equals = pair.firstIndex(of: "=") else { throw invalid("has a parameter without a value") }
            let name = String(pair[..<equals])
            let value = try Self.decode(pair[pair.index(after: equals)...], what: "parameter value")
            guard seen.insert(name).inserted else { throw invalid("names the parameter \(Self.shown(name)) twice") }
            switch name {
            case "host":
                socketDirectories = value.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                guard socketDirectories.allSatisfy({ $0.hasPrefix("/") }) else {
                    throw invalid("takes in host= only socket directories, each an absolute path")
                }
            case "port":
                // One port for every server, or, as libpq takes it, one for each socket directory in host=.
                socketPorts = try value.split(separator: ",", omittingEmptySubsequences: false).map {
                    (text) throws(CaseVaultError) -> Int in try Self.port(text, invalid)
                }
                if socketPorts.count == 1 { defaultPort = socketPorts[0] }
            case "sslmode":
                guard let mode = TLSMode(rawValue: value) else {
                    throw invalid("takes sslmode=verify-full, or sslmode=disable when every server is a local socket")
                }
                tls = mode
            case "sslrootcert":
                guard value.hasPrefix("/") else { throw invalid("takes in sslrootcert= an absolute path") }
                rootCertificatePath = value
            case "connect_timeout":
                guard let seconds = Int(value), (1...60).contains(seconds) else {
                    throw invalid("takes in connect_timeout= a whole number of seconds from 1 to 60")
                }
                connectTimeout = seconds
            case "requirepeer":
                let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "._-"))
                guard !value.isEmpty, value.count <= 32, !value.hasPrefix("-"),
                    value.unicodeScalars.allSatisfy({ $0.isASCII && allowed.contains($0) })
                else {
                    throw invalid("takes in requirepeer= a user name (letters, digits, '.', '_', '-')")
                }
                requirePeer = value
            case "target_session_attrs":
                // The servers are always tried for the writable primary, as libpq's read-write does.
                guard value == "read-write" || value == "primary" else {
                    throw invalid("takes target_session_attrs=read-write only: the vault writes")
                }
            case "password", "passfile":
                throw invalid(
                    "carries a password: give it in a file (password_file) or a systemd credential instead, and change it, for it was written in the configuration"
                )
            default:
                throw invalid("has a parameter CaseVault does not take: \(Self.shown(name))")
            }
        }

        var servers: [Server] = []
        if !rest.isEmpty {
            for item in rest.split(separator: ",", omittingEmptySubsequences: false) {
                servers.append(try Self.tcpServer(item, defaultPort: defaultPort, invalid))
            }
        }
        if socketPorts.count > 1 {
            guard rest.isEmpty, socketPorts.count == socketDirectories.count else {
                throw invalid(
                    "lists several ports: give one port, or one for each socket directory in host= (and no host before the database)"
                )
            }
            servers += zip(socketDirectories, socketPorts).map { Server.socket(directory: $0, port: $1) }
        } else {
            servers += socketDirectories.map { Server.socket(directory: $0, port: defaultPort) }
        }
        guard !servers.isEmpty else {
            throw invalid("names no server: list hosts after postgresql://, or a socket directory in host=")
        }
        guard !user.isEmpty else { throw invalid("names no user: write it before the hosts, as USER@") }
        guard !database.isEmpty else { throw invalid("names no database: write it after the hosts, as /DATABASE") }
        if tls == .disable, servers.contains(where: { if case .tcp = $0 { true } else { false } }) {
            throw invalid("has sslmode=disable with a server over TCP: only a local socket goes without TLS")
        }
        self.servers = servers
        self.user = user
        self.database = database
        self.tls = tls
        self.rootCertificatePath = rootCertificatePath
        self.connectTimeoutSeconds = connectTimeout
        self.requirePeer = requirePeer
    }

    private static func tcpServer(
        _ item: Substring, defaultPort: Int, _ invalid: (String) -> CaseVaultError
    ) throws(CaseVaultError) -> Server {
        var host: Substring
        var port = defaultPort
        if item.hasPrefix("[") {
            // An IPv6 address, bracketed as in a URL.
            guard let close = item.firstIndex(of: "]") else { throw invalid("has an IPv6 address without its ]") }
            host = item[item.index(after: item.startIndex)..<close]
            let after = item[item.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw invalid("has text after an IPv6 address's ]") }
                port = try Self.port(after.dropFirst(), invalid)
            }
        } else if let colon = item.firstIndex(of: ":") {
            host = item[..<colon]
            port = try Self.port(item[item.index(after: colon)...], invalid)
        } else {
            host = item
        }
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: ".-_:"))
        guard !host.isEmpty, host.unicodeScalars.allSatisfy({ $0.isASCII && allowed.contains($0) }) else {
            throw invalid("has an empty or malformed host in its list of servers")
        }
        return .tcp(host: String(host), port: port)
    }

    private static func port(_ text: Substring, _ invalid: (String) -> CaseVaultError) throws(CaseVaultError) -> Int {
        guard let port = Int(text), (1...65535).contains(port) else {
            throw invalid("has a port that is not a number from 1 to 65535")
        }
        return port
    }

    private static func decode(_ text: Substring, what: String) throws(CaseVaultError) -> String {
        guard let decoded = String(text).removingPercentEncoding,
            !decoded.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw CaseVaultError(.invalidConfiguration, "the PostgreSQL connection string has a malformed \(what)")
        }
        return decoded
    }

    /// libpq's parameter names: the only names an error repeats, since text a reader took for a parameter's
    /// name may be part of a password written where the user name goes (`u:secret?x=y@host`).
    static let libpqParameters: Set<String> = [
        "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth", "channel_binding",
        "connect_timeout", "client_encoding", "options", "application_name", "fallback_application_name",
        "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
        "replication", "gssencmode", "sslmode", "requiressl", "sslcompression", "sslcert", "sslkey",
        "sslpassword", "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer",
        "ssl_min_protocol_version", "ssl_max_protocol_version", "krbsrvname", "gsslib", "gssdelegation",
        "service", "target_session_attrs", "load_balance_hosts",
    ]

    /// A parameter's name as an error shows it: quoted when it is one of libpq's, else not at all.
    private static func shown(_ name: String) -> String {
        Self.libpqParameters.contains(name) ? Self.quoted(name) : "(a name libpq does not know)"
    }

    /// A parameter name quoted: short, and only the characters a name has.
    private static func quoted(_ name: String) -> String {
        let kept = name.prefix(32).filter { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
        return "\"\(kept)\""
    }
}

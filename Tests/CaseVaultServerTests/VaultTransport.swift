import CaseVaultAudit
import CaseVaultConfiguration
import CaseVaultDaemon
import CaseVaultServer
import CaseVaultStore
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

/// A vault a test talks to as a given peer: the real daemon over its socket, or the same router in
/// process. Tests written against it run both ways: in process without root and in seconds, and against
/// the daemon where a real socket and real uids matter.
protocol VaultTransport {
    func send(_ method: String, _ path: String, as peer: Peer, body: String?) async throws -> Client.Reply
}

/// The real daemon: curl over its socket, run as the peer (root only: setpriv).
struct OverTheSocket: VaultTransport {
    let daemon: DaemonProcess

    func send(_ method: String, _ path: String, as peer: Peer, body: String?) async throws -> Client.Reply {
        try Client.request(self.daemon, method, path, as: peer, body: body)
    }
}

/// The daemon's router, middlewares and services in this process (`buildInProcessApplication`), on a vault
/// of its own. The peer is named in a header that only this transport's identity function reads; the
/// daemon's router takes its peers from the kernel and never looks at it.
struct InProcess: VaultTransport {
    static let peerHeader = HTTPFields.Element.Name("x-casevault-test-peer")!
    let client: any TestClientProtocol

    func send(_ method: String, _ path: String, as peer: Peer, body: String?) async throws -> Client.Reply {
        var headers = HTTPFields()
        // "uid;gid;groups": no space at the end, which a header value loses.
        headers[Self.peerHeader] = "\(peer.uid);\(peer.gid);" + peer.groups.map(String.init).joined(separator: ",")
        if body != nil { headers[.contentType] = "application/json" }
        let response = try await self.client.execute(
            uri: path, method: try #require(HTTPRequest.Method(method)), headers: headers,
            body: body.map { ByteBuffer(string: $0) }
        )
        return Client.Reply(
            status: Int(response.status.code), contentType: response.headers[.contentType] ?? "",
            body: Data(buffer: response.body),
            retryAfter: response.headers[.retryAfter],
            mediaType: response.headers[HTTPFields.Element.Name("casevault-media-type")!]
        )
    }

    /// The peer a request names, or nobody (refused as unidentified).
    static func identify(_ request: Request) -> PeerIdentity? {
        guard let text = request.headers[Self.peerHeader] else { return nil }
        let parts = text.split(separator: ";", omittingEmptySubsequences: false)
        guard parts.count == 3, let uid = UInt32(parts[0]), let gid = UInt32(parts[1]) else { return nil }
        return PeerIdentity(uid: uid, gid: gid, groups: parts[2].split(separator: ",").compactMap { UInt32($0) })
    }

    /// Runs `body` against a new vault configured as `DaemonProcess` would configure the daemon, with
    /// `roles` and `extra`; closes it after, as the daemon does at stop.
    static func withVault<T: Sendable>(
        roles: String, extra: String = "", _ body: @escaping @Sendable (InProcess) async throws -> T
    ) async throws -> T {
        let root = DaemonProcess.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try DaemonProcess.writeConfiguration(
            root: root, socket: root + "/unused.sock", socketGroup: nil, roles: roles, extra: extra)
        let configuration = try DaemonConfiguration.load(path: root + "/casevault.toml")
        let base = URL(fileURLWithPath: root)
        let storeConfiguration = try configuration.storeConfiguration(relativeTo: base)
        var logger = Logger(label: "in-process")
        logger.logLevel = .warning
        let store = try RecordStore.open(storeConfiguration, logger: logger)
        defer {
            store.close()
            store.wipeKeys()
        }
        let keeper = VaultKeeper(unsealed: store, logger: logger)
        // The daemon's own way to open the audit log and attach the store to it.
        let audit = try Daemon.openAudit(
            configuration, storeConfiguration, keeper: keeper, acceptAuditBreak: false, logger: logger)
        defer { audit.close() }
        let application = buildInProcessApplication(
            configuration: try configuration.serverConfiguration(relativeTo: base), keeper: keeper, audit: audit,
            roleMap: try configuration.roleMap(), logger: logger, identify: Self.identify
        )
        return try await application.test(.router) { client in try await body(InProcess(client: client)) }
    }
}

extension VaultTransport {
    /// One request; records an issue when the status is not `expect`.
    @discardableResult
    func call(
        _ method: String, _ path: String, as peer: Peer = .root, body: String? = nil, expect: Int? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> Client.Reply {
        let reply = try await self.send(method, path, as: peer, body: body)
        if let expect {
            #expect(
                reply.status == expect, "\(method) \(path): \(String(decoding: reply.body, as: UTF8.self))",
                sourceLocation: sourceLocation
            )
        }
        return reply
    }

    /// Opens a case as `director` with `mediators` (who must be on the roster); returns its id.
    func openCase(by director: Peer, mediators: [UInt32], participants: Int = 2) async throws -> String {
        try await self.call(
            "POST", "/v1/cases", as: director, body: Bodies.openCase(participants: participants, mediators: mediators),
            expect: 201
        )
        .string("case_id")
    }

    /// Files a record; returns the reply.
    @discardableResult
    func file(
        _ caseID: String, _ body: String, as peer: Peer, expect: Int? = 201,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> Client.Reply {
        try await self.call(
            "POST", "/v1/cases/\(caseID)/records", as: peer, body: body, expect: expect, sourceLocation: sourceLocation)
    }
}

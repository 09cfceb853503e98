import CaseVaultCore
import CaseVaultPostgres
import Foundation
import Logging
import PostgresNIO
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The password over TCP goes only inside TLS, to the server whose certificate the configured CA signed for
/// the host named: against a real PostgreSQL 15 primary listening on 127.0.0.1 with TLS, whose certificate
/// the test changes under it.
@Suite("Reaching PostgreSQL over TCP with TLS verified", .serialized)
struct PostgresTLSTests {
    let logger = Logger(label: "casevault.test.postgres")

    @Test(
        "over TCP the locator connects inside TLS to a server whose certificate the CA in sslrootcert signed for the host; a certificate of another CA, one for another host name, a CA it does not trust and a server without TLS are each refused as failed TLS"
    )
    func tlsIsVerified() async throws {
        let certificates = try TestCertificates()
        let clusters = try PostgresClusters(tls: (certificates.serving, certificates.servingKey))
        defer { clusters.tearDown() }
        // The server reads the files again at each reload: they stay until the test ends.
        defer { withExtendedLifetime(certificates) {} }
        func locator(trusting ca: String) throws -> PrimaryLocator {
            PrimaryLocator(
                location: try PostgresLocation(
                    parsing:
                        "postgresql://\(PostgresClusters.user)@localhost:\(clusters.primaryPort)/\(PostgresClusters.database)?sslrootcert=\(ca)&connect_timeout=5"
                ),
                password: clusters.password, logger: self.logger)
        }
        let trusting = try locator(trusting: certificates.authority)

        // The right certificate: a session, and the server says it runs inside TLS.
        let (connection, server) = try await trusting.connect()
        defer { connection.closeAtExit() }
        #expect(server == .tcp(host: "localhost", port: clusters.primaryPort))
        var encrypted: Bool?
        for try await ssl in try await connection.query(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", logger: self.logger
        ).decode(Bool.self) {
            encrypted = ssl
        }
        try await connection.close()
        #expect(encrypted == true)

        // A CA the vault does not trust for this server.
        try await self.expectFailedTLS(try locator(trusting: certificates.otherAuthority))
        // The server presents a certificate another CA signed for the same name, then one the right CA signed
        // for another name.
        try certificates.serve(certificates.impostor, clusters)
        try clusters.reloadTLS(on: true)
        try await self.expectFailedTLS(trusting)
        try certificates.serve(certificates.otherName, clusters)
        try clusters.reloadTLS(on: true)
        try await self.expectFailedTLS(trusting)
        // A server that does not speak TLS is not spoken to in clear.
        try certificates.serve(certificates.genuine, clusters)
        try clusters.reloadTLS(on: false)
        try await self.expectFailedTLS(trusting)
        // And with TLS on again, the right certificate is accepted again.
        try clusters.reloadTLS(on: true)
        #expect(await trusting.survey().map(\.outcome) == [.primary])
    }

    /// `locator` finds no writable server, its one server's outcome failed TLS, and the error says so.
    func expectFailedTLS(_ locator: PrimaryLocator, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        #expect(await locator.survey().map(\.outcome) == [.tlsFailed], sourceLocation: sourceLocation)
        let error = await #expect(throws: CaseVaultError.self, sourceLocation: sourceLocation) {
            // Closed if it is made after all (PostgresNIO traps on a connection released open).
            let (connection, _) = try await locator.connect()
            try await connection.close()
        }
        #expect(error?.code == .storageFailure, sourceLocation: sourceLocation)
        #expect(
            error?.message.contains("1 failed TLS") == true, "\(String(describing: error))",
            sourceLocation: sourceLocation)
    }
}

/// Certificates made with the openssl command for one test, in a private directory that the server's user
/// may read: a CA and a server certificate it signed for `localhost` and 127.0.0.1 (`genuine`), a second
/// CA and a certificate it signed for the same names (`impostor`), and one the first CA signed for another
/// host name (`otherName`). The server reads its certificate and key from `serving` and `servingKey`.
final class TestCertificates {
    let directory: String
    var authority: String { self.directory + "/ca.crt" }
    var otherAuthority: String { self.directory + "/other-ca.crt" }
    var serving: String { self.directory + "/serving.crt" }
    var servingKey: String { self.directory + "/serving.key" }
    let genuine = "genuine"
    let impostor = "impostor"
    let otherName = "other-name"

    init() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") else {
            throw PostgresClusters.Failure("openssl is not installed: `make test` installs it")
        }
        var template = Array("/tmp/casevault-tls-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw PostgresClusters.Failure("mkdtemp failed") }
        self.directory = String(cString: made)
        do {
            try self.makeAuthority("ca", name: "CaseVault test CA")
            try self.makeAuthority("other-ca", name: "CaseVault test CA")
            try self.makeServer(self.genuine, authority: "ca", names: "DNS:localhost,IP:127.0.0.1")
            try self.makeServer(self.impostor, authority: "other-ca", names: "DNS:localhost,IP:127.0.0.1")
            try self.makeServer(self.otherName, authority: "ca", names: "DNS:db.example")
            try self.copy(self.genuine)
            // The server runs as nobody under root: it must reach the directory and read its files.
            if geteuid() == 0 {
                for path in [self.directory, self.serving, self.servingKey] {
                    guard chown(path, 65534, 65534) == 0 else { throw PostgresClusters.Failure("chown \(path)") }
                }
            }
        } catch {
            try? FileManager.default.removeItem(atPath: self.directory)
            throw error
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: self.directory) }

    /// Has `clusters`' primary present the certificate and key named `name` (at its next `reloadTLS`).
    func serve(_ name: String, _ clusters: PostgresClusters) throws {
        try self.copy(name)
        try clusters.own(self.serving)
        try clusters.own(self.servingKey)
    }

    private func copy(_ name: String) throws {
        for (from, to) in [("\(name).crt", self.serving), ("\(name).key", self.servingKey)] {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: self.directory + "/" + from))
            try bytes.write(to: URL(fileURLWithPath: to))
            guard chmod(to, 0o600) == 0 else { throw PostgresClusters.Failure("chmod \(to)") }
        }
    }

    private func makeAuthority(_ name: String, name subject: String) throws {
        try self.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            "\(name).key", "-out", "\(name).crt", "-days", "2", "-subj", "/CN=\(subject)", "-addext",
            "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
    }

    private func makeServer(_ name: String, authority: String, names: String) throws {
        try Data(
            """
            basicConstraints = critical, CA:FALSE
            keyUsage = critical, digitalSignature
            extendedKeyUsage = serverAuth
            subjectAltName = \(names)

            """.utf8
        ).write(to: URL(fileURLWithPath: self.directory + "/\(name).ext"))
        try self.openssl([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(name)",
        ])
        try self.openssl([
            "x509", "-req", "-in", "\(name).csr", "-CA", "\(authority).crt", "-CAkey", "\(authority).key",
            "-CAcreateserial", "-out", "\(name).crt", "-days", "2", "-extfile", "\(name).ext",
        ])
    }

    private func openssl(_ arguments: [String]) throws {
        let (status, output) = try PostgresClusters.spawn(
            ["/usr/bin/openssl"] + arguments, environment: ["PATH": "/usr/bin:/bin"], in: self.directory)
        guard status == 0 else {
            throw PostgresClusters.Failure("openssl \(arguments[0]) exited with \(status): \(output)")
        }
    }
}

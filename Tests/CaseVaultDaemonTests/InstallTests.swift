import CaseVaultConfiguration
import CaseVaultCore
import CaseVaultDaemon
import Foundation
import Testing

@Suite("make install")
struct InstallTests {
    static func install(_ destination: String, prefix: String) throws -> (status: Int32, output: String) {
        try Command.run(
            "/usr/bin/make",
            [
                "-C", DaemonConfigurationTests.repository.path, "install", "DESTDIR=\(destination)", "PREFIX=\(prefix)",
                "BUILT=\(SystemdUnitTests.binaries)",
            ])
    }

    /// Every regular file under `root`, relative, with its mode.
    static func tree(_ root: String) -> [String: Int] {
        var files: [String: Int] = [:]
        let enumerator = FileManager.default.enumerator(atPath: root)
        while let name = enumerator?.nextObject() as? String {
            let attributes = try? FileManager.default.attributesOfItem(atPath: root + "/" + name)
            if attributes?[.type] as? FileAttributeType == .typeRegular {
                files["/" + name] = (attributes?[.posixPermissions] as? NSNumber)?.intValue
            }
        }
        return files
    }

    @Test(
        "make install DESTDIR=… lays out binaries, units, sysusers/tmpfiles, completions, man pages, docs and the configuration; a second install keeps an edited configuration"
    )
    func layout() throws {
        let destination = NSTemporaryDirectory() + "casevault-install-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: destination) }
        let first = try Self.install(destination, prefix: "/opt/casevault")
        #expect(first.status == 0, "\(first.output)")
        let p = "/opt/casevault"
        let expected: [String: Int] = [
            "\(p)/bin/casevaultd": 0o755, "\(p)/bin/casevaultctl": 0o755,
            "\(p)/lib/systemd/system/casevault.service": 0o644, "\(p)/lib/systemd/system/casevault.socket": 0o644,
            "\(p)/lib/systemd/system/casevault-sweep.service": 0o644,
            "\(p)/lib/systemd/system/casevault-sweep.timer": 0o644,
            "\(p)/lib/sysusers.d/casevault.conf": 0o644, "\(p)/lib/tmpfiles.d/casevault.conf": 0o644,
            "\(p)/share/bash-completion/completions/casevaultctl": 0o644,
            "\(p)/share/bash-completion/completions/casevaultd": 0o644,
            "\(p)/share/zsh/site-functions/_casevaultctl": 0o644, "\(p)/share/zsh/site-functions/_casevaultd": 0o644,
            "\(p)/share/fish/vendor_completions.d/casevaultctl.fish": 0o644,
            "\(p)/share/fish/vendor_completions.d/casevaultd.fish": 0o644,
            "\(p)/share/doc/casevault/README.md": 0o644, "\(p)/share/doc/casevault/openapi.yaml": 0o644,
            "\(p)/share/doc/casevault/ARCHITECTURE.md": 0o644, "\(p)/share/doc/casevault/SECURITY.md": 0o644,
            "\(p)/share/doc/casevault/OPERATIONS.md": 0o644, "\(p)/share/doc/casevault/API.md": 0o644,
            "\(p)/share/doc/casevault/TESTING.md": 0o644,
            "\(p)/share/doc/casevault/casevault.toml": 0o644, "\(p)/share/doc/casevault/casevault-sweep.cron": 0o644,
            "\(p)/share/man/man1/casevaultctl.1": 0o644, "\(p)/share/man/man8/casevaultd.8": 0o644,
            "/etc/casevault/casevault.toml": 0o644,
        ]
        let tree = Self.tree(destination)
        #expect(
            Set(tree.keys) == Set(expected.keys),
            "extra: \(Set(tree.keys).subtracting(expected.keys).sorted()), missing: \(Set(expected.keys).subtracting(tree.keys).sorted())"
        )
        for (path, mode) in expected {
            #expect(tree[path] == mode, "\(path): mode \(String(tree[path] ?? 0, radix: 8))")
        }
        // Units name the installed paths, and the completions are real scripts.
        let service = try String(
            contentsOfFile: destination + "\(p)/lib/systemd/system/casevault.service", encoding: .utf8)
        #expect(service.contains("ExecStart=\(p)/bin/casevaultd --config /etc/casevault/casevault.toml"))
        let completion = try String(
            contentsOfFile: destination + "\(p)/share/bash-completion/completions/casevaultctl", encoding: .utf8)
        #expect(completion.contains("sweep") && completion.contains("doctor"))
        let manual = try String(contentsOfFile: destination + "\(p)/share/man/man1/casevaultctl.1", encoding: .utf8)
        #expect(
            manual.hasPrefix(".TH CASEVAULTCTL 1") && manual.contains(".SS \"casevaultctl sweep\"")
                && manual.contains("\\-\\-dry\\-run"))
        let daemonManual = try String(contentsOfFile: destination + "\(p)/share/man/man8/casevaultd.8", encoding: .utf8)
        #expect(daemonManual.contains("\\-\\-config") && daemonManual.contains("\\-\\-log\\-level"))
        let configuration = destination + "/etc/casevault/casevault.toml"
        #expect(
            try String(contentsOfFile: configuration, encoding: .utf8)
                == String(
                    contentsOf: DaemonConfigurationTests.repository.appendingPathComponent(
                        "Config/casevault.host.toml"), encoding: .utf8))

        try (try String(contentsOfFile: configuration, encoding: .utf8) + "\n# edited by the operator\n")
            .write(toFile: configuration, atomically: true, encoding: .utf8)
        let second = try Self.install(destination, prefix: "/opt/casevault")
        #expect(second.status == 0 && second.output.contains("keeping"), "\(second.output)")
        #expect(try String(contentsOfFile: configuration, encoding: .utf8).hasSuffix("# edited by the operator\n"))
    }

    @Test("the host configuration example is valid: every key known, every rule and office well formed")
    func hostConfiguration() throws {
        let text = try String(
            contentsOf: DaemonConfigurationTests.repository.appendingPathComponent("Config/casevault.host.toml"),
            encoding: .utf8)
        // Its group and user names exist on a real host, not here: stand numeric ids in for them.
        let resolvable = text.replacingOccurrences(
            of: #""(group):[a-z-]+""#, with: "\"gid:60000\"", options: .regularExpression
        )
        .replacingOccurrences(of: #""(user):[a-z-]+""#, with: "\"uid:60000\"", options: .regularExpression)
        let configuration = try DaemonConfiguration.parse(resolvable)
        #expect(configuration.server.socketPath == "/run/casevault/casevault.sock")
        #expect(try configuration.retentionSchedule() == RetentionSchedule.standard)
    }
}

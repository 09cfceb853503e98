import Foundation
import Testing

/// `casevaultctl` is a shell over the client library: the binary built from it carries no code of the
/// server, the daemon or Hummingbird. Read from the binary itself, by the module names Swift mangles into
/// every symbol (`15CaseVaultServer`: the length, then the name).
@Suite("What casevaultctl links")
struct CLILinkageTests {
    static func modules(in binary: String) throws -> (Set<String>) {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: binary), options: .alwaysMapped)
        var found = Set<String>()
        for module in [
            "CaseVaultServer", "CaseVaultDaemon", "Hummingbird", "CaseVaultClient", "CaseVaultConfiguration",
        ] {
            if bytes.range(of: Data("\(module.utf8.count)\(module)".utf8)) != nil {
                found.insert(module)
            }
        }
        return found
    }

    @Test("casevaultctl links the client and the configuration reader, never the server or the daemon")
    func cliLinksOnlyTheClient() throws {
        let cli = try Self.modules(in: DaemonProcess.binary("casevaultctl"))
        #expect(cli.contains("CaseVaultClient"))
        #expect(cli.contains("CaseVaultConfiguration"))
        #expect(!cli.contains("CaseVaultServer"))
        #expect(!cli.contains("CaseVaultDaemon"))
        #expect(!cli.contains("Hummingbird"))
        // The same reading finds the server in the daemon, so an absence above is one.
        let daemon = try Self.modules(in: DaemonProcess.binary("casevaultd"))
        #expect(daemon.isSuperset(of: ["CaseVaultServer", "CaseVaultDaemon", "Hummingbird"]))
    }
}

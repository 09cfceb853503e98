// `make bench`'s framework floor: Hummingbird and SwiftNIO alone on a Unix socket (HTTP/1.1, no idle timer, as
// casevaultd sets them up), answering every GET with the same 4 KiB body, and every POST, once its body is
// read, with a small one; doing nothing else: no peer identity, no audit, no store, no JSON. What it serves
// against nginx, under the same load generator, is the most casevaultd could serve on this stack; the
// distance from it to casevaultd is what the vault's own work costs. Never part of the product.
import ArgumentParser
import Hummingbird
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

struct Floor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "casevault-floor",
        abstract: "Answers every GET with a constant 4 KiB body, and every POST with a small one, on a Unix socket.")

    @Option(help: "The socket's path (removed first if it exists).")
    var socket: String

    @Flag(
        help: """
            Run handlers on Swift's cooperative pool instead of the event loops (casevaultd makes the loops \
            Swift's executor; a bare server may serve more without).
            """)
    var pool = false

    func run() async throws {
        unlink(self.socket)
        let body = ByteBuffer(repeating: 0x61, count: 4096)
        let router = Router()
        router.get("**") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: body))
        }
        // A POST's body is read whole, as casevaultd reads a record's, and answered with an id-sized body.
        let created = ByteBuffer(string: #"{"record_id":"00000000000000000000000000000000"}"#)
        router.post("**") { request, _ in
            _ = try await request.body.collect(upTo: 2 << 20)
            return Response(
                status: .created, headers: [.contentType: "application/json"], body: .init(byteBuffer: created))
        }
        let application = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: nil)),
            configuration: ApplicationConfiguration(address: .unixDomainSocket(path: self.socket), serverName: nil)
        )
        try await application.runService()
    }
}

/// The command's asynchronous `main` (top-level code would pick the synchronous one).
func runCommand() async {
    await Floor.main()
}

// As casevaultd does, before anything async starts, unless asked not to.
if !CommandLine.arguments.contains("--pool") {
    _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
}
await runCommand()

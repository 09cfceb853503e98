// casevaultd: opens the sealed store, recovers from any crash, and holds it open until SIGTERM or SIGINT.
// The Unix-socket API arrives with the server layer; this entry point stays a thin shim over the libraries.
import ArgumentParser
import CCaseVaultShims
import CaseVaultCore
import CaseVaultStore
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

struct Daemon: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "casevaultd",
        abstract: "The CaseVault daemon: keeps a mediation service's records sealed."
    )

    @Option(help: "The data directory (0700). Default: the embedded default inside the checkout.")
    var dataDirectory: String = ".casevault/data"

    @Option(help: "The root key file, outside the data directory; created (0600) on first start.")
    var keyFile: String = ".casevault/keys/root.key"

    @Option(help: "The largest record content accepted, in bytes.")
    var maxContentBytes: Int = 1 << 20

    func run() throws {
        var logger = Logger(label: "casevaultd")
        logger.logLevel = .info
        guard casevault_disable_core_dumps() == 0 else {
            throw ValidationError("could not disable core dumps; refusing to hold keys in a dumpable process")
        }
        // Block the stop signals before any thread starts, then wait for them synchronously.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGTERM)
        sigaddset(&stopSignals, SIGINT)
        pthread_sigmask(SIG_BLOCK, &stopSignals, nil)

        let store: RecordStore
        do {
            store = try RecordStore.open(
                StoreConfiguration(
                    dataDirectory: URL(fileURLWithPath: self.dataDirectory),
                    rootKeyFile: URL(fileURLWithPath: self.keyFile),
                    maxContentBytes: self.maxContentBytes
                ),
                logger: logger
            )
        } catch {
            logger.critical("cannot open the store", metadata: ["error.code": "\(error.code.rawValue)"])
            FileHandle.standardError.write(Data("casevaultd: \(error.message)\n".utf8))
            throw ExitCode(Int32(2))
        }
        logger.info(
            "store open; waiting for SIGTERM",
            metadata: ["store.data_directory": "\(self.dataDirectory)", "store.key_file": "\(self.keyFile)"]
        )
        var received: Int32 = 0
        sigwait(&stopSignals, &received)
        logger.info("stopping", metadata: ["signal": "\(received)"])
        store.close()
    }
}

Daemon.main()

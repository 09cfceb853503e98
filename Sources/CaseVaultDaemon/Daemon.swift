internal import CCaseVaultShims
public import CaseVaultCore
internal import CaseVaultStore
public import Foundation
public import Logging

#if canImport(Glibc)
internal import Glibc
#endif

/// The daemon's lifecycle: refuse to run dumpable, open the store (which recovers from any crash), hold it
/// until SIGTERM or SIGINT, close it. The Unix-socket API joins here as a service of its own.
public enum Daemon {
    /// Runs until a stop signal. Throws if the store cannot be opened.
    public static func run(configuration: DaemonConfiguration, base: URL, logger: Logger) throws(CaseVaultError) {
        guard casevault_disable_core_dumps() == 0 else {
            throw CaseVaultError(.keyUnavailable, "core dumps could not be disabled; refusing to hold keys in a dumpable process")
        }
        // Block the stop signals before any thread starts, then wait for them synchronously.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGTERM)
        sigaddset(&stopSignals, SIGINT)
        pthread_sigmask(SIG_BLOCK, &stopSignals, nil)

        let storeConfiguration = configuration.storeConfiguration(relativeTo: base)
        let store = try RecordStore.open(storeConfiguration, logger: logger)
        logger.info(
            "store open; waiting for SIGTERM",
            metadata: [
                "store.data_directory": "\(storeConfiguration.dataDirectory.path)",
                "store.root_key_file": "\(storeConfiguration.rootKeyFile.path)",
            ]
        )
        var received: Int32 = 0
        sigwait(&stopSignals, &received)
        logger.info("stopping", metadata: ["signal": "\(received)"])
        store.close()
    }
}

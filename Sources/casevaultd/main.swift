// casevaultd's entry: the event loops become Swift's executor before anything async starts.
import CaseVaultDaemon

/// The command's asynchronous `main` (top-level code would pick the synchronous one).
func runCommand() async {
    await CaseVaultD.main()
}

Daemon.takeOverConcurrency()
await runCommand()

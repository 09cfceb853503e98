import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM, SIGHUP and SIGINT, caught while a command holds something that must not outlive it (an
/// editor's directory, a download's file): each is handed to `handler` on a queue of its own instead of
/// ending the process, until `restore()` gives them back their default action. Made before the thing it
/// guards exists, and restored only once it is gone.
final class StopSignals {
    static let caught: [Int32] = [SIGTERM, SIGHUP, SIGINT]

    let queue = DispatchQueue(label: "casevaultctl.stop-signals")
    private var sources: [any DispatchSourceSignal] = []

    init(_ handler: @escaping @Sendable (Int32) -> Void) {
        for signal in Self.caught {
            // Dispatch watches a signal whose default action is set aside.
            Glibc.signal(signal, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signal, queue: self.queue)
            source.setEventHandler { handler(signal) }
            source.resume()
            self.sources.append(source)
        }
    }

    /// The signals end the process again.
    func restore() {
        for source in self.sources { source.cancel() }
        self.sources = []
        for signal in Self.caught { Glibc.signal(signal, SIG_DFL) }
    }

    deinit {
        self.restore()
    }
}

import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM, SIGHUP and SIGINT, caught while a command holds something that must not outlive it (an
/// editor's directory, a download's file): each is handed to `handler` on a queue of its own instead of
/// ending the process, until `restore()` gives each back the handling it had (a signal `nohup` or a shell
/// set aside stays set aside). Made before the thing it guards exists, and restored only once it is gone.
final class StopSignals {
    static let caught: [Int32] = [SIGTERM, SIGHUP, SIGINT]

    let queue = DispatchQueue(label: "casevaultctl.stop-signals")
    private var sources: [any DispatchSourceSignal] = []
    private var previous: [(Int32, sigaction)] = []

    init(_ handler: @escaping @Sendable (Int32) -> Void) {
        for signal in Self.caught {
            var before = sigaction()
            sigaction(signal, nil, &before)
            self.previous.append((signal, before))
            // Dispatch watches a signal whose default action is set aside.
            Glibc.signal(signal, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signal, queue: self.queue)
            source.setEventHandler { handler(signal) }
            source.resume()
            self.sources.append(source)
        }
    }

    /// The signals are handled as before again. Once is enough; more does nothing.
    func restore() {
        for source in self.sources { source.cancel() }
        self.sources = []
        for (signal, before) in self.previous {
            var action = before
            sigaction(signal, &action, nil)
        }
        self.previous = []
    }

    deinit {
        self.restore()
    }
}

import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs the user's editor (`$VISUAL`, then `$EDITOR`, then `vi`, through `/bin/sh -c exec`) on a
/// file in a `PrivateScratch` directory and returns what it holds once the editor is done. The directory
/// and everything in it are removed on every way out: the editor finished, failed or was killed (even with
/// SIGKILL), the file could not be read, or casevaultctl was stopped with SIGTERM, SIGHUP or SIGINT while
/// the editor ran (the editor is then sent the same signal). Only SIGKILL of casevaultctl itself leaves the
/// directory, and the next run removes it.
enum Editor {
    /// The most an edited file may hold: the daemon's own limit on a record's content.
    static let maxBytes = 64 << 20

    /// The signals that stop casevaultctl while the editor runs, after the clean-up.
    static let stopping: [Int32] = [SIGTERM, SIGHUP, SIGINT]

    /// Edits `template` in a file named `name`; returns the file's text once the editor exits with 0.
    static func edit(_ template: String, name: String) throws(CLIError) -> String {
        let scratch = try PrivateScratch.make()
        defer { scratch.remove() }
        let path = scratch.path + "/" + name
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw CLIError.usage("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        let bytes = Array(template.utf8)
        let written = write(descriptor, bytes, bytes.count)
        close(descriptor)
        guard written == bytes.count else {
            throw CLIError.usage("cannot write \(path): \(String(cString: strerror(errno)))")
        }

        let editor = Self.command()
        let status = try Self.run(editor, path: path, scratch: scratch)
        // wait(2)'s status, as <sys/wait.h>'s macros (which Swift does not import) read it.
        let signal = status & 0x7f
        if signal != 0 {
            throw CLIError.aborted(
                "the editor (\(editor)) was killed by signal \(signal); its files were removed and nothing was filed"
            )
        }
        guard (status >> 8) & 0xff == 0 else {
            throw CLIError.aborted(
                "the editor (\(editor)) exited with status \((status >> 8) & 0xff); its files were removed and nothing was filed"
            )
        }
        return try Self.read(path)
    }

    /// The editor to run: `$VISUAL`, then `$EDITOR`, then `vi`.
    static func command() -> String {
        let environment = ProcessInfo.processInfo.environment
        return [environment["VISUAL"], environment["EDITOR"]].compactMap { $0 }.first { !$0.isEmpty } ?? "vi"
    }

    /// Starts `editor` on `path` and waits for it; its wait status. A SIGTERM, SIGHUP or SIGINT that reaches
    /// casevaultctl meanwhile is passed to the editor, the scratch directory is removed, and casevaultctl
    /// exits with 128 + the signal. (A full-screen editor takes the terminal's Ctrl-C as a key, not as
    /// SIGINT.)
    private static func run(_ editor: String, path: String, scratch: PrivateScratch) throws(CLIError) -> Int32 {
        let child = Atomic<Int32>(0)
        let queue = DispatchQueue(label: "casevaultctl.editor.signals")
        var sources: [any DispatchSourceSignal] = []
        for signal in Self.stopping {
            Glibc.signal(signal, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signal, queue: queue)
            source.setEventHandler {
                let pid = child.load(ordering: .acquiring)
                if pid > 0 { kill(pid, signal) }
                scratch.remove()
                FileHandle.standardError.write(
                    Data(
                        "casevaultctl: stopped by signal \(signal); the editor's files were removed and nothing was filed\n"
                            .utf8))
                exit(128 + signal)
            }
            source.resume()
            sources.append(source)
        }
        defer {
            for source in sources { source.cancel() }
            for signal in Self.stopping { Glibc.signal(signal, SIG_DFL) }
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in Self.stopping + [SIGQUIT, SIGPIPE] { sigaddset(&defaults, signal) }
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        // As git runs it, so that the editor's command may carry its own arguments (`code --wait`); `exec`, so
        // that the editor itself is the child the signals above are passed to.
        let arguments = ["/bin/sh", "-c", "exec " + editor + " \"$@\"", editor, path]
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, "/bin/sh", nil, &attributes, argv, environ)
        guard spawned == 0 else {
            throw CLIError.aborted("cannot start the editor (\(editor)): \(String(cString: strerror(spawned)))")
        }
        child.store(pid, ordering: .releasing)
        var status: Int32 = 0
        // WUNTRACED is not asked for: a stopped editor (Ctrl-Z) is waited for until it goes on and ends.
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else {
                throw CLIError.aborted("lost the editor (\(editor)): \(String(cString: strerror(errno)))")
            }
        }
        child.store(0, ordering: .releasing)
        return status
    }

    /// The edited file's text: a regular file (not a link the editor put in its place), at most `maxBytes`.
    private static func read(_ path: String) throws(CLIError) -> String {
        let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw CLIError.aborted(
                "the edited file is gone or is not a plain file (\(String(cString: strerror(errno)))); nothing was filed"
            )
        }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw CLIError.aborted("the edited file is not a plain file; nothing was filed")
        }
        guard info.st_size <= Self.maxBytes else {
            throw CLIError.usage("the edited file holds more than \(Self.maxBytes) bytes; nothing was filed")
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var offset = 0
        while offset < bytes.count {
            let count = bytes.withUnsafeMutableBytes { raw in
                Glibc.read(descriptor, raw.baseAddress! + offset, raw.count - offset)
            }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            offset += count
        }
        guard let text = String(validating: bytes[..<offset], as: UTF8.self) else {
            throw CLIError.usage("the edited file is not UTF-8 text; nothing was filed")
        }
        return text
    }
}

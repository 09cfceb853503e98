import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs the user's editor (`$VISUAL`, then `$EDITOR`, then `vi`, through `/bin/sh -c exec`) on a
/// file in a `PrivateScratch` directory and returns what it holds once the editor is done. The directory
/// and everything in it are removed on every way out: the editor finished, failed or was killed (even with
/// SIGKILL), the file could not be read, or casevaultctl was stopped with SIGTERM, SIGHUP or SIGINT (the
/// editor is sent the same signal, and SIGKILL two seconds later, and the directory is removed once it
/// has ended, so that nothing it writes as it goes is left). A signal casevaultctl does not catch (SIGKILL,
/// SIGQUIT) leaves the directory, and the next run removes it. A directory that cannot be removed is
/// named, and nothing is filed.
enum Editor {
    /// The most an edited file may hold: the most the daemon's `store.max_content_bytes` may be set to.
    static let maxBytes = 64 << 20

    /// Edits `template` in a file named `name`; returns the file's text once the editor exits with 0.
    static func edit(_ template: String, name: String) throws(CLIError) -> String {
        // The signals are caught before the directory exists and given back only once it is gone: one
        // that comes meanwhile is passed to the editor (SIGKILL follows two seconds later if the editor
        // keeps running), and ends casevaultctl after the clean-up.
        let state = EditorState()
        let signals = StopSignals { signal in
            let editor = state.withLock { state in
                if state.signal == 0 { state.signal = signal }
                if state.editor > 0 { kill(state.editor, signal) }
                return state.editor
            }
            guard editor > 0 else { return }
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(2)) {
                state.withLock { state in
                    if state.editor == editor { kill(editor, SIGKILL) }
                }
            }
        }
        defer { signals.restore() }
        let scratch = try PrivateScratch.make()
        let outcome: Result<String, CLIError>
        do throws(CLIError) {
            outcome = .success(try Self.edit(template, in: scratch.path + "/" + name, state: state))
        } catch {
            outcome = .failure(error)
        }
        guard scratch.remove() else {
            throw CLIError.aborted(
                "could not remove \(scratch.path), which holds what was edited: remove it yourself; nothing was filed")
        }
        // The signals end the process again before the last look at whether one came: none is lost.
        signals.restore()
        let signal = state.withLock { $0.signal }
        if signal != 0 { throw CLIError.stopped(signal, "the editor's files were removed and nothing was filed") }
        return try outcome.get()
    }

    /// Writes `template` to `path`, runs the editor on it and reads it back.
    private static func edit(_ template: String, in path: String, state: EditorState)
        throws(CLIError) -> String
    {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw CLIError.unwritable("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        let bytes = Array(template.utf8)
        let written = write(descriptor, bytes, bytes.count)
        close(descriptor)
        guard written == bytes.count else {
            throw CLIError.unwritable("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        let editor = Self.command()
        let status = try Self.run(editor, path: path, state: state)
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

    /// Starts `editor` on `path`, unless a signal has already come, and waits for it to end; its wait
    /// status. Its pid is in `state` while it runs, for the signal handler; it is taken out before the
    /// editor is reaped, so that no signal reaches a process that has taken its pid since.
    private static func run(_ editor: String, path: String, state: EditorState)
        throws(CLIError) -> Int32
    {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in StopSignals.caught + [SIGQUIT, SIGPIPE] { sigaddset(&defaults, signal) }
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        // As git runs it, so that the editor's command may carry its own arguments (`code --wait`); `exec`, so
        // that the editor itself is the child the signals are passed to.
        let arguments = ["/bin/sh", "-c", "exec " + editor + " \"$@\"", editor, path]
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = state.withLock { state -> Int32 in
            guard state.signal == 0 else { return ECANCELED }
            let spawned = posix_spawn(&pid, "/bin/sh", nil, &attributes, argv, environ)
            if spawned == 0 { state.editor = pid }
            return spawned
        }
        guard spawned != ECANCELED || pid != 0 else {
            throw CLIError.aborted("stopped before the editor started; nothing was filed")
        }
        guard spawned == 0 else {
            throw CLIError.aborted("cannot start the editor (\(editor)): \(String(cString: strerror(spawned)))")
        }
        // Waited for without reaping, so that the pid stays this editor's until the handler can no longer
        // signal it.
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
        state.withLock { $0.editor = 0 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else {
                throw CLIError.aborted("lost the editor (\(editor)): \(String(cString: strerror(errno)))")
            }
        }
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

/// The editor's pid while it runs (0 otherwise) and the first signal that came, shared by the main thread
/// and the signal handler under one lock, so that each sees what the other did before it.
final class EditorState: Sendable {
    private let shared = Mutex<(editor: pid_t, signal: Int32)>((0, 0))

    func withLock<T>(_ body: (inout (editor: pid_t, signal: Int32)) -> T) -> T {
        self.shared.withLock { body(&$0) }
    }
}

/// casevaultctl's exit statuses, in one place: sysexits(3) for what kept a command from running, as
/// OpenSSH's tools use them, and 1 and 2 for what a command that ran found. `casevaultctl --help` lists
/// them; scripts rely on them.
enum ExitStatus {
    /// The daemon answered with a problem, or a check found something wrong: an audit entry that does not
    /// check out, a certificate that does not verify, a doctor check that failed, a daemon not serving.
    static let failed: Int32 = 1
    /// The command ran and there was less to do than asked: a sweep with nothing due, shares that ran out
    /// before the vault unsealed.
    static let incomplete: Int32 = 2
    /// EX_USAGE: the command line or its input cannot be used.
    static let usage: Int32 = 64
    /// EX_NOINPUT: an input file cannot be read.
    static let noInput: Int32 = 66
    /// EX_CANTCREAT: a file the command writes (a download, the file an editor edits) cannot be written.
    static let cannotCreate: Int32 = 73
    /// EX_UNAVAILABLE: the daemon cannot be reached on its socket.
    static let unavailable: Int32 = 69
    /// EX_NOPERM: the daemon refused the caller.
    static let noPermission: Int32 = 77
    /// EX_CONFIG: the configuration cannot be read.
    static let configuration: Int32 = 78
    /// A caught signal ended the command once what it held was removed: 128 + the signal, as a shell shows
    /// a process the signal ended.
    static func stopped(by signal: Int32) -> Int32 { 128 + signal }
}

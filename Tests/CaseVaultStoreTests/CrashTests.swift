import CaseVaultCore
import CaseVaultStore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Crash safety")
struct CrashTests {
    /// How many kill cycles `make test` runs; `scripts/crash-soak.sh` sets more.
    static let cycles = Int(ProcessInfo.processInfo.environment["CASEVAULT_CRASH_CYCLES"] ?? "") ?? 50

    @Test("a writer killed with SIGKILL at random moments loses no write it acknowledged")
    func killedWriterLosesNoAcknowledgedWrite() throws {
        let vault = TestVault()
        let caseID = Samples.caseID()
        var acknowledged: [(RecordID, String)] = []
        for cycle in 0..<Self.cycles {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Helper.path)
            process.arguments = ["put-loop", "--data", vault.data, "--key", vault.key, "--case-id", caseID.rawValue, "--writers", "4"]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Kill at a random moment after the store opened: while puts are in flight.
            let reader = LineReader(pipe.fileHandleForReading)
            #expect(reader.next() == "ready", "cycle \(cycle): the writer did not start")
            usleep(UInt32.random(in: 1_000...60_000))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            while let line = reader.next() {
                let parts = line.split(separator: " ")
                guard parts.count == 2, parts[0] != "error", let id = try? RecordID(String(parts[0])) else {
                    // A torn last line is an id whose put returned but whose line was cut by the kill: skip it.
                    #expect(!line.hasPrefix("error"), "cycle \(cycle): the writer reported \(line)")
                    continue
                }
                acknowledged.append((id, String(parts[1])))
            }

            let store = try vault.open()
            for (id, text) in acknowledged {
                let record = try store.get(id)
                #expect(record.content == Array(#"{"text":"\#(text)"}"#.utf8), "cycle \(cycle): \(id) came back wrong")
            }
            store.close()
        }
        #expect(acknowledged.count > Self.cycles, "the writer should have acknowledged puts before being killed")
    }
}

/// Reads newline-terminated lines from a pipe; a last line without its newline is returned as is.
final class LineReader {
    private let handle: Foundation.FileHandle
    private var buffer: [UInt8] = []
    private var finished = false

    init(_ handle: Foundation.FileHandle) {
        self.handle = handle
    }

    func next() -> String? {
        while true {
            if let newline = self.buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: self.buffer[..<newline], as: UTF8.self)
                self.buffer.removeSubrange(...newline)
                return line
            }
            if self.finished {
                guard !self.buffer.isEmpty else { return nil }
                defer { self.buffer.removeAll() }
                return String(decoding: self.buffer, as: UTF8.self)
            }
            let data = self.handle.availableData
            if data.isEmpty {
                self.finished = true
            } else {
                self.buffer += data
            }
        }
    }
}

import CaseVaultCore
import CaseVaultCrypto
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Logging

extension Bench {
    /// How long an unseal takes: Argon2id at the shipped cost ([keys] defaults: libsodium's "moderate") and
    /// at the cheapest the tests use, then opening the store, through the same `VaultKeeper` the daemon uses.
    func keyFigures(root: String) throws {
        let passphrase = Array("a passphrase for the benchmark".utf8)
        for (name, limits) in [
            ("moderate (shipped default)", PasswordHash.Limits.moderate),
            ("interactive", PasswordHash.Limits.interactive),
        ] {
            var configuration = StoreConfiguration(
                dataDirectory: URL(fileURLWithPath: root + "/unseal-\(limits.operations)"),
                rootKeyFile: URL(fileURLWithPath: root + "/keys/wrapped-\(limits.operations)")
            )
            configuration.keySource = .passphrase
            let logger = Logger(label: "bench")
            let keeper = VaultKeeper(sealed: configuration, limits: limits, logger: logger)
            _ = try keeper.initialise(passphrase: passphrase, shares: 0, threshold: 0)
            try keeper.seal()
            var times: [Double] = []
            for _ in 0..<3 {
                let start = Date()
                _ = try keeper.unseal(passphrase: passphrase)
                times.append(Date().timeIntervalSince(start))
                try keeper.seal()
            }
            times.sort()
            print(
                String(
                    format:
                        "unseal   Argon2id %@ (%llu passes, %d MiB) and the store opened   median %.2f s of 3 (%.2f–%.2f)",
                    name, limits.operations, limits.memoryBytes >> 20, times[1], times[0], times[2]))
        }
    }

    /// Rotation of `rotationSlots` key slots (goal: under 10 s for 100,000), in the default batches.
    func rotationFigure(root: String) throws {
        let store = try Self.openStore(root: root, name: "rotation")
        let vault = Vault(storage: store)
        defer { store.close() }
        let caseID = CaseID(bytes: Array(repeating: 3, count: 16))
        let content = Array(#"{"text":"a record whose key slot is rewrapped"}"#.utf8)
        let total = self.rotationSlots
        let counter = Collected.Counter()
        let writers = (0..<16).map { _ in
            Thread {
                while counter.next() < total {
                    _ = try! vault.put(NewRecord(caseID: caseID, type: .sessionNote, content: content))
                }
            }
        }
        for thread in writers { thread.start() }
        while writers.contains(where: { !$0.isFinished }) { usleep(10_000) }
        let start = Date()
        let report = try store.rotate()
        let elapsed = Date().timeIntervalSince(start)
        print(
            String(
                format:
                    "rotate   %d key slots rewrapped under epoch %u, old epoch retired   %8.2f s (%.0f slots/s; goal < 10 s for 100,000)",
                report.rewrapped, report.epoch, elapsed, Double(report.rewrapped) / elapsed))
    }
}

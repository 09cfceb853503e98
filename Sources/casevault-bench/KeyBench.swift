import CaseVaultCore
import CaseVaultCrypto
import CaseVaultStore
import Foundation
import Logging

extension Bench {
    /// How long an unseal takes: Argon2id at the shipped cost ([keys] defaults: libsodium's "moderate") and
    /// at the cheapest the tests use, then opening the store, through the same `VaultKeeper` the daemon uses.
    func keyFigures(root: String) throws {
        let passphrase = Array("a passphrase for the benchmark".utf8)
        for (name, limits) in [("moderate (shipped default)", PasswordHash.Limits.moderate), ("interactive", PasswordHash.Limits.interactive)] {
            var configuration = StoreConfiguration(
                dataDirectory: URL(fileURLWithPath: root + "/unseal-\(limits.operations)"),
                rootKeyFile: URL(fileURLWithPath: root + "/keys/wrapped-\(limits.operations)")
            )
            configuration.keySource = .passphrase
            var logger = Logger(label: "bench")
            logger.logLevel = .warning
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
            print(String(format: "unseal   Argon2id %@ (%llu passes, %d MiB) and the store opened   median %.2f s of 3 (%.2f–%.2f)",
                         name, limits.operations, limits.memoryBytes >> 20, times[1], times[0], times[2]))
        }
    }
}

internal import CaseVaultConfiguration
internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultDaemon
internal import Foundation

/// The targets for what operators type or hand over: recovery shares, the configuration file, a
/// destruction certificate to verify.
enum OperatorTargets {
    /// At most this many shares an input (a comma separates them; no share holds one).
    static let maxShares = 16

    /// `recovery-shares`: each share read as the unseal route and `casevaultctl` read one
    /// (`SecretSharing.Share(encoded:)`: spaces and line breaks ignored, the checksum checked), then those
    /// that read combined (`SecretSharing.combine`: the threshold, the split they come from, the
    /// commitment to the secret).
    static func shares(_ input: [UInt8]) {
        var shares: [SecretSharing.Share] = []
        for text in input.split(separator: UInt8(ascii: ","), maxSplits: Self.maxShares - 1) {
            if let share = try? SecretSharing.Share(encoded: text) {
                shares.append(share)
            }
        }
        guard !shares.isEmpty else { return }
        _ = try? SecretSharing.combine(shares)
    }

    /// `configuration`: the input as `casevault.toml`, loaded as the daemon and `casevaultctl` load it
    /// (`DaemonConfiguration.load`: TOML, strict keys, every value checked, principals resolved), then the
    /// settings a start derives from it.
    static func configuration(_ input: [UInt8]) {
        let environment = FuzzEnvironment.shared
        let path = environment.path("casevault.toml")
        FuzzEnvironment.replace(path, with: input)
        guard let configuration = try? DaemonConfiguration.load(path: path) else { return }
        let base = URL(fileURLWithPath: environment.directory, isDirectory: true)
        _ = try? configuration.storeConfiguration(relativeTo: base)
        _ = try? configuration.passphraseLimits()
        _ = configuration.shredLedgerFile(relativeTo: base)
    }

    /// `certificate`: the input as a destruction certificate, verified offline against the test vault's
    /// certificate key (`DestructionCertificate.verify`, what `casevaultctl certificate verify` runs).
    static func certificate(_ input: [UInt8]) {
        _ = DestructionCertificate.verify(document: input, publicKey: FuzzEnvironment.shared.certificatePublicKey)
    }
}

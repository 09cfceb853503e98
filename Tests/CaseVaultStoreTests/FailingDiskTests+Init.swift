import CaseVaultCore
import CaseVaultCrypto
import CaseVaultSealing
import CaseVaultStore
import Foundation
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension FailingDiskTests {
    @Test(
        "an I/O error or a full disk at each site a vault's init reaches (passphrase source): the init is refused and leaves no wrapped key, the next init makes the vault, and after a power cut the passphrase opens it with what was put"
    )
    func initialisationFails() throws {
        let fs = try PowerCutFS()
        let passphrase = Array("correct horse battery staple".utf8)
        let limits = PasswordHash.Limits.floor
        let logger = Logger(label: "test")
        func keeper(_ vault: TestVault) -> VaultKeeper<RecordStore> {
            var configuration = vault.configuration()
            configuration.keySource = .passphrase
            return VaultKeeper(sealed: configuration, limits: limits, logger: logger)
        }

        // The census: an undisturbed init names every site.
        let census = fs.root + "/census"
        try fs.mount(options: ["--census=\(census)"])
        let counted = fs.newVault()
        let censusKeeper = keeper(counted)
        _ = try censusKeeper.initialise(passphrase: passphrase, shares: 3, threshold: 2)
        try censusKeeper.seal()
        try fs.cut()
        // The test's own flush of the mount's top (`newVault`) is left out.
        let sites = try Self.readCensus(census, vault: counted).filter { $0.key.contains("/<vault>") }
        #expect(sites.keys.contains { $0.hasPrefix("rename:") }, "the census found no rename: \(sites)")
        #expect(sites.keys.contains { $0.contains("index.sqlite") }, "the census found no write of the index: \(sites)")

        var report: [String] = []
        let only = ProcessInfo.processInfo.environment["CASEVAULT_FAULT_SITES"]
        for (site, count) in sites.sorted(by: { $0.key < $1.key }) where only.map(site.contains) ?? true {
            for error in site.hasPrefix("rename:") || site.hasPrefix("fsyncdir:") ? ["EIO"] : ["EIO", "ENOSPC"] {
                // The site's first call and its last: the last write of the index is its last commit.
                for nth in Set([1, count]).sorted() {
                    try fs.mount()
                    let vault = fs.newVault()
                    try fs.cut()
                    let what = "\(site) #\(nth) \(error)"
                    try fs.mount(options: ["--fail=\(Self.onDisk(site, vault: vault))@\(nth)=\(error)"])
                    var first = keeper(vault)
                    var outcome = "init refused"
                    do {
                        _ = try first.initialise(passphrase: passphrase, shares: 3, threshold: 2)
                        outcome = "init absorbed it"
                        try first.seal()
                    } catch {
                        #expect(
                            !FileManager.default.fileExists(atPath: vault.key),
                            "after \(what) refused the init (\(error.code.rawValue)), a wrapped root key was left behind"
                        )
                        #expect(first.isSealed, "after \(what) the init was refused but the vault is unsealed")
                        // A store that lost commits of its index stops the daemon, and systemd starts another.
                        if first.indexLost {
                            first = keeper(vault)
                            outcome += ", the daemon restarted"
                        }
                    }
                    // The disk takes writes again (the failure was once): the operator runs init again, or,
                    // when the first one was absorbed, unseals.
                    let marker = "init-\(report.count)"
                    var injected: [String]? = nil
                    do {
                        // Each store is let go of before the cut (its files close when it goes).
                        let put = try Self.makeAndPut(first, passphrase: passphrase, marker: marker)
                        try fs.cut()
                        injected = fs.injected
                        // The power cut: what the second init and the put made durable opens with the passphrase.
                        try fs.mount()
                        let content = try Self.unsealAndGet(keeper(vault), passphrase: passphrase, put)
                        #expect(content.contains(marker), "after \(what) the put did not read back: \(content)")
                    } catch {
                        Issue.record("after \(what) (\(outcome)), the vault could not be made and reopened: \(error)")
                        _ = try? first.seal()
                    }
                    try fs.cut()
                    let reached = !(injected ?? fs.injected).isEmpty
                    #expect(reached, "\(what) was never reached")
                    report.append("\(what): \(reached ? outcome : "not reached")")
                }
            }
        }
        print("failing disks at init: \(report.count) failures at \(sites.count) sites")
        for line in report { print("  " + line) }
    }

    /// Inits the vault on `keeper` (unseals it, when an init went through), puts a note marked `marker` in a
    /// new case, and seals it again.
    static func makeAndPut(_ keeper: VaultKeeper<RecordStore>, passphrase: [UInt8], marker: String) throws -> RecordID {
        let store =
            keeper.isInitialised
            ? try keeper.unseal(passphrase: passphrase)
            : try keeper.initialise(passphrase: passphrase, shares: 3, threshold: 2).0
        let caseID = try store.sealed.openCase(header: Lifecycle.header, mediators: [], author: nil).id
        let put = try Samples.note(store, caseID, marker: marker).get()
        try keeper.seal()
        return put
    }

    /// Unseals the vault on `keeper`, reads `id`'s content as text, and seals it again.
    static func unsealAndGet(_ keeper: VaultKeeper<RecordStore>, passphrase: [UInt8], _ id: RecordID) throws -> String {
        let store = try keeper.unseal(passphrase: passphrase)
        let content = String(decoding: try store.sealed.get(id).content, as: UTF8.self)
        try keeper.seal()
        return content
    }
}

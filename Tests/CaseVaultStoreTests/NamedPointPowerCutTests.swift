import CaseVaultCore
import CaseVaultStore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Power cuts at named points inside a retention sweep and a key rotation: `casevault-torture` runs them on
/// powercutfs and dies by SIGKILL at a crash point (`--crash-at`, after a random number of passes), then the
/// power is cut (every second cut a reordering one), and the store must open alone with every promise kept.
/// `CrashTests`, `RetentionTests` and `RotationTests` kill at the same points without a cut: the page cache
/// survives there, and here it does not.
@Suite("Power cuts at named points", .serialized, .enabled(if: geteuid() == 0, "mounting FUSE needs root"))
struct NamedPointPowerCutTests {
    @Test(
        "a sweep cut at each named point: after the restart and one more sweep, exactly the due records are gone, each certified once, and none of their bytes remain"
    )
    func sweepCutAtNamedPoints() throws {
        let template = TestVault()
        let fixture = try SweepCrashTests.populate(template)
        let sweepTime = TestClock.parse("2028-01-01T00:00:00Z")
        let points: [CrashPoint] = [
            .shredAfterMark, .shredAfterSlotOverwrite, .shredAfterCiphertextOverwrite, .shredAfterIndexRemoval,
            .sweepAfterBatch, .certifyAfterCommit,
        ]
        let fs = try PowerCutFS()
        var killed = 0
        for (cycle, point) in (points + points).enumerated() {
            // A copy of the populated vault, made durable, then the sweep that dies at the point.
            try fs.mount()
            let vault = TestVault(under: fs.mountpoint)
            try FileManager.default.copyItem(atPath: template.data, toPath: vault.data)
            try FileManager.default.copyItem(atPath: template.root + "/keys", toPath: vault.root + "/keys")
            Self.flushTree(fs.mountpoint)
            let witness = fixture.dispose[cycle % fixture.dispose.count]
            let evidence = try ShredEvidence(vault: vault, id: witness)
            try fs.cut()
            try fs.mount(keep: cycle >= points.count ? 0.5 : 0, seed: cycle)
            // A sweep's certification commits twice, a case certified or ten rows removed a section: its
            // certificates, then its removed records' rows.
            let passes =
                switch point {
                case .sweepAfterBatch: Int.random(in: 0..<4)
                case .certifyAfterCommit: Int.random(in: 0..<2)
                default: Int.random(in: 0..<8)
                }
            let result = try Helper.run([
                "sweep", "--data", vault.data, "--key", vault.key, "--now", "\(sweepTime)", "--batch", "7",
                "--certification-section", "1", "--crash-at", point.rawValue, "--crash-after-passes", "\(passes)",
            ])
            if !result.output.contains("swept") { killed += 1 }
            try fs.cut()

            try fs.mount()
            do {
                var configuration = vault.configuration()
                configuration.clock = { sweepTime }
                let store = try RecordStore.open(configuration, logger: .init(label: "test"))
                let after = try store.sweep()
                #expect(after.complete)
                let lost = NamedPointPowerCutTests.unreadable(fixture.keep, in: store)
                #expect(
                    lost == 0, "\(point.rawValue), cut \(cycle): \(lost) records that should remain are gone or changed"
                )
                let survived = fixture.dispose.filter { (try? store.sealed.get($0)) != nil }
                #expect(survived.isEmpty, "\(point.rawValue), cut \(cycle): \(survived.count) due records survived")
                let swept = Set(try Certified.methods(store).filter { $0.value == "retention_sweep" }.keys)
                let expected = Set(fixture.dispose.map(\.rawValue))
                #expect(
                    swept == expected,
                    "\(point.rawValue), cut \(cycle): \(expected.subtracting(swept).count) disposals uncertified, \(swept.subtracting(expected).count) certified wrongly"
                )
                store.close()
            }
            evidence.expectGone(from: vault)
            try fs.cut()
        }
        #expect(killed == 2 * points.count, "every sweep should die at its point (\(killed) of \(2 * points.count))")
        print(
            "power cuts at named points of the sweep: \(2 * points.count) cuts, \(killed) sweeps killed at their point; \(fixture.dispose.count) due records gone after each, \(fixture.keep.count) kept"
        )
    }

    @Test(
        "a rotation cut at each named point: every record opens after the restart, at most two epochs are active, and the rotation resumes to one"
    )
    func rotationCutAtNamedPoints() throws {
        let fs = try PowerCutFS()
        let (vault, records) = try fs.populatedVault(records: 120)
        let points: [CrashPoint] = [.rotateAfterEpoch, .rotateAfterSlotWrite, .rotateAfterBatch]
        var killed = 0
        for (cycle, point) in (points + points + points).enumerated() {
            try fs.mount(keep: cycle % 2 == 1 ? 0.5 : 0, seed: cycle)
            // Each point passed a number of times it is sure to reach (120 slots, batches of 7).
            let passes =
                point == .rotateAfterEpoch
                ? 0 : point == .rotateAfterBatch ? Int.random(in: 0..<15) : Int.random(in: 0..<100)
            let result = try Helper.run([
                "rotate", "--data", vault.data, "--key", vault.key, "--batch", "7",
                "--crash-at", point.rawValue, "--crash-after-passes", "\(passes)",
            ])
            if !result.output.contains("rotated") { killed += 1 }
            try fs.cut()
            try fs.mount()
            do {
                let store = try vault.open()
                let lost = NamedPointPowerCutTests.unreadable(records, in: store)
                #expect(lost == 0, "\(point.rawValue), cut \(cycle): \(lost) records lost or changed")
                let active = try store.activeEpochs()
                #expect((1...2).contains(active.count), "\(point.rawValue), cut \(cycle): active epochs \(active)")
                store.close()
            }
            try fs.cut()
        }
        try fs.mount()
        do {
            let store = try vault.open()
            let final = try store.rotate()
            #expect(final.complete)
            #expect(try store.activeEpochs().count == 1)
            let lost = NamedPointPowerCutTests.unreadable(records, in: store)
            #expect(lost == 0, "after the last rotation: \(lost) records lost or changed")
            store.close()
        }
        try fs.cut()
        // A resumed rotation has fewer slots left than some counts of passes: most, not all, die at their point.
        #expect(
            killed >= 3 * points.count / 2,
            "most rotations should die at their point (\(killed) of \(3 * points.count))")
        print(
            "power cuts at named points of the rotation: \(3 * points.count) cuts, \(killed) rotations killed at their point; \(records.count) records open after each"
        )
    }

    /// How many of `records` do not read back with their content.
    static func unreadable(_ records: [RecordID: [UInt8]], in store: RecordStore) -> Int {
        records.filter { (try? store.sealed.get($0.key).content) != $0.value }.count
    }

    /// fsyncs every file and directory under `path` (deepest first), so that a cut keeps what was copied there.
    static func flushTree(_ path: String) {
        var paths = [path]
        let enumerator = FileManager.default.enumerator(atPath: path)
        while let relative = enumerator?.nextObject() as? String { paths.append(path + "/" + relative) }
        for item in paths.reversed() {
            let fd = open(item, O_RDONLY)
            guard fd >= 0 else { continue }
            _ = fsync(fd)
            close(fd)
        }
    }
}

extension PowerCutFS {
    /// A new vault on this filesystem holding `count` records (`RotationTests.populate`), all of it
    /// durable; the filesystem is left unmounted.
    func populatedVault(records count: Int) throws -> (TestVault, [RecordID: [UInt8]]) {
        try self.mount()
        let vault = self.newVault()
        // In its own scope: the store lets go of its files before the filesystem is unmounted.
        let records = try { () throws -> [RecordID: [UInt8]] in
            let store = try vault.open()
            defer { store.close() }
            return try RotationTests.populate(store, count: count)
        }()
        try self.cut()
        return (vault, records)
    }
}

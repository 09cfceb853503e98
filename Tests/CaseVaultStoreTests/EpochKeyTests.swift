import CaseVaultCore
import CaseVaultCrypto
import CaseVaultSealing
import Foundation
import Testing

/// The erase epochs of a vault on PostgreSQL, through the real epoch key file: a data key wrapped under an
/// epoch opens under that epoch only; an epoch key reaches a daemon sealed to its pair and opens for no one
/// once the pair is destroyed; destroying a secret overwrites its slot in place.
@Suite("Erase epochs and the epoch key file")
struct EpochKeyTests {
    static func record() -> RecordID { RecordID(bytes: Random.bytes(count: RecordID.byteCount)) }
    static func rootKey() throws -> RootKey { RootKey(secret: try SecureBytes(copying: Random.bytes(count: 32))) }

    /// The slots of the file at `path` that still carry the magic of a kept secret.
    static func keptSlots(_ path: String) throws -> [Int] {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        return stride(from: 0, to: bytes.count, by: 128).filter { bytes[$0..<($0 + 4)].elementsEqual("CVE1".utf8) }
            .map { $0 / 128 }
    }

    static func inode(_ path: String) -> UInt64 {
        var info = stat()
        return stat(path, &info) == 0 ? UInt64(info.st_ino) : 0
    }

    @Test("a data key wrapped under an epoch opens under that epoch and for that record only; a turn rewraps it")
    func wrapBindsEpochAndRecord() throws {
        let first = EpochKey.random(number: 1)
        let second = EpochKey.random(number: 2)
        let key = DataKey.random()
        let record = Self.record()
        let wrapped = first.wrap(key, recordID: record)
        #expect(wrapped.count == EpochKey.wrappedByteCount)
        #expect(try first.unwrap(wrapped, recordID: record) == key)
        #expect(try first.unwrap(first.wrap(DataKey.random(), recordID: record), recordID: record) != key)

        for (epoch, id) in [(second, record), (first, Self.record())] {
            let error = #expect(throws: CaseVaultError.self) { try epoch.unwrap(wrapped, recordID: id) }
            #expect(error?.code == .integrityFailure)
        }

        let rewrapped = try first.rewrap(wrapped, recordID: record, under: second)
        #expect(try second.unwrap(rewrapped, recordID: record) == key)
        #expect(throws: CaseVaultError.self) { try first.unwrap(rewrapped, recordID: record) }
    }

    @Test(
        "an epoch key sealed to a daemon's pair opens with that pair, for that epoch and daemon, and for no one once the pair is destroyed"
    )
    func sealedToADaemon() throws {
        let folder = TestVault()
        let path = folder.root + "/epochs"
        let root = try Self.rootKey()
        var file: EpochKeyFile? = try EpochKeyFile(path: path, rootKey: root)
        let daemon = try DaemonName("vault-a.example")
        let pair = try #require(file).makePair(epoch: 2)
        let epoch = EpochKey.random(number: 2)
        let sealed = try epoch.sealed(to: daemon, publicKey: pair.publicKey)

        let opened = try EpochKey.opening(sealed, number: 2, daemon: daemon, pair: pair)
        #expect(opened.number == 2)
        let record = Self.record()
        let key = DataKey.random()
        #expect(try opened.unwrap(epoch.wrap(key, recordID: record), recordID: record) == key)

        let refusals: [(UInt64, DaemonName, SealedBox.KeyPair)] = [
            (3, daemon, pair), (2, try DaemonName("vault-b"), pair), (2, daemon, try SealedBox.KeyPair()),
        ]
        for (number, name, otherPair) in refusals {
            let error = #expect(throws: CaseVaultError.self) {
                try EpochKey.opening(sealed, number: number, daemon: name, pair: otherPair)
            }
            #expect(error?.code == .keyUnavailable)
        }

        // One process at a time holds the file open.
        let second = #expect(throws: CaseVaultError.self) { try EpochKeyFile(path: path, rootKey: root) }
        #expect(second?.message.contains("open in another process") == true)

        // The pair's secret half, kept in the file, opens the copy after a restart too.
        #expect(try Self.keptSlots(path).count == 1)
        file = nil
        let stranger = #expect(throws: CaseVaultError.self, "another root key opens none of the file's secrets") {
            try EpochKeyFile(path: path, rootKey: try Self.rootKey()).pair(epoch: 2)
        }
        #expect(stranger?.code == .integrityFailure)
        let restarted = try EpochKeyFile(path: path, rootKey: root)
        let reloaded = try #require(try restarted.pair(epoch: 2))
        #expect(reloaded.publicKey == pair.publicKey)
        #expect(try EpochKey.opening(sealed, number: 2, daemon: daemon, pair: reloaded).number == 2)

        #expect(try restarted.destroyPair(epoch: 2))
        #expect(try restarted.destroyPair(epoch: 2) == false)
        #expect(try restarted.pair(epoch: 2) == nil)
        #expect(try Self.keptSlots(path).isEmpty, "no slot of the file carries a secret")
    }

    @Test(
        "epoch keys survive a restart; destroying one overwrites its slot in place, flushed, and another root key opens none; the keys opened are kept in step with every keep and destruction"
    )
    func keptAndDestroyed() throws {
        let folder = TestVault()
        let path = folder.root + "/epochs"
        let root = try Self.rootKey()
        let (first, second) = (EpochKey.random(number: 1), EpochKey.random(number: 2))
        do {
            let file = try EpochKeyFile(path: path, rootKey: root)
            try file.keep(second)
            try file.keep(first)
            let error = #expect(throws: CaseVaultError.self) { try file.keep(first) }
            #expect(error?.code == .storageFailure)
        }

        let record = Self.record()
        let key = DataKey.random()
        let wrapped = first.wrap(key, recordID: record)
        do {
            let stranger = try EpochKeyFile(path: path, rootKey: try Self.rootKey())
            let refused = #expect(throws: CaseVaultError.self) { try stranger.epochKeys() }
            #expect(refused?.code == .integrityFailure)
        }
        var reopened: EpochKeyFile? = try EpochKeyFile(path: path, rootKey: root)
        let kept = try #require(reopened).epochKeys()
        #expect(kept.map(\.number) == [1, 2])
        #expect(try kept[0].unwrap(wrapped, recordID: record) == key)

        let before = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let inode = Self.inode(path)
        let slot = try #require(try Self.keptSlots(path).first { before[$0 * 128 + 8] == 1 })
        #expect(try #require(reopened).destroyKey(epoch: 1))
        // The keys opened are kept between calls: the destroyed one is handed out no more, one kept later is.
        #expect(try #require(reopened).epochKeys().map(\.number) == [2])
        try #require(reopened).keep(EpochKey.random(number: 3))
        #expect(try #require(reopened).epochKeys().map(\.number) == [2, 3])
        #expect(try #require(reopened).destroyKey(epoch: 3))
        #expect(try #require(reopened).epochKeys().map(\.number) == [2])
        reopened = nil
        let after = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(Self.inode(path) == inode && after.count == before.count, "overwritten in place, not replaced")
        let old = before[(slot * 128)..<(slot * 128 + 128)]
        let new = after[(slot * 128)..<(slot * 128 + 128)]
        #expect(zip(old.dropFirst(16).prefix(72), new.dropFirst(16).prefix(72)).filter { $0 == $1 }.count < 8)
        let restarted = try EpochKeyFile(path: path, rootKey: root).epochKeys()
        #expect(restarted.map(\.number) == [2])
        #expect(throws: CaseVaultError.self) { try restarted.first!.unwrap(wrapped, recordID: record) }
    }

    @Test(
        "a torn slot or a torn destruction is scrubbed at open; a full file, a short file and an open file are refused")
    func tornFullShortAndOpen() throws {
        let folder = TestVault()
        let path = folder.root + "/epochs"
        let root = try Self.rootKey()
        try EpochKeyFile(path: path, rootKey: root).keep(EpochKey.random(number: 7))
        let slot = try #require(try Self.keptSlots(path).first)
        // A crash tore the slot's write: its checksum no longer matches.
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: UInt64(slot * 128 + 40))
        try handle.write(contentsOf: [0xFF, 0xFF, 0xFF, 0xFF])
        try handle.close()
        #expect(try EpochKeyFile(path: path, rootKey: root).epochKeys().isEmpty)
        #expect(try Self.keptSlots(path).isEmpty, "the torn slot was scrubbed")

        // A destruction torn by a crash: the magic cleared, the sealed secret still behind it. Opening the file
        // writes that slot again too.
        try EpochKeyFile(path: path, rootKey: root).keep(EpochKey.random(number: 8))
        let cleared = try #require(try Self.keptSlots(path).first)
        let secret = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))[
            (cleared * 128 + 16)..<(cleared * 128 + 88)]
        let clearing = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try clearing.seek(toOffset: UInt64(cleared * 128))
        try clearing.write(contentsOf: [0, 0, 0, 0])
        try clearing.close()
        #expect(try EpochKeyFile(path: path, rootKey: root).epochKeys().isEmpty)
        let rewritten = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(rewritten.firstRange(of: Array(secret)) == nil, "the sealed secret left behind is gone")

        do {
            let full = try EpochKeyFile(path: path, rootKey: root)
            for number in 0..<UInt64(EpochKeyFile.slotCount) {
                try full.keep(EpochKey.random(number: number))
            }
            let noRoom = #expect(throws: CaseVaultError.self) { try full.keep(EpochKey.random(number: 99)) }
            #expect(noRoom?.code == .storageFailure)
            #expect(noRoom?.message.contains("no free slot") == true)
        }

        #expect(truncate(path, 1000) == 0)
        let short = #expect(throws: CaseVaultError.self) { try EpochKeyFile(path: path, rootKey: root) }
        #expect(short?.code == .integrityFailure)

        let open = folder.root + "/open"
        do { _ = try EpochKeyFile(path: open, rootKey: root) }
        #expect(chmod(open, 0o644) == 0)
        let exposed = #expect(throws: CaseVaultError.self) { try EpochKeyFile(path: open, rootKey: root) }
        #expect(exposed?.code == .insecurePermissions)
    }

    @Test(
        "a daemon's name is 1 to 64 of a-z, 0-9, '.', '_' and '-'",
        arguments: ["", "Vault", "a b", "a/b", "é", String(repeating: "a", count: 65)])
    func badDaemonNames(_ text: String) {
        let error = #expect(throws: CaseVaultError.self) { try DaemonName(text) }
        #expect(error?.code == .invalidConfiguration)
    }
}

import CaseVaultCore
import CaseVaultPostgres
import CaseVaultSealing
import Foundation
import Logging
import PostgresNIO
import Testing

/// An operator's rotation of the erase epochs (`PostgresStorage.rotateErasureEpochs`): the turn asked for now,
/// carried out by the daemons' own steps, and reported complete once every daemon destroyed the older epochs.
extension EpochExchangeTests {
    @Test(
        "a rotation asks the daemons to turn now, not at half the window: their steps publish pairs, turn, rewrap and destroy epoch 1; each call reports what is left and the daemons holding it, the call that finds it done ends it, the shred's erasure is then certified, and the next call opens another"
    )
    func rotationOnPostgres() async throws {
        let clusters = try PostgresClusters()
        defer { clusters.tearDown() }
        // Held to the end: the daemons' epoch key files are in it.
        let keys = try KeyFolder()
        defer { withExtendedLifetime(keys) {} }
        let (a, b, vaultA, vaultB, sa, sb) = try await self.scheduledDaemons(clusters, keys)
        let storage = vaultA.storage
        let early = await self.code { _ = try storage.rotateErasureEpochs() }
        #expect(early == .keyUnavailable, "no epoch yet")
        try await self.bothHoldEpochOne(a, sa, b, sb)

        // A case whose final agreement shreds its note under epoch 1: four live records.
        let (_, final) = try await self.caseWithShreddedNote(vaultA)

        // The metrics' footprint: three live records (the header not counted), and the tables' bytes.
        let footprint = try await self.blocking { try storage.footprint() }
        #expect(footprint.liveRecords == 3 && footprint.bytes > 65_536, "\(footprint)")

        // Without a rotation the epoch, a few seconds old, does not turn.
        #expect(try await sa.step(on: a.connection).publishedFor == nil)
        let asked = try await self.blocking { try storage.rotateErasureEpochs() }
        #expect(
            asked
                == ErasureRotation(
                    epoch: 2, opened: true, remaining: 4, holding: ["vault-a", "vault-b"], complete: false))
        #expect(try await self.blocking { try storage.rotateErasureEpochs() }.opened == false, "carried on")

        // a publishes its pair and waits for b's; b publishes and turns; a receives, rewraps and destroys 1;
        // b destroys 1.
        let first = try await sa.step(on: a.connection)
        #expect(first.publishedFor == 2 && first.turnedTo == nil, "\(first)")
        let turned = try await sb.step(on: b.connection)
        #expect(turned.turnedTo == 2, "\(turned)")
        let midway = try await self.blocking { try storage.rotateErasureEpochs() }
        #expect(!midway.complete && midway.remaining == 4 && midway.holding == ["vault-a", "vault-b"], "\(midway)")
        let received = try await sa.step(on: a.connection)
        #expect(received.received == [2] && received.rewrapped == 4 && received.destroyed == [1], "\(received)")
        #expect(try await self.blocking { try storage.rotateErasureEpochs() }.holding == ["vault-b"])
        #expect(try await sb.step(on: b.connection).destroyed == [1])
        let done = try await self.blocking { try storage.rotateErasureEpochs() }
        #expect(done == ErasureRotation(epoch: 2, opened: false, remaining: 0, holding: [], complete: true))
        #expect(try await self.blocking { try vaultA.storage.certifyErasures() } == 1)
        #expect(try await self.blocking { try vaultB.get(final) }.content == Self.finalAgreement)

        // Ended: the next call opens another rotation, to epoch 3.
        let again = try await self.blocking { try storage.rotateErasureEpochs() }
        #expect(again.opened && again.epoch == 3 && !again.complete, "\(again)")
    }
}

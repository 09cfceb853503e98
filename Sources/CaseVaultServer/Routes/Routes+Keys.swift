internal import CaseVaultAudit
internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultStore
internal import CaseVaultWire
internal import Foundation
internal import Hummingbird
@_spi(CustomByteBufferAllocator) internal import NIOCore

/// Key custody over the socket (operator): init, unseal (passphrase or one recovery share at a time) and
/// seal. The passphrase and a share are taken from the body into locked memory
/// (`Request.jsonObject(_:secrets:)`), reach the store's `VaultKeeper` as `SecureBytes` and go no further;
/// the shares init makes are written into the answer from locked memory.
extension Routes {
    static var minimumPassphraseCharacters: Int { 12 }

    /// `{"sealed":false,"shares":[…],"threshold":N}` (sorted keys, as `JSONResponse`), the shares copied
    /// from locked memory straight into an answer buffer in locked memory, which NIO sends as it is and
    /// zeroes when it frees it: the recovery shares, shown once, kept nowhere.
    static func initialised(_ shares: [SecureBytes], threshold: Int) -> Response {
        var body = ByteBufferAllocator.locked.buffer(capacity: 64 + shares.reduce(0) { $0 + $1.count + 3 })
        body.writeString(#"{"sealed":false,"shares":["#)
        for (number, share) in shares.enumerated() {
            body.writeString(number == 0 ? "\"" : ",\"")
            share.withUnsafeBytes { _ = body.writeBytes($0) }
            body.writeString("\"")
        }
        body.writeString(shares.isEmpty ? "]}" : #"],"threshold":\#(threshold)}"#)
        return JSONResponse.raw(body, status: .created)
    }

    func initialise(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let (body, secrets) = try await request.jsonObject(self.configuration, secrets: ["passphrase"])
        try body.onlyFields(["passphrase", "shares", "threshold"])
        let passphrase = try Self.passphrase(secrets["passphrase"] ?? .absent)
        let shares = try Self.count(body, "shares", default: 0)
        let threshold = try Self.count(body, "threshold", default: shares == 0 ? 0 : min(shares, 3))
        let keeper = self.keeper
        // The keeper hands the store to the audit log (`VaultKeeper.admit`) before anyone else gets it.
        let (_, encoded) = try await self.pool.run {
            try keeper.initialise(passphrase: passphrase, shares: shares, threshold: threshold)
        }
        return Self.initialised(encoded, threshold: threshold)
    }

    struct Unsealed: Encodable {
        var sealed: Bool
        /// While collecting shares: how many are in and how many are needed.
        var shares: Int?
        var threshold: Int?
    }

    func unseal(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let (body, secrets) = try await request.jsonObject(self.configuration, secrets: ["passphrase", "share"])
        try body.onlyFields(["passphrase", "share"])
        let keeper = self.keeper
        let progress: VaultKeeper<Storage>.Progress
        switch (body["passphrase"], body["share"]) {
        case (.some, nil):
            let passphrase = try Self.passphrase(secrets["passphrase"] ?? .absent)
            progress = .unsealed(try await self.pool.run { try keeper.unseal(passphrase: passphrase) })
        case (nil, .some):
            guard case .value(let share) = secrets["share"] else {
                throw body.mistyped("share", "a recovery share as casevaultctl init printed it (cvshare1-…)")
            }
            progress = try await self.pool.run { try keeper.unseal(share: share) }
        default:
            throw CaseVaultError(.missingField, "give either passphrase or share", field: "passphrase")
        }
        switch progress {
        case .unsealed:
            return try JSONResponse.make(Unsealed(sealed: false))
        case .collecting(let received, let threshold):
            return try JSONResponse.make(Unsealed(sealed: true, shares: received, threshold: threshold))
        }
    }

    func seal(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let keeper = self.keeper
        let audit = self.audit
        try await self.pool.run {
            // Refused before anything changes: a vault that cannot be sealed keeps its audit signer. The
            // store is taken away first, so nothing is served with a log that no longer holds the keys;
            // the last checkpoint is signed and anchored while the keys still exist.
            try keeper.checkSealable()
            try keeper.seal { _ in try audit.detach(reason: "seal") }
        }
        return try JSONResponse.make(Unsealed(sealed: true))
    }

    struct Rotated: Encodable {
        var epoch: UInt64
        var opened: Bool
        var rewrapped: Int
        var remaining: Int
        var complete: Bool
        var retired: [UInt64]
        /// On PostgreSQL: the daemons that still hold an older erase epoch.
        var daemonsHolding: [String]?

        enum CodingKeys: String, CodingKey {
            case epoch, opened, rewrapped, remaining, complete, retired
            case daemonsHolding = "daemons_holding"
        }
    }

    /// Rotates the key-encryption key (`RecordStore.rotate`): `limit` bounds the slots this call rewraps,
    /// so that a client can show progress; the next call carries on. On PostgreSQL, asks the daemons to turn
    /// the erase epochs now, or reports how far that has got (`rotateErasureEpochs`): the daemons rewrap
    /// and destroy at their steps, so `rewrapped` is 0 and `retired` empty, and `limit` has nothing to bound.
    func rotate(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let body = try await request.optionalJSONObject(self.configuration)
        try body.onlyFields(["limit"])
        let most = try body.optionalCount("limit", of: "key slots")
        let rotated = try await self.run { store throws(CaseVaultError) -> Rotated in
            guard let store = store as? RecordStore else {
                let rotation = try store.rotateErasureEpochs()
                return Rotated(
                    epoch: rotation.epoch, opened: rotation.opened, rewrapped: 0, remaining: rotation.remaining,
                    complete: rotation.complete, retired: [], daemonsHolding: rotation.holding)
            }
            let report = try store.rotate(limit: most)
            return Rotated(
                epoch: UInt64(report.epoch), opened: report.opened, rewrapped: report.rewrapped,
                remaining: report.remaining, complete: report.complete, retired: report.retired.map(UInt64.init))
        }
        return try JSONResponse.make(rotated)
    }

    /// The passphrase member, in locked memory: a string of at least `minimumPassphraseCharacters`
    /// characters and at most 1024 bytes.
    static func passphrase(_ secret: Request.Secret) throws(CaseVaultError) -> SecureBytes {
        switch secret {
        case .absent:
            throw CaseVaultError(.missingField, "passphrase is required (a string)", field: "passphrase")
        case .notString:
            throw CaseVaultError(.invalidField, "passphrase must be a string", field: "passphrase")
        case .value(let bytes):
            // Counted in place: a filtered copy would leave the passphrase's bytes in the ordinary heap.
            let (characters, count) = bytes.withUnsafeBytes { bytes in
                (bytes.reduce(0) { $0 + ($1 & 0xC0 != 0x80 ? 1 : 0) }, bytes.count)
            }
            guard characters >= Self.minimumPassphraseCharacters, count <= 1024 else {
                throw CaseVaultError(
                    .invalidField, "the passphrase must have \(Self.minimumPassphraseCharacters) to 1024 characters",
                    field: "passphrase"
                )
            }
            return bytes
        }
    }

    static func count(_ body: JSONValue, _ field: String, default value: Int) throws(CaseVaultError) -> Int {
        guard let member = body[field] else { return value }
        guard case .integer(let number) = member, (0...255).contains(number) else {
            throw body.mistyped(field, "a whole number from 0 to 255")
        }
        return Int(number)
    }
}

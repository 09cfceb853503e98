internal import CaseVaultCore
package import CaseVaultSealing
internal import Logging
package import PostgresNIO

/// One daemon's part in turning erase epochs on the schedule `[storage] erase_window` sets
/// (docs/ARCHITECTURE.md, "Turning"): a shred is complete by its time plus the window, so the epoch current
/// at a shred is replaced within half a window and destroyed by every daemon within the other half. Each
/// `step` does what is due for this daemon, in this order:
///
/// 1. record that it steps (`seen`), and, when an operator declared its key file destroyed (`forget`),
///    destroy every key the file holds first (`rejoinForgotten`); receive every epoch key sealed to it;
/// 2. with no epoch yet, publish a pair for the first and turn to it; with a current epoch it does not hold
///    (it joined late, lost its file or was away), destroy every older epoch the vault has moved past
///    (nothing live wrapped under one), and publish a pair for the current epoch, for a daemon that holds
///    it to seal it (`shareCurrent`);
/// 3. holding the current epoch: retire the daemons away longer than `awayAfter` (`retireAway`), so that
///    a stopped host holds back neither turns nor new wraps, once this daemon itself has stepped without a
///    gap for half that long; seal it to every daemon waiting for it; from a
///    quarter of a window after
///    the turn, publish a pair for the next epoch; from just short of half a window (`turnAge`), turn (one
///    daemon wins; a turn refused because a holder has not published its pair yet waits for it); both at
///    once when an operator asked for a rotation (`PostgresStorage.rotateErasureEpochs`);
/// 4. destroy every epoch older than the one new wraps use, once no live data key is wrapped under one
///    (`wrappedBelow`): what is still wrapped under one is rewrapped first (`rewrap`, step 3 of a turn; the
///    storage that wraps data keys does both, `PostgresRecords`).
///
/// Steps are idempotent: a daemon that crashed between two is mended by the next, as the exchange's calls
/// are. The caller runs `step` every `interval`.
package struct EpochSchedule: Sendable {
    package let exchange: EpochExchange
    /// The erase window, in seconds.
    package let eraseWindow: Int64
    /// Whether any live data key is still wrapped under an epoch older than the one given.
    package let wrappedBelow: @Sendable (UInt64, PostgresConnection) async throws -> Bool
    /// Rewraps every live data key under an epoch older than the one given under that one, with the epoch
    /// keys this daemon holds; returns how many it rewrapped.
    package let rewrap: @Sendable (UInt64, [EpochKey], PostgresConnection) async throws -> Int
    /// The older epochs live data keys are still wrapped under (for the step's `waiting`).
    package let under: @Sendable (UInt64, PostgresConnection) async throws -> [UInt64]

    package init(
        exchange: EpochExchange, eraseWindow: Int64,
        rewrap: @escaping @Sendable (UInt64, [EpochKey], PostgresConnection) async throws -> Int,
        under: @escaping @Sendable (UInt64, PostgresConnection) async throws -> [UInt64] = { _, _ in [] },
        wrappedBelow: @escaping @Sendable (UInt64, PostgresConnection) async throws -> Bool
    ) {
        self.exchange = exchange
        self.eraseWindow = eraseWindow
        self.rewrap = rewrap
        self.under = under
        self.wrappedBelow = wrappedBelow
    }

    /// The schedule of a daemon whose records are `records`.
    package init(exchange: EpochExchange, eraseWindow: Int64, records: PostgresRecords) {
        self.init(
            exchange: exchange, eraseWindow: eraseWindow,
            rewrap: { epoch, keys, connection in try await records.rewrap(below: epoch, keys: keys, on: connection) },
            under: { epoch, connection in try await records.epochs(below: epoch, on: connection) },
            wrappedBelow: { epoch, connection in try await records.wrappedBelow(epoch, on: connection) })
    }

    /// How often a daemon steps, in seconds: a sixteenth of the window, at most a minute.
    package var interval: Int64 { min(self.eraseWindow / 16, 60) }

    /// How old the current epoch is when a daemon turns: half a window, less two steps, so that a step's
    /// delay never makes an epoch outlive its half (doctor fails one that does).
    package var turnAge: Int64 { self.eraseWindow / 2 - 2 * self.interval }

    /// How long a daemon may go without a step before the others retire it (`EpochExchange.retireAway`):
    /// an eighth of the window, and at least four steps. An epoch turned to just before its daemon went
    /// away is then ready for wraps well within the half window left for its predecessor's destruction.
    package var awayAfter: Int64 { Self.awayAfter(eraseWindow: self.eraseWindow) }

    /// `awayAfter` for a window of `eraseWindow` seconds.
    package static func awayAfter(eraseWindow: Int64) -> Int64 {
        max(eraseWindow / 8, 4 * min(eraseWindow / 16, 60))
    }

    /// What one step did.
    package struct Step: Sendable, Equatable {
        package var received: [UInt64] = []
        /// The daemons retired as away.
        package var retired: [String] = []
        /// Whether this daemon found itself forgotten (`EpochExchange.forget`) and destroyed every key its
        /// file held (in `destroyed`) before rejoining.
        package var rejoinedForgotten = false
        package var sharedWith: [String] = []
        /// The epoch a pair was published for (again, when it was published before).
        package var publishedFor: UInt64?
        package var turnedTo: UInt64?
        /// How many data keys were rewrapped to the epoch new wraps use.
        package var rewrapped = 0
        package var destroyed: [UInt64] = []
        /// Why a turn that was due did not happen, or why older epochs were kept.
        package var waiting: String?

        package init() {}
    }

    package func step(on connection: PostgresConnection) async throws -> Step {
        let logger = self.exchange.logger
        var step = Step()
        let seen = try await self.exchange.seen(gap: self.awayAfter / 2, on: connection)
        if let forgotten = seen.forgotten {
            step.destroyed = try await self.exchange.rejoinForgotten(forgotten, on: connection)
            step.rejoinedForgotten = true
        }
        let stepping = seen.stepping
        step.received = try await self.exchange.receive(on: connection)
        guard let current = try await EpochExchange.currentEpochAge(connection, logger: logger) else {
            try await self.exchange.publishPair(for: 1, on: connection)
            step.publishedFor = 1
            step.turnedTo = try await self.exchange.turn(from: nil, on: connection)?.epoch
            return step
        }
        guard self.exchange.file.keyEpochs().contains(current.number) else {
            try await self.destroyPassed(on: connection, into: &step)
            try await self.exchange.publishPair(for: current.number, on: connection)
            step.publishedFor = current.number
            step.waiting = "this daemon waits for epoch \(current.number)'s key from a daemon that holds it"
            return step
        }
        // Not by a daemon that has not stepped steadily for half `awayAfter` (just started, or back from being
        // cut off from the database): the others may be starting, or reaching the database again, too.
        if stepping >= self.awayAfter / 2 {
            step.retired = try await self.exchange.retireAway(after: self.awayAfter, on: connection).map(\.rawValue)
        }
        step.sharedWith = try await self.exchange.shareCurrent(on: connection).map(\.rawValue)
        // An operator's rotation asks for the turn now: pairs at once, the turn once every holder has one.
        if current.secondsSinceTurned >= self.eraseWindow / 4 || current.turnRequested {
            try await self.exchange.publishPair(for: current.number + 1, on: connection)
            step.publishedFor = current.number + 1
        }
        if current.secondsSinceTurned >= self.turnAge || current.turnRequested {
            do {
                step.turnedTo = try await self.exchange.turn(from: current.number, on: connection)?.epoch
            } catch let error as CaseVaultError
                where error.code == .storageFailure && !PostgresStorage.isCommitUnanswered(error)
            {
                // A holder of the current epoch without a pair for the next: it publishes one at its next
                // step, and the turn goes ahead then. (A turn whose commit went unanswered is a failed step.)
                step.waiting = error.message
            }
        }
        try await self.destroyOlder(on: connection, into: &step)
        return step
    }

    /// Step 2 for a daemon without the current epoch: the epochs it holds older than the one new wraps use,
    /// destroyed once nothing live is wrapped under one, without waiting for the current key (a daemon back
    /// from away keeps no key the others have destroyed while it waits).
    private func destroyPassed(on connection: PostgresConnection, into step: inout Step) async throws {
        let file = self.exchange.file
        guard let wrap = try await EpochExchange.wrapEpoch(connection, logger: self.exchange.logger),
            (file.keyEpochs() + file.pairEpochs()).contains(where: { $0 < wrap }),
            try await !self.wrappedBelow(wrap, connection)
        else { return }
        step.destroyed = try await self.exchange.destroy(before: wrap, holding: false, on: connection)
    }

    /// Step 4: the epochs older than the one new wraps use, destroyed once nothing live is wrapped under them.
    private func destroyOlder(on connection: PostgresConnection, into step: inout Step) async throws {
        // Called while nothing older is left too: it then only records destructions a crash left unrecorded.
        guard let wrap = try await EpochExchange.wrapEpoch(connection, logger: self.exchange.logger),
            self.exchange.file.keyEpochs().contains(wrap), wrap > 1
        else { return }
        // With no older key left in this daemon's file, nothing needs the count (and its lock, which holds
        // back every write): the call only records destructions a crash left unrecorded.
        guard self.exchange.file.keyEpochs().contains(where: { $0 < wrap }) else {
            step.destroyed = try await self.exchange.destroy(before: wrap, on: connection)
            return
        }
        if try await self.wrappedBelow(wrap, connection) {
            step.rewrapped = try await self.rewrap(wrap, try self.exchange.file.epochKeys(), connection)
            // Another daemon may still be rewrapping rows this one skipped (its next step destroys), or
            // rows lie under an epoch this daemon does not hold, for a daemon that holds it to rewrap.
            guard try await !self.wrappedBelow(wrap, connection) else {
                let held = Set(self.exchange.file.keyEpochs())
                let unheld = try await self.under(wrap, connection).filter { !held.contains($0) }
                step.waiting =
                    "data keys are still wrapped under epochs older than \(wrap): they are rewrapped first"
                    + (unheld.isEmpty
                        ? ""
                        : "; epochs \(unheld.map(String.init).joined(separator: ", ")), whose keys this daemon does not hold, by a daemon that holds them")
                return
            }
        }
        step.destroyed = try await self.exchange.destroy(before: wrap, on: connection)
    }
}

internal import CaseVaultCore
package import CaseVaultSealing
package import Logging
package import PostgresNIO

#if canImport(Glibc)
internal import Glibc
#endif

/// How the daemons that share one database agree on erase epochs without the database ever holding an
/// epoch key in a form that a long-lived key opens (docs/ARCHITECTURE.md, "The vault on PostgreSQL"):
///
/// 1. each daemon makes its own key pair for the next epoch, keeps the secret half in its epoch key file
///    and publishes the public half (`publishPair`);
/// 2. one daemon at a time (a transaction-scoped advisory lock) turns: it makes the epoch's random key,
///    seals it to every published pair of that epoch, and keeps it in its own file (`turn`); new wraps
///    move to the epoch once every copy is received (`wrapEpoch`);
/// 3. every other daemon opens its copy, keeps the key, destroys its pair's secret half and deletes the
///    copy (`receive`), so that the copy, wherever the database kept it, opens for no one;
/// 4. once the records are rewrapped under the new epoch, each daemon destroys the older epochs' keys in
///    its file and records the time (`destroy(before:)`).
///
/// Public keys and sealed copies carry a tag made with a key derived from the vault's root key, which every
/// daemon of the vault holds: whoever can write the database without it can neither put a pair of their
/// own in a daemon's place nor hand a daemon a key of their choosing. Only what the database needs
/// crosses: public keys, sealed copies, tags, epoch numbers and times.
package struct EpochExchange: Sendable {
    /// The advisory lock a turn holds (`CVEPOCHS` in ASCII): one daemon turns at a time.
    static let turnLock: Int64 = 0x4356_4550_4F43_4853

    package let daemon: DaemonName
    package let file: EpochKeyFile
    let logger: Logger

    package init(daemon: DaemonName, file: EpochKeyFile, logger: Logger) {
        self.daemon = daemon
        self.file = file
        self.logger = logger
    }

    /// The newest epoch turned to, or `nil` before the first turn.
    package static func currentEpoch(_ connection: PostgresConnection, logger: Logger) async throws -> UInt64? {
        try await Self.epoch("SELECT max(number) FROM casevault_epochs", connection, logger: logger)
    }

    /// The newest epoch turned to, how many seconds ago by the database's clock, and whether an operator
    /// asked for the turn from it now (`PostgresStorage.rotateErasureEpochs`); `nil` before the first turn.
    package static func currentEpochAge(_ connection: PostgresConnection, logger: Logger) async throws -> (
        number: UInt64, secondsSinceTurned: Int64, turnRequested: Bool
    )? {
        let rows = try await connection.query(
            """
            SELECT number, extract(epoch FROM now() - turned_at)::bigint, turn_requested_at IS NOT NULL
            FROM casevault_epochs ORDER BY number DESC LIMIT 1
            """, logger: logger)
        for try await (number, age, requested) in rows.decode((Int64, Int64, Bool).self) {
            return (UInt64(number), age, requested)
        }
        return nil
    }

    /// The epoch new wraps use: the newest epoch every copy of whose key was received once (its `ready_at`,
    /// set as the last copy is deleted), so that no daemon meets a data key wrapped under an epoch it does
    /// not hold yet. It only moves forward: a daemon that joins later does not move it back. `nil` before
    /// the first turn.
    package static func wrapEpoch(_ connection: PostgresConnection, logger: Logger) async throws -> UInt64? {
        try await Self.epoch(
            "SELECT max(number) FROM casevault_epochs WHERE ready_at IS NOT NULL", connection, logger: logger)
    }

    /// The one epoch number (or NULL) that `query` selects.
    private static func epoch(_ query: PostgresQuery, _ connection: PostgresConnection, logger: Logger)
        async throws -> UInt64?
    {
        var epoch: Int64?
        for try await number in try await connection.query(query, logger: logger).decode(Int64?.self) {
            epoch = number
        }
        return epoch.map { UInt64($0) }
    }

    /// Seals the current epoch's key, which this daemon holds, to every daemon that has published a pair for
    /// that epoch but neither holds the key nor has a copy waiting: a daemon that joined after the turn, or
    /// came back after losing its file. Returns the daemons sealed to.
    package func shareCurrent(on connection: PostgresConnection) async throws -> [DaemonName] {
        let keys = try self.file.epochKeys()
        return try await connection.transaction(logger: self.logger) { connection in
            try await connection.perform("SELECT pg_advisory_xact_lock(\(Self.turnLock))", logger: self.logger)
            guard let current = try await Self.currentEpoch(connection, logger: self.logger) else { return [] }
            guard let key = keys.first(where: { $0.number == current }) else {
                throw CaseVaultError(
                    .keyUnavailable, "this daemon does not hold the current epoch's key, so it cannot share it")
            }
            let waiting = try await self.publishedPairs(epoch: current, waitingOnly: true, on: connection)
            for (name, publicKey) in waiting {
                try await self.insertCopy(of: key, to: name, publicKey: publicKey, on: connection)
            }
            return waiting.map(\.name)
        }
    }

    /// Publishes this daemon's public key for `epoch`, with its tag, making the pair first if its file has
    /// none for it. A pair made anew (the file was lost, or the epoch is new) replaces any published before,
    /// and with it goes any copy sealed to the old pair; any record that this daemon holds the epoch goes in
    /// either case, since its file does not. Does nothing when the file holds the epoch's key already.
    package func publishPair(for epoch: UInt64, on connection: PostgresConnection) async throws {
        guard !self.file.keyEpochs().contains(epoch) else { return }
        let kept = try self.file.pair(epoch: epoch)
        let pair = try kept ?? self.file.makePair(epoch: epoch)
        let tag = self.file.tag(Self.pairMessage(epoch: epoch, daemon: self.daemon, publicKey: pair.publicKey))
        try await connection.transaction(logger: self.logger) { connection in
            try await connection.perform(
                """
                INSERT INTO casevault_epoch_pairs (epoch, daemon, public_key, tag)
                VALUES (\(Int64(epoch)), \(self.daemon.rawValue), \(ByteBuffer(bytes: pair.publicKey)), \(ByteBuffer(bytes: tag)))
                ON CONFLICT (epoch, daemon) DO UPDATE SET public_key = excluded.public_key, tag = excluded.tag
                """, logger: self.logger)
            if kept == nil {
                try await connection.perform(
                    "DELETE FROM casevault_epoch_copies WHERE epoch = \(Int64(epoch)) AND daemon = \(self.daemon.rawValue)",
                    logger: self.logger)
            }
            // The file holds no key of the epoch: a row saying this daemon holds it (left when a copy waiting
            // for it was taken away at its retirement, or marked destroyed when it was forgotten) is stale,
            // and would keep `shareCurrent` from sealing the key to it.
            try await connection.perform(
                "DELETE FROM casevault_epoch_holders WHERE epoch = \(Int64(epoch)) AND daemon = \(self.daemon.rawValue)",
                logger: self.logger)
        }
    }

    /// Turns from epoch `expected` (`nil`: none yet) to the next: its key made here, sealed to every pair
    /// published for it, kept in this daemon's file. Returns the new epoch's number and the daemons it was
    /// sealed to (this one included), or `nil`, changing nothing, when another daemon turned first. Refuses,
    /// changing nothing, when a published pair's tag is not the vault's, or when a daemon that holds the
    /// current epoch, and was not retired as away (`retireAway`), has published no pair for the next (it
    /// would be left without the key).
    package func turn(from expected: UInt64?, on connection: PostgresConnection) async throws -> (
        epoch: UInt64, sealedTo: [DaemonName]
    )? {
        let turned = try await connection.transaction(logger: self.logger) {
            connection -> (epoch: UInt64, sealedTo: [DaemonName])? in
            try await connection.perform("SELECT pg_advisory_xact_lock(\(Self.turnLock))", logger: self.logger)
            let current = try await Self.currentEpoch(connection, logger: self.logger)
            guard current == expected else { return nil }
            let next = (current ?? 0) + 1
            let pairs = try await self.publishedPairs(epoch: next, waitingOnly: false, on: connection)
            guard pairs.contains(where: { $0.name == self.daemon }) else {
                throw CaseVaultError(
                    .storageFailure, "this daemon has no key pair published for epoch \(next): publish one first")
            }
            if let current {
                for try await holder in try await connection.query(
                    """
                    SELECT daemon FROM casevault_epoch_holders
                    WHERE epoch = \(Int64(current)) AND destroyed_at IS NULL AND retired_at IS NULL ORDER BY daemon
                    """, logger: self.logger
                ).decode(String.self) where !pairs.contains(where: { $0.name.rawValue == holder }) {
                    throw CaseVaultError(
                        .storageFailure,
                        "daemon \(holder) holds epoch \(current) but has published no key pair for epoch \(next): it would be left without the new key"
                    )
                }
            }
            let key = EpochKey.random(number: next)
            try await connection.perform(
                "INSERT INTO casevault_epochs (number, turned_by) VALUES (\(Int64(next)), \(self.daemon.rawValue))",
                logger: self.logger)
            for (name, publicKey) in pairs where name != self.daemon {
                try await self.insertCopy(of: key, to: name, publicKey: publicKey, on: connection)
            }
            try await connection.perform(
                "INSERT INTO casevault_epoch_holders (epoch, daemon) VALUES (\(Int64(next)), \(self.daemon.rawValue))",
                logger: self.logger)
            try await Self.markReadyIfReceived(next, on: connection, logger: self.logger)
            // Kept before the commit, so that no epoch is turned to whose key no file holds. A key that a turn
            // whose commit then failed left in the file is destroyed first (and `receive` replaces one that
            // differs from the copy it opens).
            try self.file.destroyKey(epoch: next)
            try self.file.keep(key)
            return (epoch: next, sealedTo: pairs.map(\.name))
        }
        guard let turned else { return nil }
        // The turner needs no copy: its pair for the epoch is destroyed at once.
        try self.file.destroyPair(epoch: turned.epoch)
        self.logger.notice("turned to a new erase epoch", metadata: ["epoch": "\(turned.epoch)"])
        return turned
    }

    /// Receives every epoch key sealed to this daemon: checks the copy's tag, opens it with its pair, keeps
    /// the key (replacing one the file holds for that epoch if it differs: left by a turn that did not
    /// commit), records that it holds it (whatever its row said before: it holds the key now) and deletes the
    /// copy, then destroys the pair's secret half. Also
    /// destroys any pair whose epoch's key the file holds, left by a crash between those steps. Returns the
    /// epochs received.
    package func receive(on connection: PostgresConnection) async throws -> [UInt64] {
        var copies: [(UInt64, [UInt8], [UInt8])] = []
        for try await (epoch, sealed, tag) in try await connection.query(
            """
            SELECT epoch, sealed, tag FROM casevault_epoch_copies WHERE daemon = \(self.daemon.rawValue) ORDER BY epoch
            """, logger: self.logger
        ).decode((Int64, ByteBuffer, ByteBuffer).self) {
            copies.append((UInt64(epoch), Array(sealed.readableBytesView), Array(tag.readableBytesView)))
        }
        var received: [UInt64] = []
        for (epoch, sealed, tag) in copies {
            guard self.file.isAuthentic(tag, of: Self.copyMessage(epoch: epoch, daemon: self.daemon, sealed: sealed))
            else {
                throw CaseVaultError(
                    .integrityFailure,
                    "the copy of epoch \(epoch)'s key sealed to this daemon does not carry the vault's tag: it was written by someone without the vault's root key"
                )
            }
            guard let pair = try self.file.pair(epoch: epoch) else {
                throw CaseVaultError(
                    .keyUnavailable,
                    "the key pair epoch \(epoch)'s key was sealed to is gone from this daemon's epoch key file: publish a new pair and have a live daemon seal the key again"
                )
            }
            let key = try EpochKey.opening(sealed, number: epoch, daemon: self.daemon, pair: pair)
            let held = try self.file.epochKeys().first { $0.number == epoch }
            if held.map({ !$0.isSame(as: key) }) ?? true {
                try self.file.destroyKey(epoch: epoch)
                try self.file.keep(key)
            }
            try await connection.transaction(logger: self.logger) { connection in
                // Under the turn lock, so that of two daemons receiving at once the second sees the first's
                // copy gone and marks the epoch ready (each alone would still see the other's copy).
                try await connection.perform("SELECT pg_advisory_xact_lock(\(Self.turnLock))", logger: self.logger)
                try await connection.perform(
                    """
                    INSERT INTO casevault_epoch_holders (epoch, daemon) VALUES (\(Int64(epoch)), \(self.daemon.rawValue))
                    ON CONFLICT (epoch, daemon) DO UPDATE
                        SET received_at = now(), destroyed_at = NULL, retired_at = NULL, attested = false
                    """, logger: self.logger)
                try await connection.perform(
                    "DELETE FROM casevault_epoch_copies WHERE epoch = \(Int64(epoch)) AND daemon = \(self.daemon.rawValue)",
                    logger: self.logger)
                try await Self.markReadyIfReceived(epoch, on: connection, logger: self.logger)
            }
            try self.file.destroyPair(epoch: epoch)
            received.append(epoch)
        }
        let held = Set(self.file.keyEpochs())
        for epoch in self.file.pairEpochs() where held.contains(epoch) {
            try self.file.destroyPair(epoch: epoch)
        }
        return received
    }

    /// Destroys in this daemon's file every epoch key and pair older than `epoch`, whose key it must hold
    /// (unless `holding` is false: for a daemon back from away, once no live data key is wrapped under an
    /// older epoch), each slot overwritten and flushed, then records the time for every such epoch not yet
    /// recorded (the file is the truth: a crash between the two is mended by the next call). Returns the
    /// epochs whose keys were destroyed now.
    package func destroy(before epoch: UInt64, holding: Bool = true, on connection: PostgresConnection)
        async throws -> [UInt64]
    {
        let held = self.file.keyEpochs()
        guard held.contains(epoch) || !holding else {
            throw CaseVaultError(
                .keyUnavailable,
                "this daemon does not hold epoch \(epoch)'s key, so it destroys none older: receive it first")
        }
        var destroyed: [UInt64] = []
        for older in held where older < epoch {
            try self.file.destroyKey(epoch: older)
            destroyed.append(older)
        }
        for older in self.file.pairEpochs() where older < epoch {
            try self.file.destroyPair(epoch: older)
        }
        try await connection.perform(
            """
            UPDATE casevault_epoch_holders SET destroyed_at = now()
            WHERE daemon = \(self.daemon.rawValue) AND epoch < \(Int64(epoch)) AND destroyed_at IS NULL
            """, logger: self.logger)
        return destroyed
    }

    // MARK: Daemons away

    /// What `seen` found of this daemon.
    package struct Seen: Sendable, Equatable {
        /// How many seconds, by the database's clock, this daemon has stepped without a long gap.
        package var stepping: Int64
        /// When an operator declared this daemon's epoch key file destroyed (`forget`) and it has not
        /// destroyed its keys since (`rejoinForgotten`): the mark's newest epoch and tag.
        package var forgotten: Forgotten?
    }

    /// The mark `forget` leaves on a daemon: the newest epoch turned to then, and a tag under the root key's
    /// epoch subkey over it and the daemon's name.
    package struct Forgotten: Sendable, Equatable {
        package var epoch: UInt64
        package var tag: [UInt8]
    }

    /// Records that this daemon steps now, and takes back its part in the epochs its file holds that it was
    /// retired from while away (`retireAway`): the others wait for it again, as they wait for any holder.
    /// Returns how many seconds, by the database's clock, this daemon has stepped without a gap longer than
    /// `gap` seconds (0 at its first step, and at its first after such a gap), and whether it was forgotten.
    package func seen(gap: Int64, on connection: PostgresConnection) async throws -> Seen {
        let held = self.file.keyEpochs().map { Int64($0) }
        // One statement, one round trip every step: the holdings taken back in a data-modifying `WITH`.
        var seen = Seen(stepping: 0, forgotten: nil)
        for try await row in try await connection.query(
            """
            WITH back AS (
                UPDATE casevault_epoch_holders SET retired_at = NULL
                WHERE daemon = \(self.daemon.rawValue) AND retired_at IS NOT NULL AND destroyed_at IS NULL
                    AND epoch = ANY(\(held)::int8[])
            )
            INSERT INTO casevault_daemons AS d (daemon, seen_at, back_at)
            VALUES (\(self.daemon.rawValue), now(), now())
            ON CONFLICT (daemon) DO UPDATE SET seen_at = now(),
                back_at = CASE WHEN d.seen_at < now() - make_interval(secs => \(Double(gap))) THEN now()
                    ELSE d.back_at END
            RETURNING extract(epoch FROM now() - back_at)::int8, forgotten_at IS NOT NULL, forgotten_epoch,
                forgotten_tag
            """, logger: self.logger
        ).decode((Int64, Bool, Int64?, ByteBuffer?).self) {
            let (stepping, isForgotten, epoch, tag) = row
            // A mark without its epoch or tag is checked, and refused, as one with a wrong tag.
            let forgotten =
                isForgotten
                ? Forgotten(epoch: UInt64(max(0, epoch ?? 0)), tag: tag.map { Array($0.readableBytesView) } ?? [])
                : nil
            seen = Seen(stepping: stepping, forgotten: forgotten)
        }
        return seen
    }

    /// Retires every other daemon that has not stepped for `seconds` (by the database's clock) and does not
    /// hold its presence lock (`DaemonPresence`): its pairs and the copies still waiting for it are deleted
    /// (each copy leaving a retired holding, since the pair in its file opens the copy's residue), every
    /// epoch whose copies are then all received becomes ready, and its holdings not yet destroyed are
    /// marked retired, so that turns no longer wait for its pair. A stopped host thus holds back neither
    /// the turns nor new wraps; it rejoins by publishing a pair and being sealed the current key by a live
    /// daemon, and destroys at once what the vault moved past (`EpochSchedule.step`). Its holdings still
    /// hold back the certificates that complete an erasure (`PostgresStorage.certifyErasures`): its file
    /// keeps those keys until it starts again. Returns the daemons retired.
    package func retireAway(after seconds: Int64, on connection: PostgresConnection) async throws -> [DaemonName] {
        try await connection.transaction(logger: self.logger) { connection -> [DaemonName] in
            try await connection.perform("SELECT pg_advisory_xact_lock(\(Self.turnLock))", logger: self.logger)
            var away: [DaemonName] = []
            for try await name in try await connection.query(
                """
                SELECT d.daemon FROM casevault_daemons d
                WHERE d.daemon <> \(self.daemon.rawValue)
                    AND d.seen_at < now() - make_interval(secs => \(Double(seconds)))
                    AND (EXISTS (SELECT 1 FROM casevault_epoch_pairs p WHERE p.daemon = d.daemon)
                        OR EXISTS (SELECT 1 FROM casevault_epoch_copies c WHERE c.daemon = d.daemon)
                        OR EXISTS (SELECT 1 FROM casevault_epoch_holders h
                            WHERE h.daemon = d.daemon AND h.destroyed_at IS NULL AND h.retired_at IS NULL))
                ORDER BY d.daemon
                """, logger: self.logger
            ).decode(String.self) {
                away.append(try DaemonName(name))
            }
            var retired: [DaemonName] = []
            for daemon in away {
                guard try await !Self.isPresent(daemon, on: connection, logger: self.logger) else { continue }
                let name = daemon.rawValue
                // A copy waiting for it opens, from wherever the database kept it, with the pair its file
                // holds: the certificates of that epoch wait for it as for a holder, retired.
                try await connection.perform(
                    """
                    INSERT INTO casevault_epoch_holders (epoch, daemon, retired_at)
                    SELECT epoch, daemon, now() FROM casevault_epoch_copies WHERE daemon = \(name)
                    ON CONFLICT (epoch, daemon) DO NOTHING
                    """, logger: self.logger)
                try await Self.dropPairsAndCopies(of: name, on: connection, logger: self.logger)
                try await connection.perform(
                    """
                    UPDATE casevault_epoch_holders SET retired_at = now()
                    WHERE daemon = \(name) AND destroyed_at IS NULL AND retired_at IS NULL
                    """, logger: self.logger)
                retired.append(daemon)
            }
            if !retired.isEmpty {
                try await Self.markReadyWhereReceived(on: connection, logger: self.logger)
            }
            return retired
        }
    }

    /// Whether `daemon`'s presence lock is held in this database now: a daemon that serves, even one whose
    /// steps have stalled.
    static func isPresent(_ daemon: DaemonName, on connection: PostgresConnection, logger: Logger) async throws
        -> Bool
    {
        let (high, low) = DaemonPresence.lockHalves(daemon)
        for try await present in try await connection.query(
            """
            SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND classid::int8 = \(high) AND objid::int8 = \(low))
            """, logger: logger
        ).decode(Bool.self) {
            return present
        }
        return false
    }

    // MARK: Hosts gone for good

    /// Records an operator's word that `daemon`'s epoch key file is destroyed (its host is gone for good,
    /// its disk wiped or destroyed), so that the certificates completing the erasures its holdings held
    /// back are issued, naming it as attested (`PostgresStorage.certifyErasures`). Under the turn lock: its
    /// holdings not yet destroyed, and the epochs of the copies still waiting for it (its pair would open
    /// their residue), are marked destroyed now on that word (`attested`); its pairs and copies are
    /// deleted; the epochs whose copies are then all received become ready; and the daemon is marked
    /// forgotten up to the current epoch, the mark tagged under the root key, so that if it ever steps
    /// again it first destroys every key and pair its file holds up to that epoch (`rejoinForgotten`).
    ///
    /// Refuses, changing nothing: a name that never stepped in this vault (`not-found`); a daemon whose
    /// presence lock is held, or that stepped within `awayAfter` seconds (`daemon-present`: it serves, or
    /// may be between two connections, as in a failover); and a daemon that alone holds an epoch that live
    /// records or holds are still wrapped under (`sole-key-holder`: were it not gone after all, coming back
    /// would destroy the last key to them). Returns the epochs marked destroyed.
    package static func forget(
        _ daemon: DaemonName, awayAfter: Int64, file: EpochKeyFile, on connection: PostgresConnection,
        logger: Logger
    ) async throws -> [UInt64] {
        try await connection.transaction(logger: logger) { connection -> [UInt64] in
            try await connection.perform("SELECT pg_advisory_xact_lock(\(Self.turnLock))", logger: logger)
            let name = daemon.rawValue
            var away: Bool?
            for try await old in try await connection.query(
                """
                SELECT seen_at < now() - make_interval(secs => \(Double(awayAfter)))
                FROM casevault_daemons WHERE daemon = \(name) FOR UPDATE
                """, logger: logger
            ).decode(Bool.self) {
                away = old
            }
            guard let away else {
                throw CaseVaultError(
                    .notFound, "no daemon of that name has taken part in this vault's erase epochs",
                    field: "daemon")
            }
            guard away, try await !Self.isPresent(daemon, on: connection, logger: logger) else {
                throw CaseVaultError(
                    .daemonPresent,
                    "that daemon serves the vault, or stepped the erase epochs within the last \(awayAfter / 60) minutes: stop it, and forget only a daemon whose host is gone for good",
                    field: "daemon")
            }
            for try await epoch in try await connection.query(
                """
                SELECT h.epoch FROM casevault_epoch_holders h
                WHERE h.daemon = \(name) AND h.destroyed_at IS NULL
                    AND NOT EXISTS (SELECT 1 FROM casevault_epoch_holders o
                        WHERE o.epoch = h.epoch AND o.daemon <> h.daemon AND o.destroyed_at IS NULL)
                    AND (EXISTS (SELECT 1 FROM casevault_records r WHERE r.epoch = h.epoch)
                        OR EXISTS (SELECT 1 FROM casevault_holds d WHERE d.epoch = h.epoch))
                ORDER BY h.epoch LIMIT 1
                """, logger: logger
            ).decode(Int64.self) {
                throw CaseVaultError(
                    .soleKeyHolder,
                    "that daemon alone holds erase epoch \(epoch), under which live records or holds are still wrapped: were its host not gone, forgetting it would destroy the last key to them; start a daemon that holds the epoch, or wait until the records are rewrapped",
                    field: "daemon")
            }
            let current = try await Self.currentEpoch(connection, logger: logger) ?? 0
            var epochs: Set<UInt64> = []
            for try await epoch in try await connection.query(
                """
                INSERT INTO casevault_epoch_holders (epoch, daemon, destroyed_at, attested)
                SELECT epoch, daemon, now(), true FROM casevault_epoch_copies WHERE daemon = \(name)
                ON CONFLICT (epoch, daemon) DO UPDATE SET destroyed_at = now(), attested = true
                    WHERE casevault_epoch_holders.destroyed_at IS NULL
                RETURNING epoch
                """, logger: logger
            ).decode(Int64.self) {
                epochs.insert(UInt64(epoch))
            }
            try await Self.dropPairsAndCopies(of: name, on: connection, logger: logger)
            for try await epoch in try await connection.query(
                """
                UPDATE casevault_epoch_holders SET destroyed_at = now(), attested = true
                WHERE daemon = \(name) AND destroyed_at IS NULL RETURNING epoch
                """, logger: logger
            ).decode(Int64.self) {
                epochs.insert(UInt64(epoch))
            }
            let tag = file.tag(Self.forgottenMessage(daemon: daemon, epoch: current))
            try await connection.perform(
                """
                UPDATE casevault_daemons SET forgotten_at = now(), forgotten_epoch = \(Int64(current)),
                    forgotten_tag = \(ByteBuffer(bytes: tag))
                WHERE daemon = \(name)
                """, logger: logger)
            try await Self.markReadyWhereReceived(on: connection, logger: logger)
            return epochs.sorted()
        }
    }

    /// For a daemon that was forgotten (`forget`) and steps again (its host was not gone after all, or its
    /// directory was restored): checks the mark's tag (`integrity-failure`, destroying nothing, when it is
    /// not the vault's: whoever wrote it lacks the root key), destroys every epoch key and pair its file
    /// holds up to the mark's epoch, each slot overwritten and flushed, which makes the operator's word true,
    /// then clears the mark. It then joins as a daemon without the current key does. Returns the epochs
    /// whose keys were destroyed. A crash between the two is mended by the next step, which finds the mark
    /// still set and nothing left to destroy.
    package func rejoinForgotten(_ mark: Forgotten, on connection: PostgresConnection) async throws -> [UInt64] {
        guard self.file.isAuthentic(mark.tag, of: Self.forgottenMessage(daemon: self.daemon, epoch: mark.epoch))
        else {
            throw CaseVaultError(
                .integrityFailure,
                "the mark that forgets this daemon does not carry the vault's tag: it was written by someone without the vault's root key, and no key was destroyed"
            )
        }
        var destroyed: [UInt64] = []
        for epoch in self.file.keyEpochs() where epoch <= mark.epoch {
            try self.file.destroyKey(epoch: epoch)
            destroyed.append(epoch)
        }
        for epoch in self.file.pairEpochs() where epoch <= mark.epoch {
            try self.file.destroyPair(epoch: epoch)
        }
        try await connection.perform(
            """
            UPDATE casevault_daemons SET forgotten_at = NULL, forgotten_epoch = NULL, forgotten_tag = NULL
            WHERE daemon = \(self.daemon.rawValue)
            """, logger: self.logger)
        return destroyed
    }

    static func forgottenMessage(daemon: DaemonName, epoch: UInt64) -> [UInt8] {
        Self.message("casevault daemon forgotten v1", epoch: epoch, daemon: daemon)
    }

    // MARK: What crosses the database

    /// Deletes every pair `daemon` published and every copy waiting for it (`retireAway`, `forget`).
    private static func dropPairsAndCopies(of daemon: String, on connection: PostgresConnection, logger: Logger)
        async throws
    {
        try await connection.perform("DELETE FROM casevault_epoch_copies WHERE daemon = \(daemon)", logger: logger)
        try await connection.perform("DELETE FROM casevault_epoch_pairs WHERE daemon = \(daemon)", logger: logger)
    }

    /// Marks every epoch not yet ready whose copies are all received ready for wraps: after a daemon's
    /// waiting copies were deleted (`retireAway`, `forget`).
    private static func markReadyWhereReceived(on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.perform(
            """
            UPDATE casevault_epochs e SET ready_at = now()
            WHERE e.ready_at IS NULL
                AND NOT EXISTS (SELECT 1 FROM casevault_epoch_copies c WHERE c.epoch = e.number)
            """, logger: logger)
    }

    /// Marks `epoch` ready for wraps once no copy of its key waits to be received.
    private static func markReadyIfReceived(_ epoch: UInt64, on connection: PostgresConnection, logger: Logger)
        async throws
    {
        try await connection.perform(
            """
            UPDATE casevault_epochs SET ready_at = now()
            WHERE number = \(Int64(epoch)) AND ready_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM casevault_epoch_copies WHERE epoch = \(Int64(epoch)))
            """, logger: logger)
    }

    /// The pairs published for `epoch` (`waitingOnly`: of daemons that neither hold its key nor have a copy
    /// waiting), each tag checked: `integrity-failure`, and nothing sealed, when one is not the vault's.
    private func publishedPairs(epoch: UInt64, waitingOnly: Bool, on connection: PostgresConnection)
        async throws -> [(name: DaemonName, publicKey: [UInt8])]
    {
        let number = Int64(epoch)
        let query: PostgresQuery =
            waitingOnly
            ? """
            SELECT p.daemon, p.public_key, p.tag FROM casevault_epoch_pairs p WHERE p.epoch = \(number)
            AND NOT EXISTS (SELECT 1 FROM casevault_epoch_holders h WHERE h.epoch = p.epoch AND h.daemon = p.daemon)
            AND NOT EXISTS (SELECT 1 FROM casevault_epoch_copies c WHERE c.epoch = p.epoch AND c.daemon = p.daemon)
            ORDER BY p.daemon
            """
            : "SELECT p.daemon, p.public_key, p.tag FROM casevault_epoch_pairs p WHERE p.epoch = \(number) ORDER BY p.daemon"
        var pairs: [(name: DaemonName, publicKey: [UInt8])] = []
        for try await (name, publicKey, tag) in try await connection.query(query, logger: self.logger).decode(
            (String, ByteBuffer, ByteBuffer).self)
        {
            let daemon = try DaemonName(name)
            let publicKey = Array(publicKey.readableBytesView)
            guard
                self.file.isAuthentic(
                    Array(tag.readableBytesView),
                    of: Self.pairMessage(epoch: epoch, daemon: daemon, publicKey: publicKey))
            else {
                throw CaseVaultError(
                    .integrityFailure,
                    "a key pair published for epoch \(epoch) does not carry the vault's tag: it was written by someone without the vault's root key, and no key is sealed to it"
                )
            }
            pairs.append((daemon, publicKey))
        }
        return pairs
    }

    private func insertCopy(
        of key: EpochKey, to daemon: DaemonName, publicKey: [UInt8], on connection: PostgresConnection
    ) async throws {
        let sealed = try key.sealed(to: daemon, publicKey: publicKey)
        let tag = self.file.tag(Self.copyMessage(epoch: key.number, daemon: daemon, sealed: sealed))
        try await connection.perform(
            """
            INSERT INTO casevault_epoch_copies (epoch, daemon, sealed, tag)
            VALUES (\(Int64(key.number)), \(daemon.rawValue), \(ByteBuffer(bytes: sealed)), \(ByteBuffer(bytes: tag)))
            """, logger: self.logger)
    }

    static func pairMessage(epoch: UInt64, daemon: DaemonName, publicKey: [UInt8]) -> [UInt8] {
        Self.message("casevault epoch pair v1", epoch: epoch, daemon: daemon) + publicKey
    }

    static func copyMessage(epoch: UInt64, daemon: DaemonName, sealed: [UInt8]) -> [UInt8] {
        Self.message("casevault epoch copy v1", epoch: epoch, daemon: daemon) + sealed
    }

    private static func message(_ label: String, epoch: UInt64, daemon: DaemonName) -> [UInt8] {
        Array(label.utf8) + epoch.littleEndianBytes + [UInt8(daemon.rawValue.utf8.count)] + Array(daemon.rawValue.utf8)
    }
}

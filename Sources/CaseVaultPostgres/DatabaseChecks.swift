internal import Foundation
package import Logging
package import PostgresNIO

/// doctor's checks of the database side, asked of the primary: what the server promises about a write the
/// vault acknowledges. The role needs `pg_monitor` to see the standbys' replication state.
package enum DatabaseChecks {
    package enum Status: String, Sendable, Comparable {
        case pass, warn, fail

        package static func < (lhs: Status, rhs: Status) -> Bool {
            [.pass, .warn, .fail].firstIndex(of: lhs)! < [.pass, .warn, .fail].firstIndex(of: rhs)!
        }
    }

    package struct Check: Sendable, Equatable {
        package var name: String
        package var status: Status
        package var detail: String
    }

    /// The oldest server the vault runs on.
    static let minimumVersion = 150_000

    /// The checks: the server's version, whether a commit waits for a standby, and which standbys stream.
    package static func run(on connection: PostgresConnection, logger: Logger) async throws -> [Check] {
        let version = Int(try await Self.setting("server_version_num", on: connection, logger: logger)) ?? 0
        let synchronousCommit = try await Self.setting("synchronous_commit", on: connection, logger: logger)
        let standbyNames = try await Self.setting("synchronous_standby_names", on: connection, logger: logger)
        var standbys: [(name: String, state: String?, syncState: String?)] = []
        let rows = try await connection.query(
            "SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY application_name",
            logger: logger)
        for try await (name, state, syncState) in rows.decode((String?, String?, String?).self) {
            standbys.append((name ?? "(unnamed)", state, syncState))
        }
        return [
            Self.versionCheck(version),
            Self.commitCheck(synchronousCommit: synchronousCommit, standbyNames: standbyNames),
            Self.replicationCheck(standbyNames: standbyNames, standbys: standbys),
        ]
    }

    static func versionCheck(_ version: Int) -> Check {
        let shown = "\(version / 10_000).\(version % 10_000)"
        return version >= Self.minimumVersion
            ? Check(name: "database version", status: .pass, detail: "PostgreSQL \(shown)")
            : Check(
                name: "database version", status: .fail,
                detail: "PostgreSQL \(shown): the vault needs PostgreSQL 15 or later")
    }

    /// A commit is acknowledged only once a synchronous standby has it (`on`, `remote_write`, `remote_apply`
    /// with `synchronous_standby_names` set); otherwise a failover can lose writes the vault acknowledged.
    package static func commitCheck(synchronousCommit: String, standbyNames: String) -> Check {
        let name = "synchronous commit"
        switch synchronousCommit {
        case "off":
            return Check(
                name: name, status: .fail,
                detail: "synchronous_commit = off: a crash of the primary loses commits the vault acknowledged")
        case "local":
            return Check(
                name: name, status: .warn,
                detail: "synchronous_commit = local: a failover loses commits the standby had not received")
        default:
            guard !standbyNames.trimmingCharacters(in: .whitespaces).isEmpty else {
                return Check(
                    name: name, status: .warn,
                    detail:
                        "synchronous_commit = \(synchronousCommit) but synchronous_standby_names is empty: no commit waits for a standby, so a failover can lose acknowledged writes"
                )
            }
            return Check(
                name: name, status: .pass,
                detail: "synchronous_commit = \(synchronousCommit), synchronous_standby_names = '\(standbyNames)'")
        }
    }

    /// With synchronous standbys named, at least one must be streaming in sync, or every commit waits.
    package static func replicationCheck(
        standbyNames: String, standbys: [(name: String, state: String?, syncState: String?)]
    ) -> Check {
        let name = "replication"
        let inSync = standbys.filter { $0.state == "streaming" && ($0.syncState == "sync" || $0.syncState == "quorum") }
        let listed = standbys.map { "\($0.name) \($0.state ?? "unknown") \($0.syncState ?? "unknown")" }
            .joined(separator: ", ")
        if standbys.contains(where: { $0.state == nil }) {
            return Check(
                name: name, status: .warn,
                detail: "the standbys' state is hidden from this role: grant it pg_monitor")
        }
        if standbyNames.trimmingCharacters(in: .whitespaces).isEmpty {
            return Check(
                name: name, status: standbys.isEmpty ? .warn : .pass,
                detail: standbys.isEmpty ? "no standby streams from this server" : "standbys: \(listed)")
        }
        let required = Self.requiredStandbys(standbyNames)
        guard inSync.count >= required else {
            return Check(
                name: name, status: .fail,
                detail:
                    "synchronous_standby_names asks for \(required) synchronous standby(s) but \(inSync.count) stream in sync: every commit waits until enough do"
                    + (standbys.isEmpty ? "" : " (standbys: \(listed))"))
        }
        return Check(name: name, status: .pass, detail: "standbys: \(listed)")
    }

    /// Whether PostgreSQL takes as many connections as the vault's daemons (those the database has seen, at
    /// least one) open at their busiest, `perDaemon` each: `max_connections` less those kept for superusers.
    /// Short of it is a warning: the calls past it are answered 503 while every daemon is that busy.
    package static func connectionsCheck(
        on connection: PostgresConnection, daemonsTable: Bool, perDaemon: Int, logger: Logger
    ) async throws -> Check {
        let most = Int(try await Self.setting("max_connections", on: connection, logger: logger)) ?? 0
        let reserved =
            Int(try await Self.setting("superuser_reserved_connections", on: connection, logger: logger)) ?? 0
        var daemons = 1
        if daemonsTable {
            for try await count in try await connection.query(
                "SELECT count(*) FROM casevault_daemons", logger: logger
            ).decode(Int64.self) {
                daemons = max(1, Int(count))
            }
        }
        return Self.connectionsCheck(maxConnections: most, reserved: reserved, daemons: daemons, perDaemon: perDaemon)
    }

    package static func connectionsCheck(maxConnections: Int, reserved: Int, daemons: Int, perDaemon: Int) -> Check {
        let needed = daemons * perDaemon
        let detail =
            "max_connections = \(maxConnections), \(reserved) of them kept for superusers; \(daemons) daemon(s) open up to about \(perDaemon) each at their busiest"
        guard maxConnections - reserved >= needed else {
            return Check(
                name: "connections", status: .warn,
                detail: detail
                    + ": raise max_connections to at least \(needed + reserved), or calls past it are answered 503 while the daemons are that busy"
            )
        }
        return Check(name: "connections", status: .pass, detail: detail)
    }

    /// Whether any daemon is behind its erase epoch, judged against `eraseWindow` (seconds): a shred is
    /// promised complete by its time plus the window, which leaves half a window for the epoch current at the
    /// shred to be replaced and half for every daemon to destroy it. Late against that promise is a failure:
    /// the current epoch turned longer than half a window ago (no turn since; the daemons whose copy of its
    /// key still waits are named with it), or an older epoch still held past half a window after its
    /// successor was turned to. A copy still waiting, or an older epoch still held, within the half window is
    /// a turn under way: a warning, with the daemons named. Ages are the database's clock, which stamped the
    /// rows.
    package static func epochCheck(on connection: PostgresConnection, eraseWindow: Int64, logger: Logger)
        async throws -> Check
    {
        guard let found = try await EpochExchange.currentEpochAge(connection, logger: logger) else {
            return Check(name: "erase epochs", status: .pass, detail: "no erase epoch turned to yet")
        }
        let epoch = (number: Int64(found.number), age: found.secondsSinceTurned)
        var waiting: [String] = []
        for try await daemon in try await connection.query(
            "SELECT daemon FROM casevault_epoch_copies WHERE epoch = \(epoch.number) ORDER BY daemon", logger: logger
        ).decode(String.self) {
            waiting.append(daemon)
        }
        // Each older epoch still held, with how long ago the epoch after it was turned to.
        var holding: [Holder] = []
        for try await (daemon, held, age, away) in try await connection.query(
            """
            SELECT h.daemon, h.epoch, extract(epoch FROM now() - n.turned_at)::bigint, h.retired_at IS NOT NULL
            FROM casevault_epoch_holders h
            JOIN casevault_epochs n ON n.number = (SELECT min(number) FROM casevault_epochs WHERE number > h.epoch)
            WHERE h.epoch < \(epoch.number) AND h.destroyed_at IS NULL ORDER BY h.daemon, h.epoch
            """, logger: logger
        ).decode((String, Int64, Int64, Bool).self) {
            holding.append(Holder(daemon: daemon, epoch: held, secondsSinceReplaced: age, away: away))
        }
        return Self.epochVerdict(
            current: epoch.number, secondsSinceTurned: epoch.age, waiting: waiting, holding: holding,
            eraseWindow: eraseWindow)
    }

    /// A daemon's older epoch not yet destroyed.
    package struct Holder: Sendable, Equatable {
        package var daemon: String
        package var epoch: Int64
        /// How long ago the epoch after it was turned to.
        package var secondsSinceReplaced: Int64
        /// Whether its daemon was retired as away (`EpochExchange.retireAway`): its host's key file keeps
        /// the key until the daemon starts again.
        package var away: Bool

        package init(daemon: String, epoch: Int64, secondsSinceReplaced: Int64, away: Bool = false) {
            self.daemon = daemon
            self.epoch = epoch
            self.secondsSinceReplaced = secondsSinceReplaced
            self.away = away
        }
    }

    /// `epochCheck`'s judgement of what it read.
    package static func epochVerdict(
        current: Int64, secondsSinceTurned: Int64, waiting: [String], holding: [Holder], eraseWindow: Int64
    ) -> Check {
        let half = eraseWindow / 2
        var late: [String] = []
        var underWay: [String] = []
        if secondsSinceTurned > half {
            late.append(
                "epoch \(current) was turned to \(Self.span(secondsSinceTurned)) ago, more than half the erase window (\(Self.span(half))): no daemon has turned since"
            )
        }
        if !waiting.isEmpty {
            let text = "not yet received epoch \(current): \(waiting.joined(separator: ", "))"
            if secondsSinceTurned > half { late.append(text) } else { underWay.append(text) }
        }
        let overdue = holding.filter { $0.secondsSinceReplaced > half }
        let pending = holding.filter { $0.secondsSinceReplaced <= half }
        let describe = { (holders: [Holder]) in
            holders.map {
                "\($0.daemon) (epoch \($0.epoch)\($0.away ? ", away: its key file keeps the key until it starts again" : ""))"
            }.joined(separator: ", ")
        }
        if !overdue.isEmpty {
            late.append(
                "still holding an older epoch past its promised destruction, so shreds made under it are not complete: \(describe(overdue))"
            )
        }
        if !pending.isEmpty {
            underWay.append(
                "still holding an older epoch, whose residue is readable until it is destroyed: \(describe(pending))")
        }
        let name = "erase epochs"
        if !late.isEmpty {
            return Check(
                name: name, status: .fail, detail: "epoch \(current); " + (late + underWay).joined(separator: "; "))
        }
        if !underWay.isEmpty {
            return Check(
                name: name, status: .warn,
                detail: "epoch \(current), a turn under way; " + underWay.joined(separator: "; "))
        }
        return Check(
            name: name, status: .pass,
            detail:
                "epoch \(current), turned to \(Self.span(secondsSinceTurned)) ago: every daemon sealed to holds it, and none holds an older one"
        )
    }

    /// Seconds as an operator reads them: "40 s", "12 min", "5 h", "3 d".
    package static func span(_ seconds: Int64) -> String {
        switch seconds {
        case ..<120: "\(max(seconds, 0)) s"
        case ..<(120 * 60): "\(seconds / 60) min"
        case ..<(48 * 3600): "\(seconds / 3600) h"
        default: "\(seconds / 86400) d"
        }
    }

    /// How many standbys `synchronous_standby_names` makes a commit wait for: the number of `FIRST n (…)`,
    /// `ANY n (…)` or `n (…)`, else one.
    package static func requiredStandbys(_ standbyNames: String) -> Int {
        var words = standbyNames.split(whereSeparator: { $0 == " " || $0 == "(" }).map { $0.uppercased() }
        if let first = words.first, first == "FIRST" || first == "ANY" {
            words.removeFirst()
        }
        guard let count = words.first.flatMap({ Int($0) }), count > 0 else { return 1 }
        return count
    }

    private static func setting(_ name: String, on connection: PostgresConnection, logger: Logger) async throws
        -> String
    {
        let rows = try await connection.query("SELECT current_setting(\(name))", logger: logger)
        for try await value in rows.decode(String.self) {
            return value
        }
        return ""
    }
}

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

    /// Whether any daemon is behind its erase epoch: one with a copy of the current epoch's key still to
    /// receive, or one that still holds an older epoch (its residue is not yet unreadable). Warnings until
    /// the erase window is configured, which will make a daemon behind for longer than it a failure.
    package static func epochCheck(on connection: PostgresConnection, logger: Logger) async throws -> Check {
        let name = "erase epochs"
        guard let current = try await EpochExchange.currentEpoch(connection, logger: logger).map({ Int64($0) }) else {
            return Check(name: name, status: .pass, detail: "no erase epoch turned to yet")
        }
        var waiting: [String] = []
        for try await daemon in try await connection.query(
            "SELECT daemon FROM casevault_epoch_copies WHERE epoch = \(current) ORDER BY daemon", logger: logger
        ).decode(String.self) {
            waiting.append(daemon)
        }
        var holding: [String] = []
        for try await (daemon, epoch) in try await connection.query(
            """
            SELECT daemon, epoch FROM casevault_epoch_holders
            WHERE epoch < \(current) AND destroyed_at IS NULL ORDER BY daemon, epoch
            """, logger: logger
        ).decode((String, Int64).self) {
            holding.append("\(daemon) (epoch \(epoch))")
        }
        var problems: [String] = []
        if !waiting.isEmpty {
            problems.append("not yet received epoch \(current): \(waiting.joined(separator: ", "))")
        }
        if !holding.isEmpty {
            problems.append(
                "still holding an older epoch, whose residue is readable until it is destroyed: \(holding.joined(separator: ", "))"
            )
        }
        guard problems.isEmpty else {
            return Check(name: name, status: .warn, detail: "epoch \(current); " + problems.joined(separator: "; "))
        }
        return Check(
            name: name, status: .pass,
            detail: "epoch \(current): every daemon sealed to holds it, and none holds an older one")
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

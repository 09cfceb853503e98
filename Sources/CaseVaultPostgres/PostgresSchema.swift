internal import CaseVaultCore
package import Logging
package import PostgresNIO

/// The vault's tables in PostgreSQL and their migrations. Every daemon migrates at start; the migrations
/// run in one transaction under a transaction-scoped advisory lock, so that of several daemons starting at
/// once one migrates and the others find the work done. The tables hold ids, epoch numbers, public keys,
/// times and sealed bytes only: no content, names or categories.
package enum PostgresSchema {
    /// The advisory lock the migrations hold (`CVSCHEMA` in ASCII).
    static let migrationLock: Int64 = 0x4356_5343_4845_4D41

    /// Each migration's statements, in order; the schema's version is how many have run.
    static let migrations: [[String]] = [
        // 1: erase epochs. A row of casevault_epochs is an epoch that was turned to; its key is in no table,
        // only sealed to each daemon's key pair of that epoch (casevault_epoch_copies, deleted once opened).
        // Public keys and sealed copies carry a tag made with a key derived from the vault's root key.
        [
            """
            CREATE TABLE casevault_epochs (
                number bigint PRIMARY KEY CHECK (number > 0),
                turned_by text NOT NULL,
                turned_at timestamptz NOT NULL DEFAULT now(),
                -- When every copy of its key had been received: from then on new wraps use it.
                ready_at timestamptz
            )
            """,
            """
            CREATE TABLE casevault_epoch_pairs (
                epoch bigint NOT NULL CHECK (epoch > 0),
                daemon text NOT NULL,
                public_key bytea NOT NULL CHECK (length(public_key) = 32),
                tag bytea NOT NULL,
                PRIMARY KEY (epoch, daemon)
            )
            """,
            """
            CREATE TABLE casevault_epoch_copies (
                epoch bigint NOT NULL REFERENCES casevault_epochs (number),
                daemon text NOT NULL,
                sealed bytea NOT NULL,
                tag bytea NOT NULL,
                PRIMARY KEY (epoch, daemon)
            )
            """,
            """
            CREATE TABLE casevault_epoch_holders (
                epoch bigint NOT NULL REFERENCES casevault_epochs (number),
                daemon text NOT NULL,
                received_at timestamptz NOT NULL DEFAULT now(),
                destroyed_at timestamptz,
                PRIMARY KEY (epoch, daemon)
            )
            """,
        ],
        // 2: records (`PostgresRecords`): ids, types, times, the epoch a record's data key is wrapped under,
        // the wrapped key (nonce, key, tag: 72 bytes) and the sealed blob, stored without compression (sealed
        // bytes do not compress), out of line past PostgreSQL's TOAST threshold. The index by epoch serves the
        // rewrap at a turn and `wrappedBelow`.
        [
            """
            CREATE TABLE casevault_records (
                id bytea PRIMARY KEY CHECK (length(id) = 16),
                case_id bytea NOT NULL CHECK (length(case_id) = 16),
                type text NOT NULL,
                created_at bigint NOT NULL,
                epoch bigint NOT NULL REFERENCES casevault_epochs (number),
                wrapped_key bytea NOT NULL CHECK (length(wrapped_key) = 72),
                blob bytea NOT NULL
            )
            """,
            "ALTER TABLE casevault_records ALTER COLUMN blob SET STORAGE EXTERNAL",
            "CREATE INDEX casevault_records_by_epoch ON casevault_records (epoch)",
            "CREATE INDEX casevault_records_by_case ON casevault_records (case_id)",
        ],
        // 3: cases and what a filing's rules read (`PostgresStorage`). A case's row: its state, how many
        // participants it has, its mediators' and supervisors' uids, its times, and the id of its sealed
        // header. A record gains its filing order, its author's role or uid and the record it supersedes (no
        // sealed participant: it would be sealed under a subkey of the root key, which outlives every erase
        // epoch). The roster of mediators is uids. A shred leaves its record's id, case, type and time, the epoch its key was
        // wrapped under (its residue opens for no one once that epoch is destroyed) and who ordered it how:
        // what a reader is told (`shredded`). Each shred's signed certificate, and the second one issued once
        // every daemon has destroyed its epoch (`completes` names the first). Legal holds: the case, who placed
        // it when, and the reason sealed under a key of its own, wrapped under an erase epoch as a record's
        // data key is (and rewrapped with them at a turn). Attachments: each upload's sealed bytes in the
        // chunks it was appended in (64 KiB and its overhead, stored uncompressed and out of line), and the
        // finished upload a record has, with its size. No content, names or categories.
        [
            """
            CREATE TABLE casevault_cases (
                id bytea PRIMARY KEY CHECK (length(id) = 16),
                state text NOT NULL CHECK (state IN ('intake', 'agreement', 'session', 'closed')),
                participant_count integer NOT NULL CHECK (participant_count >= 0),
                mediators bigint[] NOT NULL,
                supervisors bigint[] NOT NULL,
                created_at bigint NOT NULL,
                closed_at bigint,
                outcome text,
                header_id bytea NOT NULL CHECK (length(header_id) = 16)
            )
            """,
            """
            ALTER TABLE casevault_records
                ADD COLUMN filed bigint GENERATED ALWAYS AS IDENTITY,
                ADD COLUMN author text,
                ADD COLUMN supersedes bytea CHECK (length(supersedes) = 16)
            """,
            "CREATE TABLE casevault_roster (uid bigint PRIMARY KEY CHECK (uid >= 0))",
            """
            CREATE TABLE casevault_shreds (
                id bytea PRIMARY KEY CHECK (length(id) = 16),
                case_id bytea NOT NULL CHECK (length(case_id) = 16),
                type text NOT NULL,
                shredded_at bigint NOT NULL,
                epoch bigint NOT NULL,
                method text NOT NULL,
                authority_uid bigint,
                authority_role text NOT NULL
            )
            """,
            """
            CREATE TABLE casevault_certificates (
                id text PRIMARY KEY,
                filed bigint GENERATED ALWAYS AS IDENTITY,
                case_id bytea NOT NULL CHECK (length(case_id) = 16),
                issued_at bigint NOT NULL,
                epoch bigint NOT NULL,
                completes text UNIQUE REFERENCES casevault_certificates (id),
                document bytea NOT NULL
            )
            """,
            """
            CREATE INDEX casevault_certificates_open ON casevault_certificates (epoch)
                WHERE completes IS NULL
            """,
            """
            CREATE TABLE casevault_holds (
                id bytea PRIMARY KEY CHECK (length(id) = 16),
                filed bigint GENERATED ALWAYS AS IDENTITY,
                case_id bytea NOT NULL CHECK (length(case_id) = 16),
                placed_at bigint NOT NULL,
                placed_by_uid bigint,
                placed_by_role text NOT NULL,
                epoch bigint NOT NULL REFERENCES casevault_epochs (number),
                wrapped_key bytea NOT NULL CHECK (length(wrapped_key) = 72),
                sealed_reason bytea NOT NULL
            )
            """,
            "CREATE INDEX casevault_holds_by_case ON casevault_holds (case_id)",
            "CREATE INDEX casevault_holds_by_epoch ON casevault_holds (epoch)",
            """
            CREATE TABLE casevault_attachment_chunks (
                record_id bytea NOT NULL CHECK (length(record_id) = 16),
                upload bytea NOT NULL CHECK (length(upload) = 16),
                at bigint NOT NULL CHECK (at >= 0),
                bytes bytea NOT NULL,
                PRIMARY KEY (upload, at)
            )
            """,
            "ALTER TABLE casevault_attachment_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL",
            "CREATE INDEX casevault_attachment_chunks_by_record ON casevault_attachment_chunks (record_id)",
            """
            CREATE TABLE casevault_attachments (
                record_id bytea PRIMARY KEY CHECK (length(record_id) = 16),
                upload bytea NOT NULL UNIQUE CHECK (length(upload) = 16),
                size bigint NOT NULL CHECK (size >= 0)
            )
            """,
        ],
        // 4: uploads under way, one a record (`PostgresUpload`): the upload's id, its record and when it last
        // appended, so that a second upload is refused at its start, a dropped or failed one is deleted with
        // its chunks, and one left by a daemon that died is taken over once idle past
        // `PostgresStorage.staleUpload`. The indexes the listings need: cases newest first, a case's records
        // in filing order, a case's certificates, cases by mediator and supervisor. And the daemons' audit
        // anchors.
        [
            """
            CREATE TABLE casevault_uploads (
                upload bytea PRIMARY KEY CHECK (length(upload) = 16),
                record_id bytea NOT NULL UNIQUE CHECK (length(record_id) = 16),
                touched_at bigint NOT NULL
            )
            """,
            "CREATE INDEX casevault_uploads_by_time ON casevault_uploads (touched_at)",
            "CREATE INDEX casevault_cases_by_opening ON casevault_cases (created_at, id)",
            "CREATE INDEX casevault_cases_by_mediator ON casevault_cases USING GIN (mediators)",
            "CREATE INDEX casevault_cases_by_supervisor ON casevault_cases USING GIN (supervisors)",
            "DROP INDEX casevault_records_by_case",
            "CREATE INDEX casevault_records_by_case ON casevault_records (case_id, filed)",
            "CREATE INDEX casevault_certificates_by_case ON casevault_certificates (case_id, filed)",
            // Each daemon's audit anchor (`PostgresAuditAnchor`): how far its own log had got, a row a daemon,
            // with a MAC under the root key's chain subkey over the daemon's name and the rest.
            """
            CREATE TABLE casevault_audit_anchors (
                daemon text PRIMARY KEY,
                seq bigint NOT NULL CHECK (seq >= 0),
                hash bytea NOT NULL CHECK (length(hash) = 32),
                at bigint NOT NULL CHECK (at >= 0),
                file bigint NOT NULL CHECK (file >= 1),
                nonce bytea NOT NULL CHECK (length(nonce) = 16),
                mac bytea NOT NULL CHECK (length(mac) = 32)
            )
            """,
        ],
        // 5: which root key the vault's daemons share: the first daemon records its key's check value (a
        // keyed hash of a fixed label, which reveals nothing of the key), and every daemon compares its own
        // before it takes part (`checkRootKey`).
        [
            """
            CREATE TABLE casevault_vault (
                one boolean PRIMARY KEY DEFAULT true CHECK (one),
                root_key_check bigint NOT NULL
            )
            """
        ],
        // 6: what the retention sweep lists (`PostgresStorage.sweep`): records by type and filing time, and
        // closed cases by their closing time.
        [
            "CREATE INDEX casevault_records_by_type_time ON casevault_records (type, created_at)",
            "CREATE INDEX casevault_cases_by_closing ON casevault_cases (closed_at) WHERE closed_at IS NOT NULL",
        ],
        // 7: daemons away (`EpochExchange.retireAway`): when each daemon last stepped the erase epochs and
        // since when it has stepped without a long gap, and the holders of an epoch the others stopped
        // waiting for because their daemon was away.
        [
            """
            CREATE TABLE casevault_daemons (
                daemon text PRIMARY KEY,
                seen_at timestamptz NOT NULL,
                back_at timestamptz NOT NULL
            )
            """,
            "ALTER TABLE casevault_epoch_holders ADD COLUMN retired_at timestamptz",
            // The daemons the epochs know already count as seen now, so that one away before this version
            // is retired too once it stays away.
            """
            INSERT INTO casevault_daemons (daemon, seen_at, back_at)
            SELECT daemon, now(), now() FROM casevault_epoch_holders
            UNION SELECT daemon, now(), now() FROM casevault_epoch_pairs
            UNION SELECT daemon, now(), now() FROM casevault_epoch_copies
            """,
        ],
        // 8: daemons whose epoch key file an operator declared destroyed, their host gone for good
        // (`EpochExchange.forget`): when, the newest epoch then (a daemon that comes back destroys every key
        // up to it), with a tag under the root key's epoch subkey, and the holdings marked destroyed on that
        // word rather than by the daemon itself, which the certificates that complete an erasure name.
        [
            """
            ALTER TABLE casevault_daemons ADD COLUMN forgotten_at timestamptz,
                ADD COLUMN forgotten_epoch bigint, ADD COLUMN forgotten_tag bytea
            """,
            "ALTER TABLE casevault_epoch_holders ADD COLUMN attested boolean NOT NULL DEFAULT false",
            // An operator's rotation (`PostgresStorage.rotateErasureEpochs`): a turn asked for now rather than
            // at half the window, marked on the epoch it turns from, and the epoch the rotation waits for.
            "ALTER TABLE casevault_epochs ADD COLUMN turn_requested_at timestamptz",
            "ALTER TABLE casevault_vault ADD COLUMN rotation_target bigint",
        ],
        // 9: certificates brought back by a restore (`PostgresRestore`): the erasure a first one promises
        // rests on the key files of the daemons that issued it, which this vault's daemons cannot see, so
        // `certifyErasures` never completes it here.
        [
            "ALTER TABLE casevault_certificates ADD COLUMN restored boolean NOT NULL DEFAULT false"
        ],
        // 10: records this vault knows were shredded though it never held them: named by the ledger given
        // to a restore without being in the backup, or carried by a backup that knew of them. The shred
        // ledger's export lists them beside `casevault_shreds`, so that a later restore of an older backup
        // does not bring them back.
        [
            """
            CREATE TABLE casevault_ledger (
                id bytea PRIMARY KEY CHECK (length(id) = 16),
                shredded_at bigint NOT NULL
            )
            """
        ],
        // 11: a vault that `casevaultctl migrate` wrote out for a data directory (`markMoved`): the
        // migration's id and time, while the move stands; no daemon serves the database meanwhile.
        [
            "ALTER TABLE casevault_vault ADD COLUMN moved_by text, ADD COLUMN moved_at bigint"
        ],
        // 12: a filing in one trip (`PostgresStorage.awaitFileIfUnchanged`, `Prepared.FileIfUnchanged`), a
        // procedure that commits before it answers (its answer row is sent only once the commit, and the
        // synchronous standby's acknowledgement, are done; a statement in its own transaction would send its
        // row before its commit at the protocol's Sync, and a session ended while the commit waited for the
        // standby could let that row out first). It takes the case's lock and the lock filings share, each
        // only if free (a held one answers 4, and the filing waits for it under the case's lock instead,
        // with that path's limits and answers; each other lock is waited for 20 s at most), then files the
        // record's row only if the case's row and the filer's place on the roster are what the filing read
        // without the lock, under the epoch new wraps use, unless a move marked the vault. Each statement
        // reads what committed before it began, after the locks' grant, at READ COMMITTED, which it checks
        // (the vault's own transactions set it; a statement alone has the session's default). Ids, numbers,
        // times and sealed bytes only.
        [
            """
            CREATE PROCEDURE casevault_file_unchanged(
                p_lock_space integer, p_lock_key integer, p_filing_lock bigint, p_roster_uid bigint,
                p_on_roster boolean, p_state text, p_participant_count integer, p_mediators bigint[],
                p_supervisors bigint[], p_created_at bigint, p_closed_at bigint, p_id bytea, p_case_id bytea,
                p_type text, p_filed_at bigint, p_epoch bigint, p_wrapped_key bytea, p_blob bytea, p_author text,
                p_supersedes bytea, INOUT p_answer integer DEFAULT NULL
            ) LANGUAGE plpgsql AS $$
            BEGIN
                IF current_setting('transaction_isolation') <> 'read committed' THEN
                    p_answer := 3;
                    RETURN;
                END IF;
                PERFORM set_config('lock_timeout', '20s', true);
                IF NOT pg_try_advisory_xact_lock(p_lock_space, p_lock_key)
                    OR NOT pg_try_advisory_xact_lock_shared(p_filing_lock) THEN
                    p_answer := 4;
                    RETURN;
                END IF;
                IF NOT EXISTS (
                    SELECT 1 FROM casevault_cases c
                    WHERE c.id = p_case_id AND c.state = p_state AND c.participant_count = p_participant_count
                        AND c.mediators = p_mediators AND c.supervisors = p_supervisors
                        AND c.created_at = p_created_at AND c.closed_at IS NOT DISTINCT FROM p_closed_at
                ) OR EXISTS (SELECT 1 FROM casevault_roster r WHERE r.uid = p_roster_uid) <> p_on_roster THEN
                    p_answer := 1;
                    RETURN;
                END IF;
                INSERT INTO casevault_records (id, case_id, type, created_at, epoch, wrapped_key, blob, author,
                    supersedes)
                SELECT p_id, p_case_id, p_type, p_filed_at, p_epoch, p_wrapped_key, p_blob, p_author, p_supersedes
                WHERE p_epoch = (SELECT max(e.number) FROM casevault_epochs e WHERE e.ready_at IS NOT NULL)
                    AND NOT EXISTS (SELECT 1 FROM casevault_vault v WHERE v.moved_by IS NOT NULL);
                IF NOT FOUND THEN
                    p_answer := 2;
                    RETURN;
                END IF;
                -- Nothing after the commit may fail or wait: an error here would be taken for a call that
                -- kept nothing, and the filing made again under the case's lock.
                COMMIT;
                p_answer := 0;
            END
            $$
            """
        ],
    ]

    /// The version this build writes.
    package static var currentVersion: Int { Self.migrations.count }

    /// The first version with the mark of a move (`markMoved`).
    package static let movedVersion = 11
    /// The first version with `casevault_daemons`, the daemons the vault has seen.
    package static let daemonsVersion = 7

    /// The schema's version in the database: 0 where no daemon has migrated it yet. Changes nothing.
    package static func version(_ connection: PostgresConnection, logger: Logger) async throws -> Int {
        var exists = false
        for try await found in try await connection.query(
            "SELECT to_regclass('casevault_schema') IS NOT NULL", logger: logger
        ).decode(Bool.self) {
            exists = found
        }
        guard exists else { return 0 }
        for try await version in try await connection.query(
            "SELECT version FROM casevault_schema", logger: logger
        ).decode(Int.self) {
            return version
        }
        return 0
    }

    /// Brings the database to `currentVersion`; returns the version it found. Refuses a database that a
    /// newer build has migrated past this one.
    @discardableResult
    package static func migrate(_ connection: PostgresConnection, logger: Logger) async throws -> Int {
        try await connection.transaction(logger: logger) { connection in
            try await connection.perform("SELECT pg_advisory_xact_lock(\(Self.migrationLock))", logger: logger)
            try await connection.perform(
                """
                CREATE TABLE IF NOT EXISTS casevault_schema (
                    one boolean PRIMARY KEY DEFAULT true CHECK (one),
                    version integer NOT NULL
                )
                """, logger: logger)
            var found: Int?
            for try await version in try await connection.query(
                "SELECT version FROM casevault_schema", logger: logger
            ).decode(Int.self) {
                found = version
            }
            let version = found ?? 0
            if found == nil {
                try await connection.perform("INSERT INTO casevault_schema (version) VALUES (0)", logger: logger)
            }
            guard version <= Self.currentVersion else {
                throw CaseVaultError(
                    .storageFailure,
                    "the database's schema is version \(version), newer than this build's \(Self.currentVersion): run the newer casevaultd"
                )
            }
            for statements in Self.migrations[version...] {
                for statement in statements {
                    try await connection.perform(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
            }
            try await connection.perform(
                "UPDATE casevault_schema SET version = \(Self.currentVersion)", logger: logger)
            return version
        }
    }
}

extension PostgresSchema {
    /// Records `check`, the root key's check value, when the vault has none yet, and refuses
    /// (`key-unavailable`) a daemon whose root key is not the one recorded: it would publish pairs no other
    /// daemon accepts, and seal what none of them opens.
    package static func checkRootKey(_ check: Int64, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.perform(
            "INSERT INTO casevault_vault (root_key_check) VALUES (\(check)) ON CONFLICT DO NOTHING", logger: logger)
        var recorded: Int64?
        for try await value in try await connection.query(
            "SELECT root_key_check FROM casevault_vault", logger: logger
        ).decode(Int64.self) {
            recorded = value
        }
        guard recorded == check else {
            throw CaseVaultError(
                .keyUnavailable,
                "this daemon's root key is not the vault's: copy the root key file (or credential) from a daemon of the vault, replacing this one"
            )
        }
    }
}

extension PostgresSchema {
    /// Marks the vault as moved out of the database by migration `id` at `time` (milliseconds);
    /// `storage-failure` when the vault's row is missing (made at every daemon's start: `checkRootKey`), so
    /// that no move ends with its mark unmade.
    package static func markMoved(id: String, at time: Int64, on connection: PostgresConnection, logger: Logger)
        async throws
    {
        let marked = try await connection.query(
            "UPDATE casevault_vault SET moved_by = \(id), moved_at = \(time) RETURNING 1", logger: logger)
        var count = 0
        for try await _ in marked.decode(Int.self) { count += 1 }
        guard count == 1 else {
            throw CaseVaultError(.storageFailure, "the vault's row in the database is missing, so it cannot be marked")
        }
    }

    /// Removes the mark of a move; false when the vault bears none.
    package static func cancelMove(on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        var cancelled = false
        for try await _ in try await connection.query(
            "UPDATE casevault_vault SET moved_by = NULL, moved_at = NULL WHERE moved_by IS NOT NULL RETURNING 1",
            logger: logger
        ).decode(Int.self) {
            cancelled = true
        }
        return cancelled
    }

    /// Refuses to serve a vault that `casevaultctl migrate` wrote out for a data directory
    /// (`vault-moved`, naming the migration): served here and there, the two copies would drift
    /// apart, and a shred in one would leave the record readable in the other.
    package static func refuseMoved(on connection: PostgresConnection, logger: Logger) async throws {
        var mark: (String, Int64)?
        for try await row in try await connection.query(
            "SELECT moved_by, moved_at FROM casevault_vault WHERE moved_by IS NOT NULL", logger: logger
        ).decode((String, Int64).self) {
            mark = row
        }
        guard let (id, time) = mark else { return }
        throw CaseVaultError(
            .vaultMoved,
            "this vault was moved out of the database to a data directory (casevaultctl migrate, migration \(id) at \(Timestamp.rfc3339(time))): serve it there; if the move was abandoned, casevaultctl migrate --cancel with a daemon's configuration serves it here again",
            field: "storage.connection")
    }
}

extension PostgresConnection {
    /// The connection whose transaction the current task's statements belong to, when a case's lock holds
    /// one (`PostgresStorage.withCaseLock`): a transaction begun on it joins that one rather than nesting
    /// (PostgreSQL would answer a second `BEGIN` with a warning, and its `COMMIT` would end the case's
    /// transaction early).
    @TaskLocal static var joined: ObjectIdentifier?

    /// Runs `query` to its end, its rows read and dropped. PostgresNIO hands back a statement that returns
    /// rows as soon as their description comes, and an error PostgreSQL sends after it (a deadlock, a lock
    /// or statement timeout) reaches only a reader of the rows: every statement whose rows are not read
    /// runs here, so that its error is thrown.
    @discardableResult
    package func perform(_ query: PostgresQuery, logger: Logger) async throws -> PostgresQueryResult {
        let result: EventLoopFuture<PostgresQueryResult> = self.query(query, logger: logger)
        return try await result.get()
    }

    /// Commits the transaction; `storage-failure` when PostgreSQL rolled it back instead, which it reports
    /// without an error when a statement in it had failed, and `PostgresStorage.commitUnanswered` when the
    /// `COMMIT` was sent and the server went before answering it (the transaction may have been kept).
    package func commit(logger: Logger) async throws {
        let command: String
        do {
            command = try await self.perform("COMMIT", logger: logger).metadata.command
        } catch let error as PSQLError where PostgresStorage.isUnavailability(error) {
            // Closed now, so that no call is handed it while its socket closes.
            PostgresStorage.discard(self)
            throw PostgresStorage.commitUnanswered
        }
        guard command == "COMMIT" else {
            throw CaseVaultError(
                .storageFailure, "the database rolled a transaction back at its commit: nothing of it was kept")
        }
    }

    /// Runs `body` in a read-only REPEATABLE READ transaction: every query in it reads one snapshot. Refused
    /// inside a case's transaction, whose statements each read their own.
    func snapshot<Result>(
        logger: Logger, isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresConnection) async throws -> sending Result
    ) async throws -> sending Result {
        guard Self.joined != ObjectIdentifier(self) else {
            throw CaseVaultError(.storageFailure, "a read of one snapshot was asked inside a case's transaction")
        }
        return try await self.transaction(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", readOnly: true, logger: logger,
            isolation: isolation, body)
    }

    /// Runs `body` in a transaction at READ COMMITTED whatever the database's default: the vault's
    /// transactions take an advisory lock and then read what the lock's holders committed, which at
    /// REPEATABLE READ a snapshot taken before the lock's wait would miss. A `CaseVaultError` thrown inside
    /// comes out as itself. Inside a case's transaction on this connection (`joined`), `body` runs in it.
    func transaction<Result>(
        logger: Logger, isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresConnection) async throws -> sending Result
    ) async throws -> sending Result {
        // Inside a case's transaction on this connection, the work joins it and commits with it.
        if Self.joined == ObjectIdentifier(self) { return try await body(self) }
        return try await self.transaction(Self.begin, readOnly: false, logger: logger, isolation: isolation, body)
    }

    /// The statement that begins the vault's read-write transactions.
    static let begin: PostgresQuery = "BEGIN ISOLATION LEVEL READ COMMITTED"

    /// Runs `body` in a transaction that `begin` (a `BEGIN` with its isolation level) opens, committed when
    /// `body` returns and rolled back when it throws; a `readOnly` one is rolled back either way, so that a
    /// server gone at its end is `storage-unavailable`, never a commit left unanswered. Written here rather
    /// than through PostgresNIO's `withTransaction`, whose `BEGIN` takes the server's default isolation and
    /// would need a `SET TRANSACTION` after it: one round trip less for every transaction. Errors come out as
    /// thrown, never wrapped. A connection whose rollback fails is closed, so that no one is handed it half in
    /// a transaction.
    private func transaction<Result>(
        _ begin: PostgresQuery, readOnly: Bool, logger: Logger, isolation: isolated (any Actor)?,
        _ body: (PostgresConnection) async throws -> sending Result
    ) async throws -> sending Result {
        try await self.perform(begin, logger: logger)
        let value: Result
        do {
            value = try await body(self)
        } catch {
            do { try await self.perform("ROLLBACK", logger: logger) } catch { try? await self.close() }
            throw error
        }
        if readOnly {
            try await self.perform("ROLLBACK", logger: logger)
        } else {
            try await self.commit(logger: logger)
        }
        return value
    }
}

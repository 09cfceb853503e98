internal import GRDB

// The index's schema, one migration per change, applied in order at open. A migration is never edited once
// released: a data directory made by an older version is brought forward by the ones it has not run.
extension Index {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE epochs (
                        epoch INTEGER PRIMARY KEY,
                        created_at INTEGER NOT NULL,
                        retired_at INTEGER
                    );
                    INSERT INTO epochs (epoch, created_at) VALUES (1, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
                    CREATE TABLE records (
                        seq INTEGER PRIMARY KEY,
                        id TEXT NOT NULL UNIQUE,
                        case_id TEXT NOT NULL,
                        type TEXT NOT NULL,
                        state TEXT NOT NULL CHECK (state IN ('live', 'shredding')),
                        created_at INTEGER NOT NULL,
                        author TEXT,
                        supersedes TEXT,
                        sealed_size INTEGER NOT NULL,
                        slot INTEGER NOT NULL UNIQUE,
                        segment INTEGER NOT NULL,
                        offset INTEGER NOT NULL
                    );
                    CREATE INDEX records_by_case ON records (case_id, seq);
                    CREATE INDEX records_shredding ON records (state) WHERE state = 'shredding';
                    CREATE TABLE free_slots (slot INTEGER PRIMARY KEY);
                    CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
                    INSERT INTO meta (key, value) VALUES ('slot_high_water', 0), ('segment_current', 0), ('segment_end', 0);
                    CREATE TABLE shred_ledger (
                        record_id TEXT PRIMARY KEY NOT NULL,
                        case_id TEXT NOT NULL,
                        type TEXT NOT NULL,
                        shredded_at INTEGER NOT NULL
                    ) WITHOUT ROWID;
                    """
            )
        }
        migrator.registerMigration("v2-cases") { db in
            try db.execute(
                sql: """
                    CREATE TABLE cases (
                        id TEXT PRIMARY KEY NOT NULL,
                        state TEXT NOT NULL CHECK (state IN ('intake', 'agreement', 'session', 'closed')),
                        participant_count INTEGER NOT NULL,
                        header TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        closed_at INTEGER,
                        closing_outcome TEXT
                    ) WITHOUT ROWID;
                    CREATE TABLE case_mediators (
                        case_id TEXT NOT NULL,
                        uid INTEGER NOT NULL,
                        PRIMARY KEY (case_id, uid)
                    ) WITHOUT ROWID;
                    CREATE TABLE roster (uid INTEGER PRIMARY KEY NOT NULL, added_at INTEGER NOT NULL);
                    """
            )
        }
        migrator.registerMigration("v3-certificates") { db in
            try db.execute(
                sql: """
                    CREATE TABLE shred_orders (
                        record_id TEXT PRIMARY KEY NOT NULL,
                        method TEXT NOT NULL,
                        uid INTEGER,
                        role TEXT NOT NULL,
                        reason TEXT
                    ) WITHOUT ROWID;
                    CREATE TABLE certificates (
                        seq INTEGER PRIMARY KEY,
                        id TEXT NOT NULL UNIQUE,
                        case_id TEXT NOT NULL,
                        issued_at INTEGER NOT NULL,
                        document BLOB NOT NULL
                    );
                    CREATE INDEX certificates_by_case ON certificates (case_id, seq);
                    """
            )
        }
        migrator.registerMigration("v4-retention") { db in
            // The sweep selects due records by one index range per type (filed) or per closing time
            // (case_closed). A hold's reason is sealed: it may name people or matters.
            try db.execute(
                sql: """
                    CREATE INDEX records_by_type_time ON records (type, created_at);
                    CREATE INDEX cases_by_closing ON cases (closed_at) WHERE closed_at IS NOT NULL;
                    CREATE TABLE holds (
                        id TEXT PRIMARY KEY NOT NULL,
                        case_id TEXT NOT NULL,
                        placed_at INTEGER NOT NULL,
                        uid INTEGER,
                        role TEXT NOT NULL,
                        reason BLOB NOT NULL
                    ) WITHOUT ROWID;
                    CREATE INDEX holds_by_case ON holds (case_id);
                    """
            )
        }
        migrator.registerMigration("v5-orders") { db in
            // One row per order rather than per record: a sweep's batch of thousands of records shares one, and
            // the mark that names it is the same UPDATE that marks the record.
            try db.execute(
                sql: """
                    CREATE TABLE shred_order_list (
                        id INTEGER PRIMARY KEY,
                        method TEXT NOT NULL,
                        uid INTEGER,
                        role TEXT NOT NULL,
                        reason TEXT
                    );
                    ALTER TABLE records ADD COLUMN shred_order INTEGER;
                    INSERT INTO shred_order_list (method, uid, role, reason)
                        SELECT DISTINCT method, uid, role, reason FROM shred_orders;
                    UPDATE records SET shred_order = (
                        SELECT o.id FROM shred_orders s JOIN shred_order_list o
                        ON o.method = s.method AND o.uid IS s.uid AND o.role = s.role AND o.reason IS s.reason
                        WHERE s.record_id = records.id
                    ) WHERE id IN (SELECT record_id FROM shred_orders);
                    DROP TABLE shred_orders;
                    """
            )
        }
        migrator.registerMigration("v6-audit-anchor") { db in
            // One row, written by the audit log as it goes; none until the first daemon anchors its log.
            try db.execute(
                sql: """
                    CREATE TABLE audit_anchor (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        seq INTEGER NOT NULL,
                        hash BLOB NOT NULL,
                        offset INTEGER NOT NULL,
                        nonce BLOB NOT NULL,
                        mac BLOB NOT NULL
                    );
                    """
            )
        }
        migrator.registerMigration("v7-statistics-facts") { db in
            // Each case's statistical facts, sealed (RecordStore+Statistics), and what they were taken from.
            try db.execute(
                sql: """
                    CREATE TABLE statistics_facts (
                        case_id TEXT PRIMARY KEY NOT NULL,
                        newest INTEGER NOT NULL,
                        records INTEGER NOT NULL,
                        sealed BLOB NOT NULL
                    ) WITHOUT ROWID;
                    """
            )
        }
        migrator.registerMigration("v8-audit-files") { db in
            // The audit log rotates: the anchor names the file its entry is in by that file's first entry.
            try db.execute(sql: "ALTER TABLE audit_anchor ADD COLUMN file INTEGER NOT NULL DEFAULT 1")
        }
        migrator.registerMigration("v9-agreement-participant") { db in
            // Which participant (p1…pN) an agreement to mediate is for, sealed by the sealing layer, so that
            // filing a note need not open every agreement of its case; NULL for other types and for
            // agreements filed before v9 (the sealing layer opens those).
            try db.execute(sql: "ALTER TABLE records ADD COLUMN participant BLOB")
        }
        migrator.registerMigration("v10-certificates-at-finish") { db in
            // A record's certificate is issued when its shred order finishes, not in the section that removes
            // it: a shred removes its records in the index's own order (sections of neighbouring rows, not of
            // whole cases), and a case still gets one certificate per order. `shred_certifying` holds the
            // removed records meanwhile; an order stays `open` while a sweep adds batches to it.
            try db.execute(
                sql: """
                    ALTER TABLE shred_order_list ADD COLUMN open INTEGER NOT NULL DEFAULT 0;
                    CREATE TABLE shred_certifying (
                        seq INTEGER PRIMARY KEY,
                        order_id INTEGER,
                        case_id TEXT NOT NULL,
                        record_id TEXT NOT NULL,
                        type TEXT NOT NULL
                    );
                    CREATE INDEX shred_certifying_by_order ON shred_certifying (order_id, case_id);
                    """
            )
        }
        migrator.registerMigration("v11-segment-frames") { db in
            // Puts write each record as a frame that carries its row and wrapped key beside its blob
            // (`SegmentFrame`), and commit a batch with one flush, the segment's. `frame_start` is where a
            // record's frame begins (NULL for records filed before: their blob stands alone). `settled_*` is
            // the position in the segments up to which every frame's row and slot are durable on their own:
            // recovery replays the frames after it. Here, the end of what was filed before frames.
            try db.execute(
                sql: """
                    ALTER TABLE records ADD COLUMN frame_start INTEGER;
                    INSERT INTO meta (key, value) SELECT 'settled_segment', value FROM meta WHERE key = 'segment_current';
                    INSERT INTO meta (key, value) SELECT 'settled_end', value FROM meta WHERE key = 'segment_end';
                    """
            )
        }
        migrator.registerMigration("v12-lists") { db in
            // The case list pages through cases newest first (`Index.cases`). A case's record list sorts the
            // case's rows, found by `records_by_case`: a case holds few, and every put would pay for a
            // second index of them.
            try db.execute(sql: "CREATE INDEX cases_by_opening ON cases (created_at, id)")
        }
        migrator.registerMigration("v13-supervisors") { db in
            // The supervisors assigned to each case, as `case_mediators` holds its mediators (debriefs).
            try db.execute(
                sql: """
                    CREATE TABLE case_supervisors (
                        case_id TEXT NOT NULL,
                        uid INTEGER NOT NULL,
                        PRIMARY KEY (case_id, uid)
                    ) WITHOUT ROWID;
                    CREATE INDEX case_supervisors_by_uid ON case_supervisors (uid);
                    """)
        }
        migrator.registerMigration("v14-certifying-by-order") { db in
            // The records waiting for their certificates are found by order alone, in the order they were
            // removed (`Index.certificationPlan` groups them by case): a removal appends to this index,
            // where one keyed by the order's cases took a page write per case a removal touched.
            try db.execute(
                sql: """
                    DROP INDEX IF EXISTS shred_certifying_by_order;
                    CREATE INDEX shred_certifying_by_order ON shred_certifying (order_id);
                    """)
        }
        migrator.registerMigration("v15-certified-cases") { db in
            // The cases certified under an order whose removed records still wait in `shred_certifying`
            // (order 0: the orphans'): once all of an order's cases are certified, its rows go in the table's
            // order, in a few commits, where deleting each certificate's rows, spread among every other
            // case's, rewrote most of the table's pages in every commit. A case listed here is not certified
            // again after a crash; the list goes with the order's last rows.
            try db.execute(
                sql: """
                    CREATE TABLE shred_certified (
                        order_id INTEGER NOT NULL,
                        case_id TEXT NOT NULL,
                        PRIMARY KEY (order_id, case_id)
                    ) WITHOUT ROWID;
                    """)
        }
        return migrator
    }
}

internal import CaseVaultCore
internal import Logging
internal import NIOCore
internal import PostgresNIO

/// The statements every filing and every read of a record run, and the read of a case's row, prepared once
/// per session (PostgresNIO's `PostgresPreparedStatement`): PostgreSQL parses, analyses and plans each at its first run on a
/// connection and keeps the plan, where a statement sent as text is planned again at every call. Under the
/// PUT load of `scripts/bench-postgres.sh`, parsing and planning took about a third of the backends' CPU.
/// The other statements, run less often, stay text. Each statement names its parameters' types, so that
/// the plan does not hang on the values of the first call (a NULL among them), and a constant name (where
/// PostgresNIO's default reflects the type's name into a new string at every call).
enum Prepared {
    /// The bindings of a statement that asks whether a uid is on the roster and looks a row up by its id.
    static func bindings(_ rosterUID: Int64?, _ id: ByteBuffer) -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(rosterUID)
        bindings.append(id)
        return bindings
    }

    /// Takes a case's lock until the end of the caller's transaction (`PostgresStorage.withCaseLock`).
    struct CaseLock: PostgresPreparedStatement {
        static let name = "casevault_case_lock"
        static let sql = "SELECT 1 FROM pg_advisory_xact_lock($1, $2)"
        static let bindingDataTypes: [PostgresDataType] = [.int4, .int4]
        typealias Row = Int32

        let space: Int32
        let key: Int32

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 2)
            bindings.append(self.space)
            bindings.append(self.key)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Int32 { try row.decode(Int32.self) }
    }

    /// A case's row (`PostgresStorage.caseSummary`).
    struct CaseRow: PostgresPreparedStatement {
        static let name = "casevault_case_row"
        static let sql = """
            SELECT state, participant_count, mediators, supervisors, created_at, closed_at
            FROM casevault_cases WHERE id = $1
            """
        static let bindingDataTypes: [PostgresDataType] = [.bytea]
        typealias Row = (String, Int, [Int64], [Int64], Int64, Int64?)

        let caseID: ByteBuffer

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 1)
            bindings.append(self.caseID)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
    }

    /// Takes the lock filings share, then reads a case's row (`NULL`s for an unknown case), whether a uid is
    /// on the roster and the epoch new wraps use (`PostgresStorage.withCaseLock(_:readingRoster:_:)`, after
    /// the case's lock). The statement's snapshot precedes the filing lock's grant: the case's row holds
    /// still under the case's lock the caller took in an earlier statement, and an epoch turned while the
    /// lock was awaited is caught by the insert's own check, as for `FilingLockAndWrapEpoch`.
    struct CaseRosterAndWrapEpoch: PostgresPreparedStatement {
        static let name = "casevault_case_roster_wrap_epoch"
        static let sql =
            Self.columns + """

                FROM pg_advisory_xact_lock_shared($3) AS filing LEFT JOIN casevault_cases c ON c.id = $2
                """
        /// What it reads, the case joined as `c`, the roster uid as `$1`: `Row`.
        static let columns = """
            SELECT c.state, c.participant_count, c.mediators, c.supervisors, c.created_at, c.closed_at,
                EXISTS (SELECT 1 FROM casevault_roster WHERE uid = $1),
                (SELECT max(number) FROM casevault_epochs WHERE ready_at IS NOT NULL)
            """
        static let bindingDataTypes: [PostgresDataType] = [.int8, .bytea, .int8]
        typealias Row = (String?, Int?, [Int64]?, [Int64]?, Int64?, Int64?, Bool, Int64?)

        let rosterUID: Int64?
        let caseID: ByteBuffer
        let filingLock: Int64

        func makeBindings() throws -> PostgresBindings {
            var bindings = Prepared.bindings(self.rosterUID, self.caseID)
            bindings.append(self.filingLock)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
    }

    /// A record's row, its case's, and whether a uid is on the roster (`PostgresStorage.storedRecord`).
    struct RecordCaseAndRoster: PostgresPreparedStatement {
        static let name = "casevault_record_case_roster"
        static let sql = """
            SELECT r.case_id, r.type, r.created_at, r.epoch, r.wrapped_key, r.blob, r.author, r.supersedes,
                c.state, c.participant_count, c.mediators, c.supervisors, c.created_at, c.closed_at,
                EXISTS (SELECT 1 FROM casevault_roster WHERE uid = $1)
            FROM casevault_records r LEFT JOIN casevault_cases c ON c.id = r.case_id
            WHERE r.id = $2
            """
        static let bindingDataTypes: [PostgresDataType] = [.int8, .bytea]
        typealias Row = (
            ByteBuffer, String, Int64, Int64, ByteBuffer, ByteBuffer, String?, ByteBuffer?, String?, Int?,
            [Int64]?, [Int64]?, Int64?, Int64?, Bool
        )

        let rosterUID: Int64?
        let recordID: ByteBuffer

        func makeBindings() throws -> PostgresBindings { Prepared.bindings(self.rosterUID, self.recordID) }
        func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
    }

    /// Takes the lock filings share and reads the epoch new wraps use
    /// (`PostgresRecords.shareFilingLockReadingWrapEpoch`).
    struct FilingLockAndWrapEpoch: PostgresPreparedStatement {
        static let name = "casevault_filing_lock_wrap_epoch"
        static let sql = """
            SELECT (SELECT max(number) FROM casevault_epochs WHERE ready_at IS NOT NULL)
            FROM pg_advisory_xact_lock_shared($1)
            """
        static let bindingDataTypes: [PostgresDataType] = [.int8]
        typealias Row = Int64?

        let filingLock: Int64

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 1)
            bindings.append(self.filingLock)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Int64? { try row.decode(Int64?.self) }
    }

    /// Files a record's row under the epoch new wraps use, unless a move marked the vault
    /// (`PostgresRecords.insertUnderWrapEpoch`).
    struct InsertRecord: PostgresPreparedStatement {
        static let name = "casevault_insert_record"
        static let sql = """
            INSERT INTO casevault_records (id, case_id, type, created_at, epoch, wrapped_key, blob, author, supersedes)
            SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
            WHERE $5 = (SELECT max(number) FROM casevault_epochs WHERE ready_at IS NOT NULL)
                AND NOT EXISTS (SELECT 1 FROM casevault_vault WHERE moved_by IS NOT NULL)
            RETURNING 1
            """
        static let bindingDataTypes: [PostgresDataType] = [
            .bytea, .bytea, .text, .int8, .int8, .bytea, .bytea, .text, .bytea,
        ]
        typealias Row = Int32

        let row: PostgresRecords.Row

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 9)
            Self.append(self.row, to: &bindings)
            return bindings
        }

        /// The row's nine columns, in the order of the insert's.
        static func append(_ row: PostgresRecords.Row, to bindings: inout PostgresBindings) {
            bindings.append(ByteBuffer(bytes: row.id.bytes))
            bindings.append(ByteBuffer(bytes: row.caseID.bytes))
            bindings.append(row.type.rawValue)
            bindings.append(row.createdAt)
            bindings.append(Int64(row.epoch))
            bindings.append(ByteBuffer(bytes: row.wrappedKey))
            bindings.append(ByteBuffer(bytes: row.blob))
            bindings.append(row.author)
            bindings.append(row.supersedes.map { ByteBuffer(bytes: $0.bytes) })
        }

        func decodeRow(_ row: PostgresRow) throws -> Int32 { try row.decode(Int32.self) }
    }

    /// A case's row (`NULL`s for an unknown case), whether a uid is on the roster and the epoch new wraps
    /// use, as `CaseRosterAndWrapEpoch` reads them but without a lock: the read of a filing in one trip
    /// (`PostgresStorage.awaitFileIfUnchanged`), which `FileIfUnchanged` checks again under the locks.
    struct CaseRosterAndWrapEpochUnlocked: PostgresPreparedStatement {
        static let name = "casevault_case_roster_wrap_epoch_unlocked"
        static let sql =
            CaseRosterAndWrapEpoch.columns + """

                FROM (SELECT 1) AS one LEFT JOIN casevault_cases c ON c.id = $2
                """
        static let bindingDataTypes: [PostgresDataType] = [.int8, .bytea]
        typealias Row = CaseRosterAndWrapEpoch.Row

        let rosterUID: Int64?
        let caseID: ByteBuffer

        func makeBindings() throws -> PostgresBindings { Prepared.bindings(self.rosterUID, self.caseID) }
        func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
    }

    /// A filing in one trip (the procedure `casevault_file_unchanged`, migration 12;
    /// `PostgresStorage.awaitFileIfUnchanged`): takes the case's lock and the lock filings share if both are
    /// free, and files the record's row under the epoch it is wrapped under only if the case's row and the
    /// uid's place on the roster are still what the filing read (`expected`) and that epoch is still the one
    /// new wraps use, committing before it answers. Answers 0 when it filed and committed, 1 when the case or
    /// the roster changed, 2 when the epoch turned or a move marked the vault, 3 when the transaction is not
    /// at READ COMMITTED (whose statements each read what committed before them), 4 when a lock was held:
    /// filing nothing but for 0.
    struct FileIfUnchanged: PostgresPreparedStatement {
        static let name = "casevault_file_unchanged"
        static let sql = """
            CALL casevault_file_unchanged($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                $16, $17, $18, $19, $20, NULL)
            """
        static let bindingDataTypes: [PostgresDataType] = [
            .int4, .int4, .int8, .int8, .bool, .text, .int4, .int8Array, .int8Array, .int8, .int8,
            .bytea, .bytea, .text, .int8, .int8, .bytea, .bytea, .text, .bytea,
        ]
        typealias Row = Int32

        let lock: CaseLock
        let filingLock: Int64
        let rosterUID: Int64?
        let onRoster: Bool
        let expected: CaseSummary
        let row: PostgresRecords.Row

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 20)
            bindings.append(self.lock.space)
            bindings.append(self.lock.key)
            bindings.append(self.filingLock)
            bindings.append(self.rosterUID)
            bindings.append(self.onRoster)
            bindings.append(self.expected.state.rawValue)
            bindings.append(Int32(clamping: self.expected.participantCount))
            bindings.append(self.expected.mediators.map { Int64($0) })
            bindings.append(self.expected.supervisors.map { Int64($0) })
            bindings.append(self.expected.createdAt)
            bindings.append(self.expected.closedAt)
            InsertRecord.append(self.row, to: &bindings)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Int32 { try row.decode(Int32.self) }
    }
}

extension PostgresConnection {
    /// Runs `statement`, prepared on this connection at its first run, its rows read to the end (an error
    /// PostgreSQL sends after the rows' description reaches only a reader of the rows).
    func rows<Statement: PostgresPreparedStatement>(_ statement: Statement, logger: Logger) async throws
        -> [Statement.Row]
    {
        var rows: [Statement.Row] = []
        for try await row in try await self.execute(statement, logger: logger) {
            rows.append(row)
        }
        return rows
    }
}

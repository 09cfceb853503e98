internal import CaseVaultCore
internal import GRDB
internal import GRDBSQLite

// The record row a get asks for, read with SQLite's own calls on GRDB's prepared statement. GRDB builds a
// row object for every lookup, with a dictionary of its lowercased column names: a profile of in-process
// gets found that set-up a third of a get. Only for the point lookups of gets (`RecordStore.liveRow` and
// `storedRecord(_:rosterUID:decide:)`), which run on the index's read-only connections (`Index.lookup`),
// outside any transaction, where no GRDB observer watches what a statement does.
extension Index {
    /// The SQL of the statement, kept apart from `row(_:id:)`'s so that GRDB never runs this cached
    /// statement itself (its bookkeeping would not know the state this function leaves it in).
    private static let pointLookup = "SELECT \(Index.columns) FROM records WHERE id = ? -- point lookup"

    /// The row of record `id`, or `nil`: what `row(_:id:)` returns, read from the statement directly.
    static func lookupRow(_ db: Database, id: RecordID) throws -> Row? {
        let statement = try db.cachedStatement(sql: Self.pointLookup)
        let handle = statement.sqliteStatement
        return try id.rawValue.withCString { text -> Row? in
            // Reset whatever happens, so that the read ends with the lookup rather than with the next one,
            // and unbound before the text goes: SQLITE_STATIC (no destructor) binds it where it lies.
            defer {
                sqlite3_reset(handle)
                sqlite3_clear_bindings(handle)
            }
            guard sqlite3_bind_text(handle, 1, text, -1, nil) == SQLITE_OK else {
                throw Self.stepFailure(db, sql: Self.pointLookup)
            }
            switch sqlite3_step(handle) {
            case SQLITE_DONE:
                return nil
            case SQLITE_ROW:
                return try Self.decode(handle)
            default:
                throw Self.stepFailure(db, sql: Self.pointLookup)
            }
        }
    }

    private static func stepFailure(_ db: Database, sql: String) -> DatabaseError {
        let code = sqlite3_errcode(db.sqliteConnection)
        return DatabaseError(
            resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)),
            sql: sql)
    }

    /// `decode(_:)` for the columns of `Index.columns` where the statement holds them.
    private static func decode(_ handle: OpaquePointer) throws -> Row {
        func text(_ column: Int32) -> String? {
            guard let bytes = sqlite3_column_text(handle, column) else { return nil }
            let count = Int(sqlite3_column_bytes(handle, column))
            return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
        }
        func integer(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
        do throws(CaseVaultError) {
            guard let id = text(0), let caseID = text(1), let type = text(2), let state = text(3),
                [4, 7, 8, 9, 10, 11].allSatisfy({ sqlite3_column_type(handle, $0) == SQLITE_INTEGER }),
                [SQLITE_INTEGER, SQLITE_NULL].contains(sqlite3_column_type(handle, 12)),
                [5, 6].allSatisfy({ [SQLITE_TEXT, SQLITE_NULL].contains(sqlite3_column_type(handle, $0)) }),
                let segment = UInt32(exactly: integer(9))
            else {
                throw Self.malformedRow()
            }
            return try Self.row(
                id: id, caseID: caseID, type: type, state: state, createdAt: integer(4), author: text(5),
                supersedes: text(6), sealedSize: Int(integer(7)), slot: integer(8), segment: segment,
                offset: integer(10), seq: integer(11),
                frameStart: sqlite3_column_type(handle, 12) == SQLITE_NULL ? nil : integer(12))
        } catch {
            throw Self.malformedRow(cause: error)
        }
    }
}

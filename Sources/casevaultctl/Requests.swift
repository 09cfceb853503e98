import ArgumentParser
import CaseVaultCore
import Foundation

// What the commands that talk to the daemon share: checking ids and types, reading input, building
// paths and queries, following pages, printing records.

/// Files `body` (`type`, `content`, perhaps `supersedes`) in the case and prints what was filed.
func fileRecord(caseID: String, body: [String: Any], connection: Connection) async throws(CLIError) {
    let reply = try await connection.client().request(.POST, "/v1/cases/\(caseID)/records", json: body)
    guard reply.status == 201 else { throw CLIError.from(reply) }
    let filed = reply.json
    let shredded = filed["shredded"] as? [String] ?? []
    output(
        json: connection.json, document: filed,
        rows: [
            ("record", filed["record_id"] as? String ?? "?"), ("case", filed["case_id"] as? String ?? "?"),
            ("type", filed["type"] as? String ?? "?"), ("filed", filed["created_at"] as? String ?? "?"),
        ] + shredded.map { ("shredded note", $0) })
}

/// Throws a usage error unless `value` is an identifier of kind `Tag`.
func requireID<Tag>(_ kind: Identifier<Tag>.Type, _ value: String, _ what: String) throws {
    guard (try? Identifier<Tag>(value)) != nil else {
        throw ValidationError("\(what) is 32 lowercase hexadecimal characters")
    }
}

/// The bytes of `path`, or of standard input for `-`.
func readInput(_ path: String) throws(CLIError) -> Data {
    if path == "-" {
        return FileHandle.standardInput.readDataToEndOfFile()
    }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw CLIError.unreadable("cannot read \(path)")
    }
    return data
}

/// `data` as a JSON object, or a usage error that says where it is not one (never what it holds).
func jsonObject(_ data: Data, what: String) throws(CLIError) -> [String: Any] {
    guard let object = try? JSONSerialization.jsonObject(with: data), let dictionary = object as? [String: Any]
    else {
        throw CLIError.usage("\(what) is not a JSON object ({…}); nothing was filed")
    }
    return dictionary
}

/// What the user wrote in their editor from `template`, its comment lines left out; `aborted` when the
/// file was left empty or unchanged.
func editedText(_ template: String, name: String) throws(CLIError) -> String {
    let text = RecordTemplate.uncommented(try Editor.edit(template, name: name))
    guard !text.isEmpty else { throw CLIError.aborted("the file was left empty; nothing was filed") }
    guard text != RecordTemplate.uncommented(template) else {
        throw CLIError.aborted("the template was left unchanged; nothing was filed")
    }
    return text
}

/// `pairs` as a URL's query, each value escaped (a `+` in a time offset must not read as a space).
func queryString(_ pairs: [(String, String)]) -> String {
    pairs.map { "\($0.0)=\(escaped($0.1))" }.joined(separator: "&")
}

/// `value` as one segment of a URL's path.
func pathSegment(_ value: String) -> String {
    escaped(value)
}

/// `value` with everything but RFC 3986's unreserved characters percent-encoded.
func escaped(_ value: String) -> String {
    value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~")))
        ?? value
}

/// Every page of `path`'s list (`member`, following `next_cursor`), up to `limit` rows.
func pages(
    of path: String, _ query: [(String, String)], member: String, upTo limit: Int, _ client: DaemonClient
) async throws(CLIError) -> [[String: Any]] {
    var rows: [[String: Any]] = []
    var cursor: String?
    repeat {
        let reply = try await client.get(path + "?" + queryString(query + (cursor.map { [("cursor", $0)] } ?? [])))
        guard reply.status == 200 else { throw CLIError.from(reply) }
        rows += reply.json[member] as? [[String: Any]] ?? []
        cursor = reply.json["next_cursor"] as? String
    } while cursor != nil && rows.count < limit
    return Array(rows.prefix(limit))
}

/// A case's records as a table: id, type, filing time, the record superseded.
func printRecords(_ records: [[String: Any]]) {
    TextTable.print(
        [["RECORD", "TYPE", "FILED", "SUPERSEDES"]]
            + records.map { record in
                [
                    record["record_id"] as? String ?? "?", record["type"] as? String ?? "?",
                    record["created_at"] as? String ?? "?", record["supersedes"] as? String ?? "-",
                ]
            })
}

/// The record type a client files named `name`, or the usage error that lists them.
func fileableType(_ name: String) throws(ValidationError) -> RecordType {
    guard let type = RecordType(rawValue: name), RecordType.fileable.contains(type) else {
        throw ValidationError("--type must be one of: \(RecordType.fileable.map(\.rawValue).joined(separator: ", "))")
    }
    return type
}

/// `fileableType`, in a command's body (after `validate()` has checked it).
func fileableTypeOrUsage(_ name: String) throws(CLIError) -> RecordType {
    do { return try fileableType(name) } catch { throw CLIError.usage(error.message) }
}

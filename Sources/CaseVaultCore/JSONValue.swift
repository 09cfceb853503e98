internal import Foundation

/// A decoded JSON document, used to validate record content without knowing every free-form field.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The member `key` of an object; `nil` for absent members and for non-objects.
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    /// A short name of the value's JSON type, for error messages (never the value itself).
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .integer, .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

extension JSONValue {
    /// Parses a JSON document (RFC 8259; `JSONParser` says where it differs from Foundation's).
    public static func parse(_ bytes: [UInt8]) -> JSONValue? {
        bytes.withUnsafeBytes { JSONParser.parse($0) }
    }

    /// Parses record content read back from the vault as the parser of earlier builds read it when it
    /// validated it: a trailing comma taken, a leading byte-order mark dropped (`JSONParser`). Content is
    /// stored as its client sent it, so a record filed before RFC 8259 was enforced may hold either; reading
    /// it must not lose what it says (a disclosure's category, an agreement's participant, a form's
    /// statistics).
    public static func parseStored(_ bytes: [UInt8]) -> JSONValue? {
        bytes.withUnsafeBytes { JSONParser.parse($0, stored: true) }
    }
}

extension JSONValue {
    /// The document as compact JSON with sorted keys, for storing a member of a request as record content.
    public func encoded() -> [UInt8] {
        let object = self.foundationObject
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .fragmentsAllowed])
        else {
            return Array("null".utf8)
        }
        return [UInt8](data)
    }

    private var foundationObject: Any {
        switch self {
        case .null: return NSNull()
        case .bool(let value): return value
        case .integer(let value): return Int(value)
        case .number(let value): return value
        case .string(let value): return value
        case .array(let values): return values.map(\.foundationObject)
        case .object(let members): return members.mapValues(\.foundationObject)
        }
    }

    /// Whether the document nests arrays and objects deeper than `limit`, checked on the bytes before any
    /// parser recurses into them. Brackets inside strings (escapes included) do not count.
    public static func nestsDeeper(than limit: Int, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return false }
        let count = bytes.count
        var depth = 0
        var index = 0
        while index < count {
            switch base[index] {
            case UInt8(ascii: "\""):
                // Past the string: its plain text skipped a word at a time, an escape's next byte with it.
                index += 1
                while index < count {
                    index = JSONScan.stringStop(base, from: index, to: count)
                    guard index < count else { break }
                    let byte = base[index]
                    index += byte == UInt8(ascii: "\\") ? 2 : 1
                    if byte == UInt8(ascii: "\"") { break }
                }
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                if depth > limit { return true }
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            default: break
            }
            index += 1
        }
        return false
    }

    /// The bytes of the value of the top-level member `key` of `document`, exactly as sent; `nil` when it
    /// is absent. `document` must already have parsed as a JSON object: this only finds the value's span,
    /// so that content can be stored as the client wrote it without being serialized again.
    public static func rawMember(_ key: String, of document: [UInt8]) -> ArraySlice<UInt8>? {
        Self.span(of: key, in: document).map { document[$0] }
    }

    /// `rawMember`, when `parsed` (the parse of `document`) read `key`'s value from exactly these bytes:
    /// `key` is the document's only member of that name, every member's name is plain ASCII written
    /// without escapes, and the document has as many members as `parsed`. `nil` otherwise: a parser keeps
    /// one of two members whose names read alike (`parse` keeps the last, and `String` compares names by
    /// canonical equivalence; Foundation's parser, used before, also dropped a name's leading byte-order
    /// mark).
    public static func uniqueRawMember(_ key: String, of document: [UInt8], parsed: JSONValue) -> ArraySlice<UInt8>? {
        guard case .object(let members) = parsed else { return nil }
        return Self.span(of: key, in: document, members: members.count).map { document[$0] }
    }

    /// The member `key` as a string, or `nil`.
    public func string(_ key: String) -> String? {
        if case .string(let value) = self[key] ?? .null { return value }
        return nil
    }
}

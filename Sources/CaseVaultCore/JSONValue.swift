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
    /// Parses a JSON document. Foundation's `JSONSerialization` rather than a `Decodable` walk: on this
    /// toolchain it parses a 4 KiB record 2 to 5 times faster, and it preserves every free-form field.
    public static func parse(_ bytes: [UInt8]) -> JSONValue? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]) else {
            return nil
        }
        return Self(foundation: object)
    }

    private init?(foundation value: Any) {
        switch value {
        case is NSNull:
            self = .null
        case let text as String:
            self = .string(text)
        case let number as NSNumber:
            // JSONSerialization marks booleans with the ObjC type "c"; integers as "i", "l" or "q"; the rest "d".
            // A number written with a fraction or exponent that is still whole (5.0, 2e1) is an integer, as JSON
            // Schema counts it: a field that takes an integer takes it, exactly up to 2^53.
            switch String(cString: number.objCType) {
            case "c": self = .bool(number.boolValue)
            case "d", "f":
                let value = number.doubleValue
                if value.rounded(.towardZero) == value, abs(value) <= 9_007_199_254_740_992 {
                    self = .integer(Int64(value))
                } else {
                    self = .number(value)
                }
            default: self = .integer(number.int64Value)
            }
        case let items as [Any]:
            var values: [JSONValue] = []
            values.reserveCapacity(items.count)
            for item in items {
                guard let converted = JSONValue(foundation: item) else { return nil }
                values.append(converted)
            }
            self = .array(values)
        case let members as [String: Any]:
            var values: [String: JSONValue] = [:]
            values.reserveCapacity(members.count)
            for (key, item) in members {
                guard let converted = JSONValue(foundation: item) else { return nil }
                values[key] = converted
            }
            self = .object(values)
        default:
            return nil
        }
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
        var depth = 0
        var inString = false
        var escaped = false
        for byte in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                if depth > limit { return true }
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            default: break
            }
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
    /// one of two members whose names read alike (Foundation's keeps the last; it drops a name's leading
    /// byte-order mark, and `String` compares names by canonical equivalence).
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

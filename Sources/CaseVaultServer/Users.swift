internal import CaseVaultCore

#if canImport(Glibc)
internal import Glibc
#endif

/// Mediators are Unix users. The API names them as `uid:N`, `user:NAME` or a bare user name; the index
/// keeps uids only.
enum Users {
    /// The uid a client names; `invalid-identifier` for a form it does not have, `unknown-user` for a
    /// name no user of this system has.
    static func uid(_ text: String, field: String? = nil) throws(CaseVaultError) -> UInt32 {
        let invalid = CaseVaultError(
            .invalidIdentifier, "a mediator is uid:N or the name of a user this system knows", field: field
        )
        if text.hasPrefix("uid:") {
            // Digits only: UInt32("+5") and UInt32("-0") parse, and no other spelling names a uid.
            let digits = text.dropFirst(4)
            guard !digits.isEmpty, digits.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let uid = UInt32(digits)
            else { throw invalid }
            return uid
        }
        let name = text.hasPrefix("user:") ? String(text.dropFirst(5)) : text
        guard !name.isEmpty, name.utf8.count <= 64, !name.utf8.contains(0) else { throw invalid }
        guard let uid = Self.lookup(name: name) else {
            throw CaseVaultError(
                .unknownUser, "no user of this system has this name; name one it knows, or uid:N", field: field)
        }
        return uid
    }

    /// The list of users in `field` of a body.
    static func uids(_ document: JSONValue, field: String) throws(CaseVaultError) -> [UInt32] {
        let expectation = "a list of mediators, each uid:N or a user name"
        guard let value = document[field], value != .null else {
            throw CaseVaultError(.missingField, "\(field) is required (\(expectation))", field: field)
        }
        guard case .array(let items) = value, items.count <= 64 else { throw document.mistyped(field, expectation) }
        var uids: [UInt32] = []
        for item in items {
            guard case .string(let text) = item else { throw document.mistyped(field, expectation) }
            uids.append(try Self.uid(text, field: field))
        }
        return Array(Set(uids)).sorted()
    }

    /// How a uid is shown: its user name when the system knows one, else `uid:N`.
    static func name(_ uid: UInt32) -> String {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil, let name = entry.pw_name
        else {
            return "uid:\(uid)"
        }
        return String(cString: name)
    }

    private static func lookup(name: String) -> UInt32? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getpwnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return entry.pw_uid
    }
}

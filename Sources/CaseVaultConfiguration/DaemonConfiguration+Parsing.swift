internal import CaseVaultAudit
public import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultStore
internal import Foundation
internal import TOMLKit

// Reading casevault.toml: the text checked before TOMLKit sees it, strict decoding, errors that name the key.
extension DaemonConfiguration {
    /// Parses TOML text. Errors name the key at fault; the text itself is never repeated.
    /// TOMLKit 0.6.0's parser (toml++) aborts the process on a table header whose first character is not
    /// a key's (`[~]`, `[[#]]`: an assertion in `parse_key`, found by `make fuzz`) instead of reporting a
    /// parse error. Such a header is refused here first, with its line, as is a header that ends its
    /// line without a key. A line of a multi-line string that looks like one is refused too: the
    /// configuration has no multi-line strings.
    static func refuseHeadersTOMLKitCannotParse(_ text: String) throws(CaseVaultError) {
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var rest = line.drop { $0 == " " || $0 == "\t" }
            guard rest.first == "[" else { continue }
            rest = rest.dropFirst(rest.hasPrefix("[[") ? 2 : 1).drop { $0 == " " || $0 == "\t" }
            // A header that ends its line here would go on on the next one (toml++ reads a newline there
            // as a space), so it is refused too.
            let first = rest.unicodeScalars.first ?? "\n"
            let bare =
                (first.isASCII && (first.properties.isAlphabetic || ("0"..."9").contains(first))) || first == "_"
                || first == "-"
            guard bare || first == "\"" || first == "'" || first == "]" else {
                throw CaseVaultError(
                    .invalidConfiguration,
                    "the configuration is not valid TOML (line \(number + 1)): a table header must begin with a key"
                )
            }
        }
    }

    public static func parse(_ text: String) throws(CaseVaultError) -> DaemonConfiguration {
        try Self.refuseHeadersTOMLKitCannotParse(text)
        let decoded: Document
        do {
            decoded = try TOMLDecoder(strictDecoding: true).decode(Document.self, from: text)
        } catch let error as UnexpectedKeysError {
            let keys = error.keys.keys.sorted().joined(separator: ", ")
            throw CaseVaultError(
                .invalidConfiguration, "unknown configuration key(s): \(keys); see Config/casevault.toml")
        } catch let error as TOMLParseError {
            throw CaseVaultError(
                .invalidConfiguration,
                "the configuration is not valid TOML (line \(error.source.begin.line), column \(error.source.begin.column))"
            )
        } catch let error as DecodingError {
            throw CaseVaultError(.invalidConfiguration, Self.describe(error))
        } catch {
            throw CaseVaultError(.invalidConfiguration, "the configuration could not be read: \(error)")
        }
        var configuration = DaemonConfiguration(
            store: decoded.store, server: decoded.server, roles: decoded.roles ?? [:], offices: decoded.offices ?? [:]
        )
        configuration.retention = decoded.retention ?? Retention()
        configuration.keys = decoded.keys ?? Keys()
        configuration.statistics = decoded.statistics ?? StatisticsSettings()
        configuration.audit = decoded.audit ?? AuditSettings()
        configuration.backup = decoded.backup ?? Backup()
        configuration.storage = decoded.storage ?? Storage()
        configuration.testing = decoded.testing ?? Testing()
        try configuration.validate()
        _ = try configuration.roleMap()
        _ = try configuration.retentionSchedule()
        _ = try configuration.serverConfiguration(relativeTo: URL(fileURLWithPath: "/"))
        return configuration
    }

    /// Reads and parses the file at `path`.
    public static func load(path: String) throws(CaseVaultError) -> DaemonConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CaseVaultError(.invalidConfiguration, "cannot read the configuration file \(path)")
        }
        return try Self.parse(String(decoding: data, as: UTF8.self))
    }

    struct Document: Decodable {
        var store: Store
        var server: Server
        var roles: [String: [String]]?
        var offices: [String: String]?
        var retention: Retention?
        var keys: Keys?
        var statistics: StatisticsSettings?
        var audit: AuditSettings?
        var backup: Backup?
        var storage: Storage?
        var testing: Testing?
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context, _ key: (any CodingKey)? = nil) -> String {
            // TOMLKit's path already ends with the missing key; others' do not.
            let names = context.codingPath.map(\.stringValue)
            let last = key.map(\.stringValue).flatMap { names.last == $0 ? nil : [$0] } ?? []
            return (names + last).joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "the configuration lacks \(path(context, key)); see Config/casevault.toml"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(path(context)) has the wrong type; see Config/casevault.toml"
        @unknown default:
            return "the configuration could not be decoded"
        }
    }
}

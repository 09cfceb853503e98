internal import CaseVaultConfiguration
internal import CaseVaultCore
internal import CaseVaultCrypto
internal import Foundation
internal import Hummingbird
internal import NIOCore

extension Request {
    /// The body as a JSON object, within the configured limits: `application/json` only, no larger than
    /// `maxBodyBytes` (refused from its Content-Length before anything is read), no deeper than
    /// `maxJSONDepth`. The received bytes are zeroed once parsed.
    func jsonObject(_ limits: ServerConfiguration) async throws -> JSONValue {
        var raw: [UInt8] = []
        let document = try await self.jsonObject(limits, raw: &raw)
        wipe(&raw)
        return document
    }

    /// The same, and the body's bytes in `raw` (the caller wipes them).
    func jsonObject(_ limits: ServerConfiguration, raw: inout [UInt8]) async throws -> JSONValue {
        var buffer = try await self.jsonBody(limits)
        defer {
            buffer.withUnsafeMutableReadableBytes { bytes in
                if let base = bytes.baseAddress { memset(base, 0, bytes.count) }
            }
        }
        guard !buffer.withUnsafeReadableBytes({ JSONValue.nestsDeeper(than: limits.maxJSONDepth, $0) }) else {
            throw CaseVaultError(
                .nestingTooDeep, "the body nests arrays and objects deeper than the limit of \(limits.maxJSONDepth)"
            )
        }
        raw = Array(buffer.readableBytesView)
        guard let document = JSONValue.parse(raw), case .object = document else {
            wipe(&raw)
            throw CaseVaultError(.malformedContent, "the request body must be a JSON object")
        }
        return document
    }

    /// The body's bytes, once its media type is JSON and its size within `maxBodyBytes` (refused from its
    /// Content-Length before anything is read). The caller zeroes them.
    private func jsonBody(_ limits: ServerConfiguration) async throws -> ByteBuffer {
        guard let type = self.headers[.contentType], Self.isJSON(type) else {
            throw CaseVaultError(
                .unsupportedMediaType, "send the body as JSON with the header Content-Type: application/json")
        }
        if let length = self.headers[.contentLength].flatMap(Int.init), length > limits.maxBodyBytes {
            throw Self.tooLarge(limits)
        }
        do {
            return try await self.body.collect(upTo: limits.maxBodyBytes)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw Self.tooLarge(limits)
        }
    }

    /// The body's bytes (as `jsonBody`) copied piece by piece, as they were received, into locked memory;
    /// then each piece is zeroed where it lies: in NIO's receive buffer, whose bytes the HTTP decoder has
    /// consumed by the time they reach the route. NIO lends those bytes read-only and shares their storage,
    /// so that a copy-on-write zeroing would zero a copy; they are overwritten through the lent pointer on
    /// purpose, and only the body's own bytes are.
    private func lockedBody(_ limits: ServerConfiguration) async throws -> SecureBytes {
        guard let type = self.headers[.contentType], Self.isJSON(type) else {
            throw CaseVaultError(
                .unsupportedMediaType, "send the body as JSON with the header Content-Type: application/json")
        }
        if let length = self.headers[.contentLength].flatMap(Int.init), length > limits.maxBodyBytes {
            throw Self.tooLarge(limits)
        }
        var pieces: [ByteBuffer] = []
        var total = 0
        defer {
            for piece in pieces {
                piece.withUnsafeReadableBytes { bytes in
                    if let base = bytes.baseAddress { memset(UnsafeMutableRawPointer(mutating: base), 0, bytes.count) }
                }
            }
        }
        for try await piece in self.body {
            pieces.append(piece)
            total += piece.readableBytes
            guard total <= limits.maxBodyBytes else { throw Self.tooLarge(limits) }
        }
        guard total > 0 else {
            throw CaseVaultError(.malformedContent, "the request body must be a JSON object")
        }
        do {
            return try SecureBytes(count: total) { output in
                var position = 0
                for piece in pieces {
                    piece.withUnsafeReadableBytes { bytes in
                        UnsafeMutableRawBufferPointer(rebasing: output[position..<(position + bytes.count)]).copyMemory(
                            from: bytes)
                        position += bytes.count
                    }
                }
            }
        } catch {
            throw CaseVaultError(.keyUnavailable, "locked memory for the request could not be allocated")
        }
    }

    /// A secret member of a JSON body, taken out into locked memory.
    enum Secret {
        case absent
        /// Present but not a string (or an empty one).
        case notString
        case value(SecureBytes)
    }

    /// The body as a JSON object (within the limits, as `jsonObject`), with the string members `names` taken
    /// out into locked memory before anything else reads them: the received bytes are copied into
    /// `sodium_malloc`'d memory and zeroed, each member's value is decoded from there into a `SecureBytes`,
    /// and the document returned holds `null` in their places. So a secret never lies in a Swift string or
    /// an array that is freed without being zeroed. (NIO's own receive buffers are outside this reach.)
    func jsonObject(_ limits: ServerConfiguration, secrets names: [String]) async throws -> (
        JSONValue, [String: Secret]
    ) {
        let raw = try await self.lockedBody(limits)
        return try raw.withUnsafeBytes { bytes throws -> (JSONValue, [String: Secret]) in
            try Self.takeSecrets(names, from: bytes, maxJSONDepth: limits.maxJSONDepth)
        }
    }

    /// What `jsonObject(_:secrets:)` does with the body once its bytes lie in locked memory: the depth
    /// check, the scan for the members `names`, the parse of the document with their values cut out, and
    /// each value decoded into locked memory. Apart so that the fuzz targets reach it without a request
    /// (`RequestBodyParsing`).
    static func takeSecrets(
        _ names: [String], from bytes: UnsafeRawBufferPointer, maxJSONDepth: Int
    ) throws -> (JSONValue, [String: Secret]) {
        guard !JSONValue.nestsDeeper(than: maxJSONDepth, bytes) else {
            throw CaseVaultError(
                .nestingTooDeep, "the body nests arrays and objects deeper than the limit of \(maxJSONDepth)")
        }
        // Parsed once with the secrets' values cut out, so that no copy of them is made.
        var found: [(name: String, range: Range<Int>)] = []
        for name in names {
            if let range = JSONValue.memberRange(of: name, in: bytes), range.upperBound <= bytes.count {
                found.append((name, range))
            }
        }
        found.sort { $0.range.lowerBound < $1.range.lowerBound }
        guard zip(found, found.dropFirst()).allSatisfy({ $0.range.upperBound <= $1.range.lowerBound }) else {
            throw CaseVaultError(.malformedContent, "the request body must be a JSON object")
        }
        // A member name spelt with escapes (`"pass\u0070hrase"`) would not be found above, and its value
        // would be parsed into ordinary memory: outside the secrets' values, no escape is taken. (The
        // bodies that carry secrets hold nothing else that needs one.)
        var outside = 0
        for member in found + [(name: "", range: bytes.count..<bytes.count)] {
            if bytes[outside..<member.range.lowerBound].contains(UInt8(ascii: "\\")) {
                throw CaseVaultError(
                    .malformedContent,
                    "this body takes no escapes outside the secret's value; write member names plainly")
            }
            outside = member.range.upperBound
        }
        var redacted: [UInt8] = []
        redacted.reserveCapacity(bytes.count)
        var position = 0
        for member in found {
            redacted += bytes[position..<member.range.lowerBound]
            redacted += Array("null".utf8)
            position = member.range.upperBound
        }
        redacted += bytes[position...]
        defer { wipe(&redacted) }
        guard let document = JSONValue.parse(redacted), case .object = document else {
            throw CaseVaultError(.malformedContent, "the request body must be a JSON object")
        }
        var secrets: [String: Secret] = [:]
        for name in names { secrets[name] = .absent }
        for (name, range) in found {
            // The member given twice: which one counts would depend on the parser. Refused.
            guard document[name] == .null else {
                throw CaseVaultError(.invalidField, "\(name) is given more than once", field: name)
            }
            let literal = UnsafeRawBufferPointer(rebasing: bytes[range])
            guard let length = JSONValue.decodeString(literal, into: nil), length > 0 else {
                secrets[name] = .notString
                continue
            }
            do {
                secrets[name] = .value(
                    try SecureBytes(count: length) { output in _ = JSONValue.decodeString(literal, into: output) })
            } catch {
                throw CaseVaultError(.keyUnavailable, "locked memory for the secret could not be allocated")
            }
        }
        return (document, secrets)
    }

    /// The body as a JSON object, where no body at all (no Content-Type, no length) counts as `{}`: for
    /// routes whose members are all optional.
    func optionalJSONObject(_ limits: ServerConfiguration) async throws -> JSONValue {
        if self.headers[.contentType] == nil, (self.headers[.contentLength].flatMap(Int.init) ?? 0) == 0 {
            return .object([:])
        }
        return try await self.jsonObject(limits)
    }

    /// Refuses a body on a route that takes none, so that nothing a client sends is silently dropped.
    func requireNoBody() throws(CaseVaultError) {
        let length = self.headers[.contentLength].flatMap(Int.init) ?? 0
        guard length == 0, self.headers[.transferEncoding] == nil else {
            throw CaseVaultError(.invalidField, "this route takes no request body; send none")
        }
    }

    static func tooLarge(_ limits: ServerConfiguration) -> CaseVaultError {
        CaseVaultError(
            .contentTooLarge,
            "the request body is larger than the limit of \(limits.maxBodyBytes) bytes; put large documents in an attachment"
        )
    }

    /// `application/json`, with or without parameters such as `charset=utf-8`: the media type before any
    /// `;`, without the spaces and tabs around it, in any case. Compared byte by byte: it is asked of every
    /// request with a body, and Foundation's trimming and lowercasing cost a PUT more than its routing.
    static func isJSON(_ value: String) -> Bool {
        let expected = "application/json".utf8
        var media = Substring(value).utf8.prefix { $0 != UInt8(ascii: ";") }[...]
        let blank: (UInt8) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        while let first = media.first, blank(first) { media = media.dropFirst() }
        while let last = media.last, blank(last) { media = media.dropLast() }
        guard media.count == expected.count else { return false }
        // ASCII letters' case is bit 0x20; `|` maps the expected letters (and '/', which has it set) onto
        // themselves, and a byte equal to one of them either way is that letter in either case.
        return zip(media, expected).allSatisfy { $0 == $1 || ($0 | 0x20 == $1 && $1 >= UInt8(ascii: "a")) }
    }
}

/// Overwrites bytes that held a request's content.
func wipe(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { if let base = $0.baseAddress { memset(base, 0, $0.count) } }
}

extension JSONValue {
    /// Refuses members other than `allowed`, without repeating the name the client sent.
    func onlyFields(_ allowed: Set<String>) throws(CaseVaultError) {
        guard case .object(let members) = self else { return }
        for key in members.keys where !allowed.contains(key) {
            throw CaseVaultError(
                .invalidField,
                "the body has a field this route does not take; it takes \(allowed.sorted().joined(separator: ", "))"
            )
        }
    }

    /// The optional member `field` as a whole number from 1 to 2^31 − 1, `what` naming its unit. Left out
    /// means no limit; `null` is refused, not read as "no limit".
    func optionalCount(_ field: String, of what: String) throws(CaseVaultError) -> Int? {
        guard let value = self[field] else { return nil }
        guard case .integer(let number) = value, number > 0, number <= Int64(Int32.max) else {
            throw self.mistyped(field, "a whole number of \(what) from 1 up")
        }
        return Int(number)
    }

    /// The optional member `field` as an identifier.
    func optionalIdentifier<Tag>(_ field: String, as: Identifier<Tag>.Type) throws(CaseVaultError) -> Identifier<Tag>? {
        guard let value = self[field] else { return nil }
        guard case .string(let text) = value else {
            throw self.mistyped(field, "an id of 32 lowercase hexadecimal characters")
        }
        do {
            return try Identifier<Tag>(text)
        } catch {
            throw CaseVaultError(
                .invalidIdentifier, "\(field) must be an id of 32 lowercase hexadecimal characters", field: field)
        }
    }
}

/// The request-body parsing the fuzz targets (`CaseVaultFuzz`) reach without a request or a socket: the
/// same code the routes run on a body's bytes.
package enum RequestBodyParsing {
    /// `Request.jsonObject(_:secrets:)` (the init and unseal routes) on `body` once it lies in memory: the
    /// depth check, the scan for the secret members `names`, the escapes check, the parse of the document
    /// with their values cut out, and each value decoded into locked memory. Whether the body was taken;
    /// why it was refused is dropped.
    package static func takesSecretBody(_ body: [UInt8], secrets names: [String], maxJSONDepth: Int) -> Bool {
        body.withUnsafeBytes { bytes in
            (try? Request.takeSecrets(names, from: bytes, maxJSONDepth: maxJSONDepth)) != nil
        }
    }
}

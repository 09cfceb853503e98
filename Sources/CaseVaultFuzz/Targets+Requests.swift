internal import CaseVaultConfiguration
internal import CaseVaultCore
internal import CaseVaultServer

/// The targets for what a client sends in a request body: bytes straight off the socket.
enum RequestTargets {
    /// The server's default `server.max_json_depth`.
    static let maxJSONDepth = ServerConfiguration(socketPath: "").maxJSONDepth
    /// The store's validator at the default `store.max_content_bytes`.
    static let validator = RecordValidator(maxContentBytes: 1 << 20)

    /// `request-body`: what `Request.jsonObject` does with a body's bytes (the depth check before any
    /// parser recurses, then the parse, which must give an object), then the two routes that carry record
    /// content: filing a record (the envelope scan finds the content's bytes as sent, and the store
    /// validates them) and opening a case (its header is validated).
    static func body(_ input: [UInt8]) {
        guard !input.withUnsafeBytes({ JSONValue.nestsDeeper(than: Self.maxJSONDepth, $0) }) else { return }
        guard let document = JSONValue.parse(input), case .object = document else { return }
        _ = try? Self.fileRecord(document, raw: input)
        _ = try? Self.openCase(document)
    }

    /// `POST /v1/cases/{case_id}/records` once its body parsed (`Routes+Cases.fileRecord`), and the
    /// store's check of the content (`RecordStore.file`).
    private static func fileRecord(_ body: JSONValue, raw: [UInt8]) throws(CaseVaultError) {
        // The route's bargain: the bytes `uniqueRawMember` finds parse to what the body's parse holds under
        // `content`, so that the validator may check the latter in place of the former.
        let unique = JSONValue.uniqueRawMember("content", of: raw, parsed: body)
        if let unique, JSONValue.parse(Array(unique)) != body["content"] {
            fatalError("the content member's bytes parse to something else than the body's parse holds")
        }
        let type = try RecordType.parse(try body.requireText("type"))
        let object = try body.requireObject("content")
        let content = (unique ?? JSONValue.rawMember("content", of: raw)).map(Array.init) ?? object.encoded()
        if case .string(let text) = body["supersedes"] ?? .null {
            _ = try RecordID(text)
        }
        try Self.validator.validate(type: type, content: content, parsed: unique == nil ? nil : object)
    }

    /// `POST /v1/cases` once its body parsed (`Routes+Cases.openCase`): the case header as the store
    /// validates it.
    private static func openCase(_ body: JSONValue) throws(CaseVaultError) {
        let participants = try body.require("participants", "a list of participants")
        try Self.validator.validate(
            type: .caseHeader, content: JSONValue.object(["participants": participants]).encoded())
    }

    /// `request-secrets`: a body of the init route (the secret `passphrase`) and of the unseal route
    /// (`passphrase` and `share`), through the server's own code.
    static func secrets(_ input: [UInt8]) {
        _ = RequestBodyParsing.takesSecretBody(input, secrets: ["passphrase"], maxJSONDepth: Self.maxJSONDepth)
        _ = RequestBodyParsing.takesSecretBody(
            input, secrets: ["passphrase", "share"], maxJSONDepth: Self.maxJSONDepth)
    }

    /// `record-content`: the content validator on its own. The first byte picks the record type (in
    /// `RecordType.allCases` order, modulo its count) and, in every second round of that count, a case
    /// whose participants are p1, p2 and p3; the rest is the content. Content nested deeper than the server's limit is skipped: the body that
    /// carries content is refused before anything parses it.
    static func content(_ input: [UInt8]) {
        guard let selector = input.first else { return }
        let content = Array(input.dropFirst())
        guard !content.withUnsafeBytes({ JSONValue.nestsDeeper(than: Self.maxJSONDepth, $0) }) else { return }
        let types = RecordType.allCases
        let type = types[Int(selector) % types.count]
        let participants: Set<String>? = (Int(selector) / types.count) % 2 == 0 ? nil : ["p1", "p2", "p3"]
        _ = try? Self.validator.validate(type: type, content: content, participants: participants)
    }
}

internal import CaseVaultCore
internal import CaseVaultStore
internal import Hummingbird
internal import NIOCore

/// Destruction certificates: every shred yields one, signed with the vault's Ed25519 key. The director
/// reads them; anyone can verify one offline with the public key (`casevaultctl certificate verify`).
extension Routes {
    struct PublicKey: Encodable {
        var algorithm: String
        var publicKey: String

        enum CodingKeys: String, CodingKey {
            case algorithm
            case publicKey = "public_key"
        }
    }

    /// `GET /v1/certificates/public-key`: director and operator.
    func certificateKey(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        return try JSONResponse.make(
            PublicKey(algorithm: "ed25519", publicKey: Hex.encode(try self.store.certificatePublicKey))
        )
    }

    /// `GET /v1/certificates[?case_id=…]`: `{"certificates": [document, …]}`, oldest first. Director.
    func listCertificates(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let caseID = try request.uri.queryParameters.get("case_id").map { text throws(CaseVaultError) in
            try CaseID(String(text))
        }
        let documents = try await self.run { store throws(CaseVaultError) in try store.certificates(caseID: caseID) }
        var body = ByteBuffer()
        body.writeString(#"{"certificates":["#)
        for (index, document) in documents.enumerated() {
            if index > 0 { body.writeString(",") }
            body.writeBytes(document)
        }
        body.writeString("]}")
        return JSONResponse.raw(body)
    }

    /// `GET /v1/certificates/{certificate_id}`: the signed document, as `casevaultctl certificate verify`
    /// reads it. Director.
    func readCertificate(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let id = try CaseID(context.parameters.get("certificate_id") ?? "")
        let document = try await self.run { store throws(CaseVaultError) in try store.certificate(id.rawValue) }
        return JSONResponse.raw(ByteBuffer(bytes: document))
    }
}

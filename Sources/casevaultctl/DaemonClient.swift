internal import CaseVaultClient
internal import CaseVaultCrypto
internal import Foundation
internal import NIOCore
internal import NIOHTTP1

/// The CLI's view of `VaultClient`: the same requests, whose failures are the CLI's errors (and so its exit
/// statuses).
struct DaemonClient {
    typealias Reply = VaultClient.Reply

    let client: VaultClient

    init(socketPath: String) {
        self.client = VaultClient(socketPath: socketPath)
    }

    var socketPath: String { self.client.socketPath }

    func get(_ path: String) async throws(CLIError) -> Reply {
        do { return try await self.client.get(path) } catch { throw CLIError(error) }
    }

    func request(_ method: HTTPMethod, _ path: String, json: [String: Any]? = nil) async throws(CLIError) -> Reply {
        do { return try await self.client.request(method, path, json: json) } catch { throw CLIError(error) }
    }

    func requestSecret(_ method: HTTPMethod, _ path: String, body: SecureBytes) async throws(CLIError) -> Reply {
        do { return try await self.client.requestSecret(method, path, body: body) } catch { throw CLIError(error) }
    }

    func upload(
        _ method: HTTPMethod, _ path: String, file descriptor: Int32, length: Int64, mediaType: String,
        prefix: [UInt8] = [], headers: [(String, String)] = [], progress: @escaping @Sendable (Int64) -> Void
    ) async throws(CLIError) -> Reply {
        do {
            return try await self.client.upload(
                method, path, file: descriptor, length: length, mediaType: mediaType, prefix: prefix,
                headers: headers, progress: progress)
        } catch { throw CLIError(error) }
    }

    func stream(_ method: HTTPMethod, _ path: String, into sink: (ByteBuffer) throws -> Void) async throws(CLIError)
        -> Reply
    {
        do {
            return try await self.client.stream(method, path, into: sink)
        } catch let error as CLIError {
            throw error
        } catch let error as VaultClientError {
            throw CLIError(error)
        } catch {
            throw CLIError.problem("the transfer failed: \(error)")
        }
    }
}

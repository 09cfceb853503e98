import CaseVaultCore
import CaseVaultServer
import Foundation
import Testing

/// The routes and problems that `docs/openapi.yaml` documents, read from the file.
enum DocumentedRoutes {
    static let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("docs/openapi.yaml").path

    /// The routes the server's route table answers.
    static var server: [API.Route] { API.routes }

    /// `METHOD /path` for every operation under `paths:`.
    static func documented() throws -> Set<String> {
        let text = try String(contentsOfFile: Self.path, encoding: .utf8)
        var routes = Set<String>()
        var inPaths = false
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "paths:" {
                inPaths = true
                continue
            }
            if inPaths, let first = line.first, first != " " { break }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
                current = String(line.dropFirst(2).dropLast())
            } else if line.hasPrefix("    "), !line.hasPrefix("     "), let current {
                let key = line.trimmingCharacters(in: .whitespaces).dropLast()
                if ["get", "put", "post", "delete", "patch"].contains(String(key)) {
                    routes.insert("\(key.uppercased()) \(current)")
                }
            }
        }
        return routes
    }

    /// The problem types the document lists.
    static func problemTypes() throws -> Set<String> {
        let text = try String(contentsOfFile: Self.path, encoding: .utf8)
        return Set(
            text.split(separator: "\n").compactMap { line in
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                return trimmed.hasPrefix("- urn:casevault:problem:")
                    ? String(trimmed.dropFirst("- urn:casevault:problem:".count)) : nil
            })
    }
}

@Suite("docs/openapi.yaml against the server")
struct OpenAPITests {
    @Test("the document's paths and methods are exactly the server's routes")
    func routesMatch() throws {
        let documented = try DocumentedRoutes.documented()
        let served = Set(DocumentedRoutes.server.map(\.description))
        #expect(!documented.isEmpty)
        #expect(
            served.subtracting(documented).isEmpty,
            "served but not documented: \(served.subtracting(documented).sorted())")
        #expect(
            documented.subtracting(served).isEmpty,
            "documented but not served: \(documented.subtracting(served).sorted())")
    }

    @Test("the document lists every problem type the daemon can return")
    func problemsMatch() throws {
        #expect(try DocumentedRoutes.problemTypes() == Set(CaseVaultError.Code.allCases.map(\.rawValue)))
    }

    @Test(
        "the running daemon answers every documented route, and 405 for every other method on its path",
        .enabled(if: isRoot, "needs root"))
    func daemonAnswersDocumentedRoutes() throws {
        let daemon = try DaemonProcess(roles: #"director = ["uid:4001"]"#)
        #expect(daemon.waitUntilServing(), "\(daemon.log)")
        let documented = try DocumentedRoutes.documented()
        var methodsByPath: [String: Set<String>] = [:]
        for route in documented {
            let parts = route.split(separator: " ", maxSplits: 1).map(String.init)
            methodsByPath[parts[1], default: []].insert(parts[0])
        }
        for (template, methods) in methodsByPath {
            let path = template.replacingOccurrences(of: "{case_id}", with: String(repeating: "0", count: 32))
                .replacingOccurrences(of: "{record_id}", with: String(repeating: "0", count: 32))
                .replacingOccurrences(of: "{user}", with: "uid:4002")
            for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
                let reply = try Client.request(daemon, method, path, as: Peer(uid: 4001), body: "{}")
                if methods.contains(method) {
                    #expect(
                        reply.status != 405 && reply.problemType != "route-not-found",
                        "\(method) \(template): \(reply.status)")
                } else {
                    #expect(
                        reply.status == 405 && reply.problemType == "method-not-allowed",
                        "\(method) \(template): \(reply.status)")
                }
            }
        }
        #expect(daemon.stop() == 0, "\(daemon.log)")
    }
}

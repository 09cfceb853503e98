import ArgumentParser

extension CaseVaultCtl {
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The daemon's health and state (the state needs the operator role)."
        )

        @OptionGroup var connection: Connection

        func run() async throws {
            var serving = true
            try await runReporting { () throws(CLIError) in
                let client = try self.connection.client()
                // 503 from health is an answer too: the daemon refuses requests and says why.
                let health = try await client.get("/v1/health")
                guard health.status == 200 || health.status == 503 else { throw CLIError.from(health) }
                serving = health.status == 200
                let status = try await client.get("/v1/admin/status")
                guard status.status == 200 else { throw CLIError.from(status) }
                let sealed = (status.json["sealed"] as? Bool) ?? true
                let audit = status.json["audit"] as? [String: Any] ?? [:]
                let reason = status.json["reason"] as? String
                var document: [String: Any] = [
                    "socket": client.socketPath, "health": health.json["status"] ?? "",
                    "state": status.json["state"] ?? "",
                    "sealed": sealed, "audit": audit,
                ]
                document["reason"] = reason
                var rows = [
                    ("socket", client.socketPath),
                    ("health", health.json["status"] as? String ?? "?"),
                    ("state", status.json["state"] as? String ?? "?"),
                    ("sealed", sealed ? "yes" : "no"),
                    (
                        "audit log",
                        "\(audit["entries"] as? Int ?? 0) entries, "
                            + ((audit["writable"] as? Bool ?? false) ? "writable" : "NOT writable")
                    ),
                ]
                if let keys = status.json["keys"] as? [String: Any] {
                    document["keys"] = keys
                    var text = keys["source"] as? String == "passphrase" ? "passphrase" : "file or credential"
                    if keys["initialised"] as? Bool == false { text += ", not initialised (casevaultctl init)" }
                    if let shares = keys["shares"] as? Int, let threshold = keys["threshold"] as? Int {
                        text += ", \(shares) of \(threshold) recovery shares given"
                    }
                    rows.append(("key source", text))
                }
                if let reason { rows.append(("reason", reason)) }
                output(json: self.connection.json, document: document, rows: rows)
            }
            if !serving { throw ExitCode(ExitStatus.failed) }
        }
    }
}

internal import CaseVaultAudit
internal import CaseVaultCore
internal import CaseVaultCrypto
internal import CaseVaultStore
internal import Foundation
internal import TOMLKit

// What decoding cannot check: ranges, paths, names the host must have.
extension DaemonConfiguration {
    func validate() throws(CaseVaultError) {
        guard !self.store.dataDirectory.isEmpty else {
            throw CaseVaultError(
                .invalidConfiguration, "store.data_directory must not be empty", field: "store.data_directory")
        }
        guard !self.store.rootKeyFile.isEmpty else {
            throw CaseVaultError(
                .invalidConfiguration, "store.root_key_file must not be empty", field: "store.root_key_file")
        }
        guard !self.server.socketPath.isEmpty else {
            throw CaseVaultError(
                .invalidConfiguration, "server.socket_path must not be empty", field: "server.socket_path")
        }
        guard (1...(64 << 20)).contains(self.server.maxBodyBytes) else {
            throw CaseVaultError(
                .invalidConfiguration,
                "server.max_body_bytes must be from 1 to 67108864",
                field: "server.max_body_bytes"
            )
        }
        try Self.check(self.server.maxAttachmentBytes, in: 1...(1 << 40), "server.max_attachment_bytes")
        try Self.check(self.server.maxJSONDepth.map(Int64.init), in: 2...256, "server.max_json_depth")
        try Self.check(self.server.maxHeaderBytes.map(Int64.init), in: 1024...(1 << 20), "server.max_header_bytes")
        try Self.check(self.server.readTimeoutSeconds.map(Int64.init), in: 1...3600, "server.read_timeout_seconds")
        try Self.check(self.server.maxConnections.map(Int64.init), in: 1...65536, "server.max_connections")
        try Self.check(
            self.server.maxConnectionsPerUser.map(Int64.init), in: 1...65536, "server.max_connections_per_user")
        try Self.check(self.retention.sweepBatch.map(Int64.init), in: 1...100_000, "retention.sweep_batch")
        try Self.check(self.statistics.k.map(Int64.init), in: 2...1000, "statistics.k")
        try Self.check(self.audit.checkpointEvery.map(Int64.init), in: 1...1_000_000, "audit.checkpoint_every")
        try Self.check(self.audit.rotateMiB.map(Int64.init), in: 0...65536, "audit.rotate_mib")
        try Self.check(self.audit.keepFiles.map(Int64.init), in: 0...100_000, "audit.keep_files")
        try Self.check(self.audit.readFlushMs.map(Int64.init), in: 1...1000, "audit.read_flush_ms")
        try Self.check(self.backup.retentionDays.map(Int64.init), in: 1...3650, "backup.retention_days")
        if let file = self.backup.keyFile, file.isEmpty {
            throw CaseVaultError(.invalidConfiguration, "backup.key_file must not be empty", field: "backup.key_file")
        }
        if let file = self.backup.ledgerFile, file.isEmpty {
            throw CaseVaultError(
                .invalidConfiguration, "backup.ledger_file must not be empty", field: "backup.ledger_file")
        }
        if let source = self.keys.source, !Keys.sources.contains(source) {
            throw CaseVaultError(
                .invalidConfiguration, "keys.source must be file, systemd-credential or passphrase",
                field: "keys.source")
        }
        // The floor is libsodium's interactive cost: below it a stolen key file yields to guessing.
        let floor = PasswordHash.Limits.floor
        try Self.check(
            self.keys.argon2Operations.map(Int64.init), in: Int64(floor.operations)...20, "keys.argon2_operations")
        try Self.check(
            self.keys.argon2MemoryMiB.map(Int64.init), in: Int64(floor.memoryBytes >> 20)...4096,
            "keys.argon2_memory_mib")
        if let name = self.keys.credential, name.isEmpty || name.contains("/") || name.hasPrefix(".") {
            throw CaseVaultError(
                .invalidConfiguration, "keys.credential must be a plain file name", field: "keys.credential")
        }
        for (category, office) in self.offices.sorted(by: { $0.key < $1.key }) {
            guard RecordValidator.disclosureCategories.contains(category) else {
                throw CaseVaultError(
                    .invalidConfiguration,
                    "offices has a key that is not a disclosure category; the categories are "
                        + RecordValidator.disclosureCategories.sorted().joined(separator: ", "),
                    field: "offices"
                )
            }
            guard Role.isOfficeName(office) else {
                throw CaseVaultError(
                    .invalidConfiguration,
                    "offices.\(category) must be an office name: lowercase letters, digits, - and _",
                    field: "offices.\(category)"
                )
            }
        }
        try self.validateStorage()
        guard (1...(64 << 20)).contains(self.store.maxContentBytes) else {
            throw CaseVaultError(
                .invalidConfiguration,
                "store.max_content_bytes must be from 1 to 67108864",
                field: "store.max_content_bytes"
            )
        }
    }

    static func check(_ value: Int64?, in range: ClosedRange<Int64>, _ key: String) throws(CaseVaultError) {
        guard let value else { return }
        guard range.contains(value) else {
            throw CaseVaultError(
                .invalidConfiguration, "\(key) must be from \(range.lowerBound) to \(range.upperBound)", field: key
            )
        }
    }
}

internal import CaseVaultCore
internal import CaseVaultFiles

/// The data directory's layout: the index, the key slots, the sealed segments, the audit log and the
/// attachments, each under the directory's permission rules.
extension DataDirectory {
    var indexPath: String { self.path + "/index.sqlite" }
    var slotsPath: String { self.path + "/keyslots" }
    var segmentsPath: String { self.path + "/segments" }
    var auditPath: String { self.path + "/audit" }
    var attachmentsPath: String { self.path + "/attachments" }
    /// Present once `casevaultctl migrate` wrote the vault out for PostgreSQL (`RecordStore.refuseMoved`).
    var movedPath: String { self.path + "/moved" }

    /// Creates the directory (0700) if it is missing, then checks ownership and mode.
    static func prepare(path: String) throws(CaseVaultError) -> DataDirectory {
        let directory = DataDirectory(path: path)
        try Self.makeDirectory(path, createParents: true)
        return directory
    }
}

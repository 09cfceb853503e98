internal import CCaseVaultShims
package import CaseVaultFiles
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

extension RecordStore {
    /// Filesystems whose `fdatasync` ends with a device flush and that overwrite a file's existing blocks
    /// in place (not btrfs or ZFS, which write anew and must commit their trees).
    static let inPlaceFilesystems: Set<UInt> = [
        0xEF53,  // ext2, ext3, ext4
        0x5846_5342,  // xfs
    ]

    /// Lets `rider` ride on this store's flushes when it lies on the same device and an in-place
    /// filesystem; returns whether it may. Otherwise the rider flushes on its own, as before.
    @discardableResult
    package func letRide(_ rider: any FlushRider) -> Bool {
        var ours = stat()
        var theirs = stat()
        var type: UInt = 0
        guard stat(self.directory.segmentsPath, &ours) == 0, stat(rider.ridingPath, &theirs) == 0,
            ours.st_dev == theirs.st_dev,
            casevault_filesystem_type(self.directory.segmentsPath, &type) == 0,
            Self.inPlaceFilesystems.contains(type)
        else {
            self.rider.withLock { $0 = nil }
            return false
        }
        // A closed store flushes nothing more, and would keep the rider (which keeps it) to the end. Checked
        // under the rider's lock: `close` marks the store closed before it takes that lock to let go.
        return self.rider.withLock { current in
            guard !self.isClosed else { return false }
            current = rider
            return true
        }
    }
}

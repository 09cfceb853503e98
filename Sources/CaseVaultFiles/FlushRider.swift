/// Another file whose written bytes may ride on the store's next flush: the audit log. One device flush
/// then makes a batch of puts and the audit entries written before it durable together, instead of two
/// flushes that the disk serves one after the other.
///
/// The store calls `prepareRide` just before it flushes a batch's segment, which sends every byte the
/// rider has written to the device (`sync_file_range`, no device flush: it waits for the pages already
/// being written, then starts every dirty page); `board`, which waits until the writes under way are done
/// and starts none for pages written after `prepareRide`; and `rode` once the segment's flush, begun
/// after that, has returned: its `fdatasync` ends with a flush of the device's cache, which carries the
/// rider's blocks too. That is durable only when the rider's bytes overwrite blocks the file already has
/// (no size or extent change to commit) on a filesystem that writes in place, on the same device: the
/// store lets a file ride only on ext4 and xfs and only on its own device, and the rider answers `nil`
/// whenever it needs a flush of its own (to write again what a failed flush lost, or to write a head); it
/// grows only with a flush of its own, before it writes in the new space.
public protocol FlushRider: AnyObject, Sendable {
    /// The file that rides (its device and filesystem are checked).
    var ridingPath: String { get }
    /// Sends what was written so far to the device (it may wait for writes already under way) and returns
    /// a token for `board` and `rode`, or `nil` when nothing needs to ride or it cannot (a write that
    /// failed, among other reasons).
    func prepareRide() -> UInt64?
    /// Waits until the writeback `prepareRide` started is complete; `false` when it failed (no ride).
    func board(_ token: UInt64) -> Bool
    /// A device flush that began after `board(token)` returned `true` has completed.
    func rode(_ token: UInt64)
}

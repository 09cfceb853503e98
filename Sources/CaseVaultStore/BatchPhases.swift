internal import Dispatch

/// Where a put batch's leader spends its time, summed over the batches that were acknowledged: for `make
/// bench`'s "where the time goes" line of the in-process puts (the figures a profiler would give, at the
/// cost of six clock reads and two atomic loads a batch).
package struct BatchPhases: Sendable, Equatable {
    /// Batches summed.
    package var batches = 0
    /// Slots taken from the allocator and checked against the index (`takeUnownedSlots`).
    package var slotsNanoseconds: UInt64 = 0
    /// Data keys wrapped into their slots and frames encoded.
    package var framesNanoseconds: UInt64 = 0
    /// Frames and slots written to the page cache.
    package var writesNanoseconds: UInt64 = 0
    /// The device flush (the segment's, and the slots' when the batch settles), with the audit log's ride
    /// on it (its pages sent to the device with the frames').
    package var flushNanoseconds: UInt64 = 0
    /// The index commit of the batch's rows, its wait for a checkpoint left out.
    package var commitNanoseconds: UInt64 = 0
    /// The wait of a settling batch's flushed commit for a checkpoint of the index's WAL in flight
    /// (`Index.Checkpoints`, which run off the writer once the WAL holds
    /// `StoreConfiguration.indexCheckpointFrames`), with that of a flushed commit ahead of it on the writer
    /// (the audit anchor's, say); a batch that does not settle waits for none of its own.
    package var checkpointNanoseconds: UInt64 = 0

    package init() {}

    /// Each phase's name (as `make bench` records its figure) and field, in the order a batch goes
    /// through them.
    package static var phases: [(name: String, field: WritableKeyPath<BatchPhases, UInt64>)] {
        [
            ("slots", \.slotsNanoseconds), ("frames", \.framesNanoseconds), ("writes", \.writesNanoseconds),
            ("flush", \.flushNanoseconds), ("commit", \.commitNanoseconds), ("checkpoint", \.checkpointNanoseconds),
        ]
    }

    /// What was summed between `earlier` and this.
    package func since(_ earlier: BatchPhases) -> BatchPhases {
        var difference = BatchPhases()
        difference.batches = self.batches - earlier.batches
        for (_, field) in Self.phases {
            difference[keyPath: field] = self[keyPath: field] - earlier[keyPath: field]
        }
        return difference
    }

    /// Times one batch's phases, each from the end of the one before; `add` sums them when it is done.
    struct Clock {
        private var last = DispatchTime.now().uptimeNanoseconds
        private(set) var phases = BatchPhases()

        init() {
            self.phases.batches = 1
        }

        /// Starts the next phase now: the time since the last phase ended was no phase's.
        mutating func restart() {
            self.last = DispatchTime.now().uptimeNanoseconds
        }

        /// Ends the phase at `keyPath`, of which `checkpoint` nanoseconds were a wait for a checkpoint.
        mutating func end(_ keyPath: WritableKeyPath<BatchPhases, UInt64>, checkpoint: UInt64 = 0) {
            let now = DispatchTime.now().uptimeNanoseconds
            let checkpoint = min(checkpoint, now - self.last)
            self.phases[keyPath: keyPath] += now - self.last - checkpoint
            self.phases.checkpointNanoseconds += checkpoint
            self.last = now
        }
    }

    mutating func add(_ other: BatchPhases) {
        self.batches += other.batches
        for (_, field) in Self.phases {
            self[keyPath: field] += other[keyPath: field]
        }
    }
}

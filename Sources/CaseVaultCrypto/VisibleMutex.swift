#if CASEVAULT_TSAN
#if canImport(Glibc)
import Glibc
#endif

/// `Synchronization.Mutex` for ThreadSanitizer builds only (`make test-tsan` compiles with `-DCASEVAULT_TSAN`): the
/// same `withLock` and `withLockIfAvailable` on a pthread mutex, which TSan intercepts. On Linux the standard Mutex
/// locks through a futex system call inside `libswiftSynchronization.so`, which is not instrumented, so TSan sees no
/// order between two holders of the lock and reports every access inside `withLock` as a race. Each module that uses
/// Mutex names this one `Mutex` in such builds (`TSanMutex.swift`); no other build has it.
public struct VisibleMutex<Value: ~Copyable>: ~Copyable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let value: UnsafeMutablePointer<Value>

    public init(_ initialValue: consuming sending Value) {
        self.mutex = .allocate(capacity: 1)
        pthread_mutex_init(self.mutex, nil)
        self.value = .allocate(capacity: 1)
        self.value.initialize(to: initialValue)
    }

    deinit {
        self.value.deinitialize(count: 1)
        self.value.deallocate()
        pthread_mutex_destroy(self.mutex)
        self.mutex.deallocate()
    }

    public borrowing func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        return try body(&self.value.pointee)
    }

    public borrowing func withLockIfAvailable<Result: ~Copyable, E: Error>(
        _ body: (inout Value) throws(E) -> sending Result
    ) throws(E) -> sending Result? {
        guard pthread_mutex_trylock(self.mutex) == 0 else { return nil }
        defer { pthread_mutex_unlock(self.mutex) }
        return try body(&self.value.pointee)
    }
}

extension VisibleMutex: @unchecked Sendable where Value: ~Copyable {}
#endif

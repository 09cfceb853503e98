internal import CSodium
internal import Synchronization

/// A pool of 32-byte cells in one `sodium_malloc` region (guard pages, mlock), for ephemeral keys.
/// A cell is zeroed when it is given back. When every cell is taken, callers fall back to a region of
/// their own, so the arena bounds nothing but its own size.
// @unchecked: `base` never changes after init; each cell is owned by exactly one holder between take and give.
final class KeyArena: @unchecked Sendable {
    static let cellSize = 32
    static let cellCount = 4096
    static let shared = KeyArena()

    private let base: UnsafeMutableRawPointer?
    private let free: Mutex<[Int]>

    private init() {
        Sodium.ready()
        let size = Self.cellSize * Self.cellCount
        let base = sodium_malloc(size)
        if let base {
            sodium_memzero(base, size)
        }
        self.base = base
        self.free = Mutex(base == nil ? [] : Array((0..<Self.cellCount).reversed()))
    }

    func take() -> Int? {
        self.free.withLock { $0.popLast() }
    }

    func pointer(_ cell: Int) -> UnsafeMutableRawPointer {
        self.base! + cell * Self.cellSize
    }

    func give(_ cell: Int) {
        sodium_memzero(self.pointer(cell), Self.cellSize)
        self.free.withLock { $0.append(cell) }
    }
}

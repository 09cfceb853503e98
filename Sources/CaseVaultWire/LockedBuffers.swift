internal import CaseVaultCrypto
@_spi(CustomByteBufferAllocator) package import NIOCore

extension ByteBufferAllocator {
    /// Buffers whose storage is in locked memory (`LockedMemory`: `sodium_malloc`, zeroed when NIO frees
    /// it), for bytes that must leave through NIO but never lie in the ordinary heap: the daemon's answer
    /// with recovery shares, and `casevaultctl`'s request with a passphrase or share. Uses NIO's
    /// `CustomByteBufferAllocator` SPI, the one way to give a `ByteBuffer` memory of one's own.
    package static let locked = ByteBufferAllocator(
        allocate: { size in LockedMemory.allocate(size) },
        reallocate: { pointer, oldSize, newSize in LockedMemory.reallocate(pointer, oldSize: oldSize, newSize: newSize)
        },
        deallocate: { pointer in LockedMemory.free(pointer) },
        copy: { destination, source, count in destination.copyMemory(from: source, byteCount: count) }
    )
}

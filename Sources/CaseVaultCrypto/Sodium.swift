internal import CSodium

/// The one place libsodium is initialised. Every public entry point of this module calls
/// `Sodium.ready()` before it touches libsodium; `sodium_init` itself is idempotent and thread-safe,
/// the `let` makes sure it runs once per process.
enum Sodium {
    private static let initialized: Bool = sodium_init() >= 0

    static func ready() {
        precondition(Self.initialized, "libsodium failed to initialise")
    }
}

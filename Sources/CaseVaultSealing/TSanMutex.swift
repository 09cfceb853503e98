#if CASEVAULT_TSAN
internal import CaseVaultCrypto

/// In ThreadSanitizer builds, the Mutex TSan can see (CaseVaultCrypto/VisibleMutex.swift).
typealias Mutex<Value: ~Copyable> = VisibleMutex<Value>
#endif

#if CASEVAULT_TSAN

/// In ThreadSanitizer builds, the Mutex TSan can see (CaseVaultCrypto/VisibleMutex.swift).
typealias Mutex<Value: ~Copyable> = VisibleMutex<Value>
#endif

// casevault-fuzz: the fuzz targets of Sources/CaseVaultFuzz as one program; CASEVAULT_FUZZ_TARGET names
// the target.
//
// `make fuzz` (scripts/fuzz.sh) builds it with `--sanitize=fuzzer --sanitize=address` and
// `-DCASEVAULT_LIBFUZZER`: SwiftPM then compiles the program as a library and links libFuzzer's own main,
// which calls `LLVMFuzzerTestOneInput` (FuzzMain.swift); an entry point here would define `main` twice.
// Built without libFuzzer (`swift build`), the entry point below replays the files it is given through
// the target, without a sanitizer.
#if !CASEVAULT_LIBFUZZER
@main
enum Entry {
    static func main() {
        FuzzMain.run()
    }
}
#endif

/// The text of a NUL-terminated C string held in an array (as mkdtemp(3) and mkstemp(3) fill one in).
func cString(_ characters: [CChar]) -> String {
    String(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

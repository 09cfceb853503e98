import CaseVaultCore
import Testing

/// Ids and the hexadecimal they are spelled in: what goes into every key slot's and blob's associated
/// data must be exactly the id's 16 bytes, and nothing but lowercase hexadecimal may pass for one.
@Suite("Identifiers and hexadecimal")
struct IdentifierTests {
    @Test("an id's bytes spell the id back, for every byte value")
    func bytesRoundTrip() throws {
        for first in stride(from: 0, through: 255, by: 16) {
            let bytes = (0..<16).map { UInt8((first + $0 * 17) & 0xff) }
            let id = RecordID(bytes: bytes)
            #expect(id.bytes == bytes)
            #expect(try RecordID(id.rawValue) == id)
        }
        #expect(Hex.decode("00ff7fa0") == [0x00, 0xff, 0x7f, 0xa0])
        #expect(Hex.decode("") == [])
    }

    @Test(
        "anything but lowercase hexadecimal of even length is refused",
        arguments: [
            "0", "abc", "0A", "ff:0", "g0", "0/", "`0", "0 ", "é", "00\u{0}0",
        ])
    func refused(_ text: String) {
        #expect(Hex.decode(text) == nil)
    }

    @Test(
        "an id is 32 lowercase hexadecimal characters and nothing else",
        arguments: [
            "", String(repeating: "a", count: 31), String(repeating: "a", count: 33), String(repeating: "A", count: 32),
            String(repeating: "0", count: 31) + "g", "/" + String(repeating: "0", count: 31),
            String(repeating: "0", count: 30) + "é",
        ])
    func idRefused(_ text: String) {
        #expect(throws: CaseVaultError.self) { try RecordID(text) }
    }
}

import CaseVaultStore
import Testing

/// The shred protocol as a state machine, without files: the order of its steps, what a reader and a crash
/// find between them, and where a shred found marked resumes.
@Suite("The shred protocol")
struct ShredProgressTests {
    /// Every state an ordered shred passes through, with the step that runs next.
    static func run(from start: ShredProgress) -> [ShredProgress] {
        var progress = start
        var states = [progress]
        while let step = progress.next {
            progress.finished(step)
            states.append(progress)
        }
        return states
    }

    @Test("an ordered shred marks, destroys the key, then the ciphertext, then removes the row: each once")
    func order() {
        let steps = Self.run(from: .ordered).compactMap(\.next)
        #expect(steps == [.mark, .overwriteKeySlots, .destroyCiphertext, .removeFromIndex])
        #expect(Self.run(from: .ordered).last?.isComplete == true)
    }

    @Test("content is readable until the key slot's overwrite is durable, never after")
    func readableUntilTheKeyIsGone() {
        for state in Self.run(from: .ordered) {
            let keyGone = state.next.map { $0 > .overwriteKeySlots } ?? true
            #expect(state.contentReadable == !keyGone, "\(state)")
        }
    }

    @Test("a crash after the mark and before the row's removal leaves the record marked, for the next open")
    func crashLeavesItMarked() {
        let states = Self.run(from: .ordered)
        #expect(states.map(\.markedInIndex) == [false, true, true, true, false])
    }

    @Test("a shred found marked runs everything after the mark again, the key slot's overwrite first")
    func resumedRunsTheRestAgain() {
        let steps = Self.run(from: .resumed).compactMap(\.next)
        #expect(steps == [.overwriteKeySlots, .destroyCiphertext, .removeFromIndex])
        #expect(ShredProgress.resumed.contentReadable, "a resumed shred trusts no earlier overwrite")
        #expect(ShredProgress.resumed.markedInIndex)
    }
}

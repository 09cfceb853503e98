import CaseVaultAudit
import CaseVaultCore
import CaseVaultServer
import Testing

/// The route table's policy columns against the other lists they must agree with.
@Suite("The route table's policy")
struct RouteTableTests {
    @Test(
        "every row's check fits its actions: a whole check only where roles alone decide, a per-case check only where a case does"
    )
    func accessFitsTheTable() {
        #expect(API.accessMismatches == [])
    }

    @Test("the routes a sealed daemon serves are exactly those the audit log accepts without a MAC")
    func sealedRoutesMatchTheAuditLog() {
        #expect(Set(API.servedWhileSealed.map(\.description)) == AuditChain.servedWhileSealed)
    }

    @Test("a route that answers when the audit log cannot be written only reads, and is served while sealed")
    func unauditedRoutesOnlyRead() {
        #expect(!API.answeredWithoutAudit.isEmpty)
        for route in API.answeredWithoutAudit {
            #expect(route.method.rawValue == "GET" && API.servedWhileSealed.contains(route), "\(route)")
        }
    }
}

internal import CaseVaultCore
internal import CaseVaultStore
internal import Hummingbird
internal import NIOCore

/// The operator's metrics.
extension Routes {
    /// `GET /v1/metrics`: Prometheus' text exposition (version 0.0.4) of `ServerMetrics`, its gauges set
    /// from the daemon's state now. Served while sealed and while the audit log cannot be written, which
    /// are among the things it reports.
    func metricsExposition(_ request: Request, _ context: CaseVaultContext) async throws -> Response {
        let sealed = self.keeper.isSealed
        let footprint =
            sealed ? nil : try? await self.run { store throws(CaseVaultError) in try store.footprint() }
        let text = self.metrics.exposition(
            ServerMetrics.State(
                sealed: sealed, auditWritable: self.audit.failure == nil, auditEntries: self.audit.entries,
                auditUnflushedBatches: self.audit.unflushedBatches, footprint: footprint))
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: text)))
    }
}

internal import CoreMetrics
internal import Prometheus
internal import Synchronization

/// What the operator watches (`GET /v1/metrics`, `casevaultctl metrics`): requests by route template and
/// status, the store's operations by kind, and the daemon's state. swift-metrics' types, made by a
/// Prometheus factory of this server's own (no process-wide bootstrap: each server, in-process tests'
/// among them, keeps its own registry). Every label is a route template, a status code or a fixed word:
/// never an id, a name, a category or content, so the exposition says how much and how fast, not who or what.
final class ServerMetrics: Sendable {
    /// The store operations counted apart from their routes.
    enum Operation: String, Sendable {
        case put, get, shred, sweep
    }

    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let gauges: [String: CoreMetrics.Gauge]

    /// From a tenth of a millisecond (a GET in process) to half a minute (a sweep of a large vault).
    static let durationBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
        .seconds(30),
    ]

    static let gaugeNames = [
        "casevault_sealed", "casevault_audit_writable", "casevault_audit_entries", "casevault_audit_unflushed_batches",
    ]
    /// The store's gauges, in the registry only while the store is open: a sealed daemon shows none rather
    /// than zeros or the figures of before it was sealed.
    private let storeGauges = Mutex<(records: Prometheus.Gauge, bytes: Prometheus.Gauge)?>(nil)

    /// The store's size is shown in whole units of this many bytes.
    static let storeBytesUnit: Int64 = 1 << 20

    init() {
        var factory = PrometheusMetricsFactory(registry: self.registry)
        factory.defaultDurationHistogramBuckets = Self.durationBuckets
        self.factory = factory
        self.gauges = Dictionary(
            uniqueKeysWithValues: Self.gaugeNames.map {
                ($0, CoreMetrics.Gauge(label: $0, dimensions: [], factory: factory))
            })
    }

    /// The handles of one route, made once when the router is built: a request then only looks up its
    /// status's counter.
    final class RouteMetrics: Sendable {
        private let metrics: ServerMetrics
        private let route: String
        private let duration: CoreMetrics.Timer
        /// For a route that is a store operation: its duration, and its count by outcome (done, refused,
        /// failed).
        private let operation: (duration: CoreMetrics.Timer, outcomes: [String: CoreMetrics.Counter])?
        private let byStatus = Mutex<[Int: CoreMetrics.Counter]>([:])

        fileprivate init(_ metrics: ServerMetrics, route: String, operation: Operation?) {
            self.metrics = metrics
            self.route = route
            self.duration = metrics.timer("casevault_request_duration_seconds", [("route", route)])
            self.operation = operation.map { operation in
                (
                    metrics.timer("casevault_operation_duration_seconds", [("operation", operation.rawValue)]),
                    Dictionary(
                        uniqueKeysWithValues: ["done", "refused", "failed"].map { outcome in
                            (
                                outcome,
                                metrics.counter(
                                    "casevault_operations_total",
                                    [("operation", operation.rawValue), ("outcome", outcome)])
                            )
                        })
                )
            }
        }

        /// One request the route answered, with its status and its time in the route (from the router's
        /// check to the answer being ready: a write's answer then waits for its audit entry's flush).
        func record(status: Int, duration: Duration) {
            let counter = self.byStatus.withLock { counters in
                if let counter = counters[status] { return counter }
                let counter = self.metrics.counter(
                    "casevault_requests_total", [("route", self.route), ("status", String(status))])
                counters[status] = counter
                return counter
            }
            counter.increment()
            self.duration.recordNanoseconds(duration.nanoseconds)
            guard let operation = self.operation else { return }
            operation.outcomes[status < 400 ? "done" : status < 500 ? "refused" : "failed"]?.increment()
            operation.duration.recordNanoseconds(duration.nanoseconds)
        }
    }

    /// The handles of the route `route` (its template: `GET /v1/records/{record_id}`), which is the store
    /// operation `operation` when there is one.
    func route(_ route: String, operation: Operation?) -> RouteMetrics {
        RouteMetrics(self, route: route, operation: operation)
    }

    /// The daemon's state as of now, set just before an exposition.
    struct State {
        var sealed: Bool
        var auditWritable: Bool
        var auditEntries: UInt64
        var auditUnflushedBatches: UInt64
        /// Nil while sealed: the store is not open.
        var footprint: (liveRecords: Int, bytes: Int64)?
    }

    /// The exposition in Prometheus' text format, after setting the state's gauges.
    func exposition(_ state: State) -> [UInt8] {
        self.gauges["casevault_sealed"]?.record(state.sealed ? 1 : 0)
        self.gauges["casevault_audit_writable"]?.record(state.auditWritable ? 1 : 0)
        self.gauges["casevault_audit_entries"]?.record(Int64(clamping: state.auditEntries))
        self.gauges["casevault_audit_unflushed_batches"]?.record(Int64(clamping: state.auditUnflushedBatches))
        self.storeGauges.withLock { gauges in
            guard let footprint = state.footprint else {
                if let (records, bytes) = gauges {
                    self.registry.unregisterGauge(records)
                    self.registry.unregisterGauge(bytes)
                    gauges = nil
                }
                return
            }
            let (records, bytes) =
                gauges ?? (
                    self.registry.makeGauge(
                        descriptor: MetricNameDescriptor(
                            namespace: "casevault", metricName: "live", unitName: "records",
                            helpText: "Live records, case headers not counted.")),
                    self.registry.makeGauge(
                        descriptor: MetricNameDescriptor(
                            namespace: "casevault", metricName: "store", unitName: "bytes",
                            helpText:
                                "What the vault takes, in whole MiB: its data directory's files, or its tables in PostgreSQL."
                        ))
                )
            gauges = (records, bytes)
            records.set(Double(footprint.liveRecords))
            // Whole MiB: an exact size sampled every scrape would show each filing's sealed size.
            bytes.set(Double(footprint.bytes / Self.storeBytesUnit * Self.storeBytesUnit))
        }
        return self.registry.emitToBuffer()
    }

    /// A counter of `name` with `labels`: the registry keeps one metric per name and labels, so asking again
    /// counts into the same one. Called as routes are set up and once per new status of a route.
    fileprivate func counter(_ name: String, _ labels: [(String, String)]) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: name, dimensions: labels, factory: self.factory)
    }

    fileprivate func timer(_ name: String, _ labels: [(String, String)]) -> CoreMetrics.Timer {
        CoreMetrics.Timer(label: name, dimensions: labels, factory: self.factory)
    }
}

extension Duration {
    /// The whole nanoseconds of a duration, clamped to Int64.
    fileprivate var nanoseconds: Int64 {
        let (seconds, attoseconds) = self.components
        return seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow
            ? .max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

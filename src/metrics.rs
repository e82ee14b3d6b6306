//! lumberd's own metrics, served in Prometheus' text format on the admin port.
//!
//! Names follow Prometheus' conventions: a `lumberd_` prefix, base units (`_seconds`,
//! `_bytes`), `_total` on counters. Every label has a fixed set of values (a reason, a
//! kind, an outcome), never a client-supplied string, so the number of series is bounded
//! whatever the clients send. Series with a known label set are created at start, so a
//! dashboard sees 0 instead of nothing.
//!
//! Hot paths hold the metric handles themselves (an atomic add each); values that are
//! cheaper to read than to track (the in-flight budget, the queue depth) are read when
//! the metrics are scraped.

use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::protocol::ProtocolError;

/// Seconds from a window's last frame to its ACK: from the file output's fsync (ms) to an
/// Elasticsearch under backpressure (seconds, up to `server.stall_timeout`).
const ACK_LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];
/// Seconds per `_bulk` request.
const BULK_LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Why connections end: the `reason` label of `lumberd_connections_closed_total`.
pub const CLOSE_REASONS: [&str; 9] = [
    "closed",
    "probe",
    "shutdown",
    "protocol_error",
    "io_error",
    "idle",
    "stalled",
    "delivery_failed",
    "tls_handshake_failed",
];

/// Frame types as the `type` label of `lumberd_frames_received_total`.
pub const FRAME_TYPES: [&str; 4] = ["window", "compressed", "json", "data"];

/// The registry and the handles every part records into.
pub struct Metrics {
    registry: Registry,
    pub receive: ReceiveMetrics,
    pub output: OutputMetrics,
    /// 1 while /readyz says ready.
    pub ready: IntGauge,
    /// Log lines not written because the same warning was written recently.
    pub log_suppressed: IntCounter,
    /// Refreshes gauges read at scrape time (budget, queue depth, certificate expiry).
    on_scrape: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

/// The receive side: connections, frames, windows, ACKs, the in-flight budget.
#[derive(Clone)]
pub struct ReceiveMetrics {
    pub connections_active: IntGauge,
    pub connections: IntCounter,
    pub connections_rejected_max: IntCounter,
    closed: IntCounterVec,
    frames: [IntCounter; 4],
    pub events: IntCounter,
    pub windows_acknowledged: IntCounter,
    pub ack_latency: Histogram,
    pub keepalives: IntCounter,
    pub received_bytes: IntCounter,
    pub inflated_bytes: IntCounter,
    decode_errors: IntCounterVec,
    pub inflight_events: IntGauge,
    pub inflight_bytes: IntGauge,
    pub inflight_bytes_limit: IntGauge,
    pub queue_batches: IntGauge,
    pub queue_batches_capacity: IntGauge,
}

/// The output side, whichever output runs.
#[derive(Clone)]
pub struct OutputMetrics {
    events: IntCounterVec,
    bulk_requests: IntCounterVec,
    pub bulk_duration: Histogram,
    pub up: IntGauge,
    pub last_success: Gauge,
}

/// What happened to events at the output: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Stored (indexed by Elasticsearch, or written and fsynced to a file).
    Indexed,
    /// Already stored under its id: a resend (Elasticsearch 409 on `create`).
    Duplicate,
    /// Not stored on this attempt (429, 5xx, connection error); sent again.
    Retried,
    /// Refused for good, stored as a dead letter instead.
    DeadLettered,
}

impl EventOutcome {
    pub const ALL: [EventOutcome; 4] = [
        EventOutcome::Indexed,
        EventOutcome::Duplicate,
        EventOutcome::Retried,
        EventOutcome::DeadLettered,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EventOutcome::Indexed => "indexed",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Retried => "retried",
            EventOutcome::DeadLettered => "dead_lettered",
        }
    }
}

/// How a `_bulk` request went: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkOutcome {
    /// Answered 200 and every item settled (stored, duplicate or rejected for good).
    Success,
    /// Answered 200 with some items to retry.
    Partial,
    /// Not answered, or answered 429/5xx/401/403 as a whole: sent again.
    Retried,
    /// Refused as a whole (400, 413): split, or its only item dead-lettered.
    Failed,
}

impl BulkOutcome {
    pub const ALL: [BulkOutcome; 4] = [
        BulkOutcome::Success,
        BulkOutcome::Partial,
        BulkOutcome::Retried,
        BulkOutcome::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            BulkOutcome::Success => "success",
            BulkOutcome::Partial => "partial",
            BulkOutcome::Retried => "retried",
            BulkOutcome::Failed => "failed",
        }
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

/// A counter vector with its series for `values` created at 0.
pub fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let v = IntCounterVec::new(Opts::new(name, help), &[label])?;
    registry.register(Box::new(v.clone()))?;
    for value in values {
        v.with_label_values(&[value]);
    }
    Ok(v)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    /// Registers every lumberd metric, the process metrics (CPU, memory, file
    /// descriptors) and `lumberd_build_info` in a fresh registry.
    pub fn new() -> prometheus::Result<Arc<Metrics>> {
        let r = Registry::new();
        let info = prometheus::IntGaugeVec::new(
            Opts::new(
                "lumberd_build_info",
                "Always 1; the version label says which lumberd runs.",
            ),
            &["version"],
        )?;
        r.register(Box::new(info.clone()))?;
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        let frames = counter_vec(
            &r,
            "lumberd_frames_received_total",
            "Lumberjack frames received, by type (frames inside compressed frames included).",
            "type",
            &FRAME_TYPES,
        )?;
        let receive = ReceiveMetrics {
            connections_active: gauge(&r, "lumberd_connections_active", "Open Beats connections.")?,
            connections: counter(
                &r,
                "lumberd_connections_total",
                "Beats connections accepted.",
            )?,
            connections_rejected_max: counter_vec(
                &r,
                "lumberd_connections_rejected_total",
                "Beats connections closed at once, by reason.",
                "reason",
                &["max_connections"],
            )?
            .with_label_values(&["max_connections"]),
            closed: counter_vec(
                &r,
                "lumberd_connections_closed_total",
                "Beats connections ended, by reason.",
                "reason",
                &CLOSE_REASONS,
            )?,
            frames: FRAME_TYPES.map(|t| frames.with_label_values(&[t])),
            events: counter(
                &r,
                "lumberd_events_received_total",
                "Events (data frames) received.",
            )?,
            windows_acknowledged: counter(
                &r,
                "lumberd_windows_acknowledged_total",
                "Windows acknowledged to clients (each once every event of it was durable).",
            )?,
            ack_latency: histogram(
                &r,
                "lumberd_ack_latency_seconds",
                "Time from a window's last frame received to its ACK sent.",
                &ACK_LATENCY_BUCKETS,
            )?,
            keepalives: counter(
                &r,
                "lumberd_keepalives_sent_total",
                "Keep-alive ACKs (ACK 0) sent while windows waited for the output.",
            )?,
            received_bytes: counter(
                &r,
                "lumberd_received_bytes_total",
                "Bytes read from Beats connections (after TLS, before inflating).",
            )?,
            inflated_bytes: counter(
                &r,
                "lumberd_inflated_bytes_total",
                "Bytes produced by inflating compressed frames.",
            )?,
            decode_errors: counter_vec(
                &r,
                "lumberd_decode_errors_total",
                "Connections closed for a protocol error, by kind.",
                "kind",
                &ProtocolError::KINDS,
            )?,
            inflight_events: gauge(
                &r,
                "lumberd_inflight_events",
                "Events received and not yet acknowledged.",
            )?,
            inflight_bytes: gauge(
                &r,
                "lumberd_inflight_bytes",
                "Bytes of the in-flight budget in use (events between sockets and the output).",
            )?,
            inflight_bytes_limit: gauge(
                &r,
                "lumberd_inflight_bytes_limit",
                "The in-flight budget: server.max_inflight_bytes.",
            )?,
            queue_batches: gauge(
                &r,
                "lumberd_queue_batches",
                "Batches waiting in the output queue.",
            )?,
            queue_batches_capacity: gauge(
                &r,
                "lumberd_queue_batches_capacity",
                "Size of the output queue: output.queue_batches.",
            )?,
        };
        let events_vec = counter_vec(
            &r,
            "lumberd_output_events_total",
            "Events at the output, by outcome (retried counts attempts).",
            "outcome",
            &EventOutcome::ALL.map(EventOutcome::label),
        )?;
        let output = OutputMetrics {
            events: events_vec,
            bulk_requests: counter_vec(
                &r,
                "lumberd_bulk_requests_total",
                "Elasticsearch _bulk requests, by outcome.",
                "outcome",
                &BulkOutcome::ALL.map(BulkOutcome::label),
            )?,
            bulk_duration: histogram(
                &r,
                "lumberd_bulk_request_duration_seconds",
                "Time from sending a _bulk request to its answer read (or its failure).",
                &BULK_LATENCY_BUCKETS,
            )?,
            up: gauge(
                &r,
                "lumberd_output_up",
                "1 while the output accepts events, 0 while it is failing (and retrying).",
            )?,
            last_success: {
                let g = Gauge::new(
                    "lumberd_output_last_success_timestamp_seconds",
                    "Unix time of the output's last successful write.",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
        };
        Ok(Arc::new(Metrics {
            ready: gauge(&r, "lumberd_ready", "1 while /readyz answers ready.")?,
            log_suppressed: counter(
                &r,
                "lumberd_log_messages_suppressed_total",
                "Log lines not written because the same warning was written recently.",
            )?,
            receive,
            output,
            registry: r,
            on_scrape: Mutex::new(Vec::new()),
        }))
    }

    /// Where other parts (the pipeline's log-derived metrics, TLS) register theirs.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `refresh` before every scrape, to set gauges read rather than tracked.
    pub fn on_scrape(&self, refresh: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut hooks) = self.on_scrape.lock() {
            hooks.push(Box::new(refresh));
        }
    }

    /// The text exposition format (version 0.0.4) of every metric.
    pub fn render(&self) -> Vec<u8> {
        if let Ok(hooks) = self.on_scrape.lock() {
            hooks.iter().for_each(|h| h());
        }
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on metric families that are invalid, which
        // registration has already refused.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

impl ReceiveMetrics {
    /// One connection ended for `reason` (one of [`CLOSE_REASONS`]).
    pub fn closed(&self, reason: &'static str) {
        self.closed.with_label_values(&[reason]).inc();
    }

    /// A frame of `kind` (an index into [`FRAME_TYPES`]).
    pub fn frame(&self, kind: FrameType) {
        self.frames[kind as usize].inc();
    }

    pub fn frames(&self, kind: FrameType, n: u64) {
        if n > 0 {
            self.frames[kind as usize].inc_by(n);
        }
    }

    /// A connection closed for a protocol error of `kind` (a fixed name).
    pub fn decode_error(&self, kind: &'static str) {
        self.decode_errors.with_label_values(&[kind]).inc();
    }
}

/// Positions in [`FRAME_TYPES`].
#[derive(Debug, Clone, Copy)]
pub enum FrameType {
    Window = 0,
    Compressed = 1,
    Json = 2,
    Data = 3,
}

impl OutputMetrics {
    pub fn events(&self, outcome: EventOutcome, n: usize) {
        if n > 0 {
            self.events
                .with_label_values(&[outcome.label()])
                .inc_by(n as u64);
        }
    }

    pub fn bulk_request(&self, outcome: BulkOutcome) {
        self.bulk_requests
            .with_label_values(&[outcome.label()])
            .inc();
    }

    /// A successful write: the output is up, as of now.
    pub fn succeeded(&self) {
        self.up.set(1);
        self.last_success.set(unix_now());
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lumberd_metric_follows_prometheus_naming_and_starts_at_zero() {
        let m = Metrics::new().unwrap();
        let text = String::from_utf8(m.render()).unwrap();
        for family in m.registry().gather() {
            let name = family.name();
            if name.starts_with("process_") {
                continue;
            }
            assert!(name.starts_with("lumberd_"), "{name}: no lumberd_ prefix");
            let is_counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(
                is_counter,
                name.ends_with("_total"),
                "{name}: counters and only counters end in _total"
            );
        }
        for series in [
            "lumberd_connections_closed_total{reason=\"stalled\"} 0",
            "lumberd_output_events_total{outcome=\"dead_lettered\"} 0",
            "lumberd_bulk_requests_total{outcome=\"partial\"} 0",
            "lumberd_frames_received_total{type=\"compressed\"} 0",
            "lumberd_connections_rejected_total{reason=\"max_connections\"} 0",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
        assert!(text.contains(&format!(
            "lumberd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn scrape_hooks_run_before_each_render() {
        let m = Metrics::new().unwrap();
        let g = m.receive.queue_batches.clone();
        let n = Arc::new(std::sync::atomic::AtomicI64::new(7));
        let n2 = n.clone();
        m.on_scrape(move || g.set(n2.load(std::sync::atomic::Ordering::Relaxed)));
        assert!(String::from_utf8(m.render())
            .unwrap()
            .contains("lumberd_queue_batches 7"));
        n.store(3, std::sync::atomic::Ordering::Relaxed);
        assert!(String::from_utf8(m.render())
            .unwrap()
            .contains("lumberd_queue_batches 3"));
    }
}

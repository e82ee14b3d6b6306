//! lumberd's own metrics, served in Prometheus' text format on the admin port: every
//! family is defined here, in typed parts (receive, pipeline, TLS, output) handed to
//! whoever records into them. Only the log-derived `[[pipeline.metric]]` families are
//! the pipeline's, registered through [`Metrics::registry`].
//!
//! Names follow Prometheus' conventions: a `lumberd_` prefix, base units (`_seconds`,
//! `_bytes`), `_total` on counters. Every label has a fixed set of values (a reason, a
//! kind, an outcome), never a client-supplied string, so the number of series is bounded
//! whatever the clients send: each label is a [`Label`] enum. Series with a known label
//! set are created at start, so a dashboard sees 0 instead of nothing.
//!
//! Hot paths hold the metric handles themselves (an atomic add each); values that are
//! cheaper to read than to track (the in-flight budget, the queue depth) are read when
//! the metrics are scraped.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::pipeline::{Failure, Outcome};
use crate::protocol::ErrorKind;
use crate::tls::{HandshakeFailure, Reload};

/// Seconds from a window's last frame to its ACK: from the file output's fsync (ms) to an
/// Elasticsearch under backpressure (seconds, up to `server.stall_timeout`).
const ACK_LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];
/// Seconds per `_bulk` request.
const BULK_LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// A bounded label: an enum whose every value is known, each with its fixed label.
pub trait Label: Copy + Eq + 'static {
    /// Every value, each once: the series created at 0.
    const ALL: &'static [Self];
    fn label(self) -> &'static str;

    /// Where `self` is in [`Label::ALL`].
    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|v| *v == self)
            .expect("ALL lists every value")
    }
}

/// Declares a label enum: its variants with their labels, `ALL` (in this order) and
/// `label()`, so the set of values is written once.
macro_rules! labels {
    ($(#[$meta:meta])* pub enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: [$name; [$($label),+].len()] = [$($name::$variant),+];

            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl Label for $name {
            const ALL: &'static [Self] = &$name::ALL;

            fn label(self) -> &'static str {
                $name::label(self)
            }

            // Declaration order: variant i is ALL[i].
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

/// Label enums owned by the part that produces them (pure modules that know nothing of
/// metrics), made labels here.
macro_rules! foreign_labels {
    ($($name:ty),+) => {$(
        impl Label for $name {
            const ALL: &'static [Self] = &<$name>::ALL;

            fn label(self) -> &'static str {
                <$name>::label(self)
            }
        }
    )+};
}

foreign_labels!(ErrorKind, HandshakeFailure, Failure);

labels! {
    /// Why connections end: the `reason` of `lumberd_connections_closed_total`.
    pub enum CloseReason {
        Closed => "closed",
        Probe => "probe",
        Shutdown => "shutdown",
        ProtocolError => "protocol_error",
        IoError => "io_error",
        Idle => "idle",
        Stalled => "stalled",
        /// `server.max_connection_age` passed: closed at a window boundary to rebalance.
        MaxAge => "max_age",
        DeliveryFailed => "delivery_failed",
        TlsHandshakeFailed => "tls_handshake_failed",
    }
}

labels! {
    /// Why `/readyz` answers not ready: the `reason` of `lumberd_not_ready`.
    pub enum NotReadyReason {
        NotListening => "not_listening",
        ShuttingDown => "shutting_down",
        OutputDown => "output_down",
        /// In-flight bytes above `server.ready_high_water` for `server.ready_grace`.
        OutputBehind => "output_behind",
        /// The spool holds more than `spool.high_water` of `spool.max_bytes`.
        SpoolHighWater => "spool_high_water",
        TaskStopped => "task_stopped",
    }
}

labels! {
    /// Why a connection was closed as soon as it was accepted: the `reason` of
    /// `lumberd_connections_rejected_total`.
    pub enum RejectReason {
        /// `server.max_connections` were open.
        MaxConnections => "max_connections",
    }
}

labels! {
    /// Frame types: the `type` of `lumberd_frames_received_total`.
    pub enum FrameType {
        Window => "window",
        Compressed => "compressed",
        Json => "json",
        Data => "data",
    }
}

labels! {
    /// What became of an event in the pipeline: the `result` of
    /// `lumberd_pipeline_events_total`.
    pub enum PipelineResult {
        /// On to the output.
        Passed => "passed",
        /// A `drop` filter dropped it.
        Dropped => "dropped",
        /// Not a JSON object, or not UTF-8.
        DeadLettered => "dead_lettered",
    }
}

impl PipelineResult {
    pub fn of(outcome: &Outcome) -> PipelineResult {
        match outcome {
            Outcome::Passed(..) => PipelineResult::Passed,
            Outcome::Dropped(_) => PipelineResult::Dropped,
            Outcome::DeadLettered(_) => PipelineResult::DeadLettered,
        }
    }
}

labels! {
    /// What a changed certificate or key led to: the `result` of
    /// `lumberd_tls_reloads_total`.
    pub enum ReloadResult {
        /// Served to new connections from now on.
        Reloaded => "reloaded",
        /// Broken: the previous files stay.
        Refused => "refused",
    }
}

labels! {
    /// What happened to events at the output: the `outcome` of
    /// `lumberd_output_events_total`.
    pub enum EventOutcome {
        /// Stored (indexed by Elasticsearch, or written and fsynced to a file).
        Indexed => "indexed",
        /// Already stored under its id: a resend (Elasticsearch 409 on `create`).
        Duplicate => "duplicate",
        /// Not stored on this attempt (429, 5xx, connection error); sent again.
        Retried => "retried",
        /// Refused for good, stored as a dead letter instead.
        DeadLettered => "dead_lettered",
    }
}

labels! {
    /// How a `_bulk` request went: the `outcome` of `lumberd_bulk_requests_total`.
    pub enum BulkOutcome {
        /// Answered 200 and every item settled (stored, duplicate or rejected for good).
        Success => "success",
        /// Answered 200 with some items to retry.
        Partial => "partial",
        /// Not answered, or answered 429/5xx/401/403 as a whole: sent again.
        Retried => "retried",
        /// Refused as a whole (400, 413): split, or its only item dead-lettered.
        Failed => "failed",
    }
}

/// A counter family with one series per value of `L`, every one created at 0.
pub struct Counters<L> {
    family: IntCounterVec,
    series: Box<[IntCounter]>,
    label: PhantomData<fn(L)>,
}

impl<L> Clone for Counters<L> {
    fn clone(&self) -> Self {
        Counters {
            family: self.family.clone(),
            series: self.series.clone(),
            label: PhantomData,
        }
    }
}

impl<L: Label> Counters<L> {
    /// The family, not yet registered.
    fn new(name: &str, help: &str, label: &str) -> prometheus::Result<Counters<L>> {
        let family = IntCounterVec::new(Opts::new(name, help), &[label])?;
        let series = L::ALL
            .iter()
            .map(|v| family.with_label_values(&[v.label()]))
            .collect();
        Ok(Counters {
            family,
            series,
            label: PhantomData,
        })
    }

    fn registered(
        r: &Registry,
        name: &str,
        help: &str,
        label: &str,
    ) -> prometheus::Result<Counters<L>> {
        let c = Counters::new(name, help, label)?;
        r.register(Box::new(c.family.clone()))?;
        Ok(c)
    }

    pub fn get(&self, value: L) -> &IntCounter {
        &self.series[value.index()]
    }

    pub fn inc(&self, value: L) {
        self.get(value).inc();
    }

    pub fn inc_by(&self, value: L, n: u64) {
        if n > 0 {
            self.get(value).inc_by(n);
        }
    }
}

/// The registry and the handles every part records into.
pub struct Metrics {
    registry: Registry,
    pub receive: ReceiveMetrics,
    pub pipeline: PipelineMetrics,
    /// Registered only when the Beats port speaks TLS ([`Metrics::register_tls`]).
    pub tls: TlsMetrics,
    pub output: OutputMetrics,
    /// The disk spool (all 0 while `[spool] dir` is empty).
    pub spool: SpoolMetrics,
    /// 1 while /readyz says ready.
    pub ready: IntGauge,
    /// 1 for each reason /readyz now gives for not being ready.
    pub not_ready: Gauges<NotReadyReason>,
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
    pub rejected: Counters<RejectReason>,
    pub closed: Counters<CloseReason>,
    pub frames: Counters<FrameType>,
    pub events: IntCounter,
    pub windows_acknowledged: IntCounter,
    pub ack_latency: Histogram,
    pub keepalives: IntCounter,
    pub received_bytes: IntCounter,
    pub inflated_bytes: IntCounter,
    /// Connections closed for a protocol error, by kind.
    pub decode_errors: Counters<ErrorKind>,
    pub inflight_events: IntGauge,
    pub inflight_bytes: IntGauge,
    pub inflight_bytes_limit: IntGauge,
    pub queue_batches: IntGauge,
    pub queue_batches_capacity: IntGauge,
}

/// What became of events in the pipeline, counted from the [`Outcome`] it returns. The
/// log-derived metrics (`[[pipeline.metric]]`) are the pipeline's own.
#[derive(Clone)]
pub struct PipelineMetrics {
    results: Counters<PipelineResult>,
    failures: Counters<Failure>,
}

/// TLS handshakes on the Beats port, certificate reloads and the served certificate.
#[derive(Clone)]
pub struct TlsMetrics {
    handshakes: IntCounter,
    failures: Counters<HandshakeFailure>,
    reloads: Counters<ReloadResult>,
    pub certificate_expiry: IntGauge,
}

/// The output side, whichever output runs.
#[derive(Clone)]
pub struct OutputMetrics {
    events: Counters<EventOutcome>,
    bulk_requests: Counters<BulkOutcome>,
    pub bulk_duration: Histogram,
    pub up: IntGauge,
    pub last_success: Gauge,
}

/// The disk spool: what it holds (read from the engine at scrape time), what it has
/// done since start, and the write errors that hold the connections back.
#[derive(Clone)]
pub struct SpoolMetrics {
    pub bytes: IntGauge,
    pub records: IntGauge,
    pub segments: IntGauge,
    pub max_bytes: IntGauge,
    pub high_water_bytes: IntGauge,
    pub oldest_record_age: Gauge,
    written: IntCounter,
    commits: IntCounter,
    read: IntCounter,
    from_memory: IntCounter,
    replayed: IntCounter,
    corrupt: IntCounter,
    /// Failed appends (disk full, unwritable directory): each is retried, never acknowledged.
    pub write_errors: IntCounter,
}

/// The engine's running totals, for [`SpoolMetrics::totals`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SpoolTotals {
    pub written: u64,
    pub commits: u64,
    pub read: u64,
    pub from_memory: u64,
    pub replayed: u64,
    pub corrupt: u64,
}

impl SpoolMetrics {
    fn new(r: &Registry) -> prometheus::Result<SpoolMetrics> {
        Ok(SpoolMetrics {
            bytes: gauge(r, "lumberd_spool_bytes", "Bytes of spool segment files on disk.")?,
            records: gauge(
                r,
                "lumberd_spool_records",
                "Records in the spool not yet stored by Elasticsearch.",
            )?,
            segments: gauge(r, "lumberd_spool_segments", "Spool segment files on disk.")?,
            max_bytes: gauge(
                r,
                "lumberd_spool_max_bytes",
                "spool.max_bytes: past it appends wait and connections stop reading (0: no spool).",
            )?,
            high_water_bytes: gauge(
                r,
                "lumberd_spool_high_water_bytes",
                "Spool bytes past which /readyz answers not-ready (spool.high_water x max_bytes).",
            )?,
            oldest_record_age: {
                let g = Gauge::new(
                    "lumberd_spool_oldest_record_age_seconds",
                    "Age of the oldest record in the spool not yet stored by Elasticsearch (0 when empty).",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            written: counter(
                r,
                "lumberd_spool_records_written_total",
                "Records written and fsynced into the spool.",
            )?,
            commits: counter(
                r,
                "lumberd_spool_commits_total",
                "Spool group commits (one fsync round each, for every batch queued since the last).",
            )?,
            read: counter(
                r,
                "lumberd_spool_records_read_total",
                "Records read from the spool for Elasticsearch.",
            )?,
            from_memory: counter(
                r,
                "lumberd_spool_records_from_memory_total",
                "Of the records read, those handed over from memory once fsynced (the reader caught up), not read back from disk.",
            )?,
            replayed: counter(
                r,
                "lumberd_spool_records_replayed_total",
                "Records read from the spool that were written before this start.",
            )?,
            corrupt: counter(
                r,
                "lumberd_spool_corrupt_records_total",
                "Corrupt regions of the spool skipped (each one or more records, never of an acknowledged window).",
            )?,
            write_errors: counter(
                r,
                "lumberd_spool_write_errors_total",
                "Spool appends that failed (disk full, unwritable directory) and are retried.",
            )?,
        })
    }

    /// Brings the counters up to the engine's totals (they only grow).
    pub fn totals(&self, t: SpoolTotals) {
        for (c, v) in [
            (&self.written, t.written),
            (&self.commits, t.commits),
            (&self.read, t.read),
            (&self.from_memory, t.from_memory),
            (&self.replayed, t.replayed),
            (&self.corrupt, t.corrupt),
        ] {
            c.inc_by(v.saturating_sub(c.get()));
        }
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// A gauge family over a [`Label`] enum, every series created at 0.
pub struct Gauges<L> {
    pub(crate) series: Box<[IntGauge]>,
    label: PhantomData<fn(L)>,
}

impl<L> Clone for Gauges<L> {
    fn clone(&self) -> Self {
        Gauges {
            series: self.series.clone(),
            label: PhantomData,
        }
    }
}

impl<L: Label> Gauges<L> {
    fn registered(r: &Registry, name: &str, help: &str, label: &str) -> prometheus::Result<Self> {
        let family = prometheus::IntGaugeVec::new(Opts::new(name, help), &[label])?;
        r.register(Box::new(family.clone()))?;
        let series = L::ALL
            .iter()
            .map(|v| family.with_label_values(&[v.label()]))
            .collect();
        Ok(Gauges {
            series,
            label: PhantomData,
        })
    }

    pub fn set(&self, value: L, on: bool) {
        self.series[value.index()].set(i64::from(on));
    }
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
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
    /// Registers every lumberd metric but the TLS ones, the process metrics (CPU,
    /// memory, file descriptors) and `lumberd_build_info` in a fresh registry.
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
        Ok(Arc::new(Metrics {
            receive: ReceiveMetrics::new(&r)?,
            pipeline: PipelineMetrics::new(&r)?,
            tls: TlsMetrics::new()?,
            output: OutputMetrics::new(&r)?,
            spool: SpoolMetrics::new(&r)?,
            ready: gauge(&r, "lumberd_ready", "1 while /readyz answers ready.")?,
            not_ready: Gauges::registered(
                &r,
                "lumberd_not_ready",
                "1 for each reason /readyz now answers not ready.",
                "reason",
            )?,
            log_suppressed: counter(
                &r,
                "lumberd_log_messages_suppressed_total",
                "Log lines not written because the same warning was written recently.",
            )?,
            registry: r,
            on_scrape: Mutex::new(Vec::new()),
        }))
    }

    /// Exports the TLS metrics: only a TLS port has handshakes and a certificate (an
    /// expiry of 0 would set off certificate alerts on a plain port).
    pub fn register_tls(&self) -> prometheus::Result<()> {
        self.tls.register(&self.registry)
    }

    /// Where the pipeline registers its log-derived metrics.
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
    fn new(r: &Registry) -> prometheus::Result<ReceiveMetrics> {
        Ok(ReceiveMetrics {
            connections_active: gauge(r, "lumberd_connections_active", "Open Beats connections.")?,
            connections: counter(
                r,
                "lumberd_connections_total",
                "Beats connections accepted.",
            )?,
            rejected: Counters::registered(
                r,
                "lumberd_connections_rejected_total",
                "Beats connections closed at once, by reason.",
                "reason",
            )?,
            closed: Counters::registered(
                r,
                "lumberd_connections_closed_total",
                "Beats connections ended, by reason.",
                "reason",
            )?,
            frames: Counters::registered(
                r,
                "lumberd_frames_received_total",
                "Lumberjack frames received, by type (frames inside compressed frames included).",
                "type",
            )?,
            events: counter(
                r,
                "lumberd_events_received_total",
                "Events (data frames) received.",
            )?,
            windows_acknowledged: counter(
                r,
                "lumberd_windows_acknowledged_total",
                "Windows acknowledged to clients (each once every event of it was durable).",
            )?,
            ack_latency: histogram(
                r,
                "lumberd_ack_latency_seconds",
                "Time from a window's last frame received to its ACK sent.",
                &ACK_LATENCY_BUCKETS,
            )?,
            keepalives: counter(
                r,
                "lumberd_keepalives_sent_total",
                "Keep-alive ACKs (ACK 0) sent while windows waited for the output.",
            )?,
            received_bytes: counter(
                r,
                "lumberd_received_bytes_total",
                "Bytes read from Beats connections (after TLS, before inflating).",
            )?,
            inflated_bytes: counter(
                r,
                "lumberd_inflated_bytes_total",
                "Bytes produced by inflating compressed frames.",
            )?,
            decode_errors: Counters::registered(
                r,
                "lumberd_decode_errors_total",
                "Connections closed for a protocol error, by kind.",
                "kind",
            )?,
            inflight_events: gauge(
                r,
                "lumberd_inflight_events",
                "Events received and not yet acknowledged.",
            )?,
            inflight_bytes: gauge(
                r,
                "lumberd_inflight_bytes",
                "Bytes of the in-flight budget in use (events between sockets and the output).",
            )?,
            inflight_bytes_limit: gauge(
                r,
                "lumberd_inflight_bytes_limit",
                "The in-flight budget: server.max_inflight_bytes.",
            )?,
            queue_batches: gauge(
                r,
                "lumberd_queue_batches",
                "Batches waiting in the output queue.",
            )?,
            queue_batches_capacity: gauge(
                r,
                "lumberd_queue_batches_capacity",
                "Size of the output queue: output.queue_batches.",
            )?,
        })
    }
}

impl PipelineMetrics {
    fn new(r: &Registry) -> prometheus::Result<PipelineMetrics> {
        Ok(PipelineMetrics {
            results: Counters::registered(
                r,
                "lumberd_pipeline_events_total",
                "Events out of the pipeline, by result: passed (to the output), dropped (a drop \
                 filter), dead_lettered (not a JSON object, not UTF-8, or an invalid index name).",
                "result",
            )?,
            failures: Counters::registered(
                r,
                "lumberd_pipeline_failures_total",
                "Events tagged with a filter failure, by kind: json (_jsonparsefailure), date \
                 (_dateparsefailure), convert (_mutate_error), timestamp \
                 (_timestampparsefailure), tags (_tagsparsefailure), condition \
                 (_conditionalevaluationerror).",
                "kind",
            )?,
        })
    }

    /// One event out of the pipeline.
    pub fn count(&self, outcome: &Outcome) {
        self.results.inc(PipelineResult::of(outcome));
        let failures = outcome.failures();
        if !failures.is_empty() {
            failures.iter().for_each(|f| self.failures.inc(f));
        }
    }
}

impl TlsMetrics {
    fn new() -> prometheus::Result<TlsMetrics> {
        Ok(TlsMetrics {
            handshakes: IntCounter::new(
                "lumberd_tls_handshakes_total",
                "TLS handshakes on the Beats port that completed.",
            )?,
            failures: Counters::new(
                "lumberd_tls_handshake_failures_total",
                "TLS handshakes on the Beats port that failed, by reason.",
                "reason",
            )?,
            reloads: Counters::new(
                "lumberd_tls_reloads_total",
                "Changed certificate or key files, by result: reloaded, or refused (the old ones stay).",
                "result",
            )?,
            certificate_expiry: IntGauge::new(
                "lumberd_tls_certificate_expiry_timestamp_seconds",
                "Unix time the served certificate expires (it is re-read every tls.reload_interval).",
            )?,
        })
    }

    fn register(&self, r: &Registry) -> prometheus::Result<()> {
        r.register(Box::new(self.handshakes.clone()))?;
        r.register(Box::new(self.failures.family.clone()))?;
        r.register(Box::new(self.reloads.family.clone()))?;
        r.register(Box::new(self.certificate_expiry.clone()))
    }

    pub fn handshake_ok(&self) {
        self.handshakes.inc();
    }

    /// Counts one failure; returns the count for that reason so far (for the log line).
    pub fn handshake_failed(&self, reason: HandshakeFailure) -> u64 {
        let c = self.failures.get(reason);
        c.inc();
        c.get()
    }

    /// What a check of the certificate files found.
    pub fn reload(&self, outcome: &Reload) {
        match outcome {
            Reload::Reloaded { .. } => self.reloads.inc(ReloadResult::Reloaded),
            Reload::Refused(_) => self.reloads.inc(ReloadResult::Refused),
            Reload::Unchanged | Reload::StillRefused => {}
        }
    }
}

impl OutputMetrics {
    fn new(r: &Registry) -> prometheus::Result<OutputMetrics> {
        Ok(OutputMetrics {
            events: Counters::registered(
                r,
                "lumberd_output_events_total",
                "Events at the output, by outcome (retried counts attempts).",
                "outcome",
            )?,
            bulk_requests: Counters::registered(
                r,
                "lumberd_bulk_requests_total",
                "Elasticsearch _bulk requests, by outcome.",
                "outcome",
            )?,
            bulk_duration: histogram(
                r,
                "lumberd_bulk_request_duration_seconds",
                "Time from sending a _bulk request to its answer read (or its failure).",
                &BULK_LATENCY_BUCKETS,
            )?,
            up: gauge(
                r,
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
        })
    }

    pub fn events(&self, outcome: EventOutcome, n: usize) {
        self.events.inc_by(outcome, n as u64);
    }

    pub fn bulk_request(&self, outcome: BulkOutcome) {
        self.bulk_requests.inc(outcome);
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
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn every_lumberd_metric_follows_prometheus_naming_and_starts_at_zero() {
        let m = Metrics::new().unwrap();
        m.register_tls().unwrap();
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
            "lumberd_tls_handshake_failures_total{reason=\"plain_beats\"} 0",
            "lumberd_pipeline_failures_total{kind=\"tags\"} 0",
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

    #[test]
    fn tls_metrics_are_served_only_once_registered() {
        let m = Metrics::new().unwrap();
        let served = |m: &Metrics| String::from_utf8(m.render()).unwrap();
        assert!(
            !served(&m).contains("lumberd_tls_"),
            "a plain port serves no TLS metrics (an expiry of 0 would fire certificate alerts)"
        );
        m.register_tls().unwrap();
        assert!(served(&m).contains("lumberd_tls_certificate_expiry_timestamp_seconds 0"));
    }

    #[test]
    fn each_label_value_has_its_own_series() {
        fn check<L: Label>(c: &Counters<L>) {
            for (i, v) in L::ALL.iter().enumerate() {
                assert_eq!(v.index(), i, "{} is not at its place in ALL", v.label());
                c.inc(*v);
                assert_eq!(c.get(*v).get(), 1, "{} counted once, alone", v.label());
            }
        }
        let m = Metrics::new().unwrap();
        check(&m.receive.closed);
        check(&m.receive.rejected);
        check(&m.receive.frames);
        check(&m.receive.decode_errors);
        check(&m.pipeline.results);
        check(&m.pipeline.failures);
        check(&m.tls.failures);
        check(&m.tls.reloads);
        check(&m.output.events);
        check(&m.output.bulk_requests);
    }

    #[test]
    fn pipeline_outcomes_are_counted_by_result_and_failure() {
        use crate::pipeline::{Pipeline, Scratch};
        use crate::record::Origin;
        let m = Metrics::new().unwrap();
        let pipeline = Pipeline::default();
        let origin = Origin::plain("127.0.0.1:1234".parse().unwrap(), chrono::Utc::now());
        let mut scratch = Scratch::default();
        for payload in [
            &br#"{"message":"{\"timestamp\":\"2025-04-05T10:23:45Z\"}"}"#[..],
            br#"{"message":"not json"}"#,
            br#"{"message":"{\"timestamp\":\"never\"}"}"#,
            b"[1,2]",
        ] {
            let outcome = pipeline.process_json(payload.to_vec().into(), &origin, &mut scratch);
            m.pipeline.count(&outcome);
        }
        let results = &m.pipeline.results;
        assert_eq!(results.get(PipelineResult::Passed).get(), 3);
        assert_eq!(results.get(PipelineResult::DeadLettered).get(), 1);
        assert_eq!(results.get(PipelineResult::Dropped).get(), 0);
        let failures = &m.pipeline.failures;
        assert_eq!(failures.get(Failure::Json).get(), 1, "not json");
        assert_eq!(
            failures.get(Failure::Date).get(),
            1,
            "a date that does not parse"
        );
        assert_eq!(failures.get(Failure::Convert).get(), 0);
    }

    /// `label -> values` per metric, from a documented list.
    type Documented = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

    /// README.md's metric table: `| \`name\` | type | \`label\`: \`a\`, \`b\` | ... |`.
    fn readme_label_values() -> Documented {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let mut out = Documented::new();
        for row in readme.lines().filter(|l| l.starts_with("| `lumberd_")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let name = cells[0].trim_start_matches("| ").trim_matches('`');
            let labels = out.entry(name.to_string()).or_default();
            for spec in cells[2].split("; ") {
                let Some((label, values)) = spec.split_once(": ") else {
                    continue;
                };
                let values = values
                    .split(", ")
                    .map(|v| v.trim_matches('`').to_string())
                    .collect();
                labels.insert(label.trim_matches('`').to_string(), values);
            }
        }
        out
    }

    /// helm/lumberd/metrics.txt: `name type label=a|b ...`.
    fn chart_label_values() -> Documented {
        let list = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/helm/lumberd/metrics.txt"
        ))
        .expect("helm/lumberd/metrics.txt");
        let mut out = Documented::new();
        for line in list.lines().filter(|l| l.starts_with("lumberd_")) {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or_default();
            let labels = out.entry(name.to_string()).or_default();
            for spec in words.skip(1) {
                if let Some((label, values)) = spec.split_once('=') {
                    let values = values.split('|').map(str::to_string).collect();
                    labels.insert(label.to_string(), values);
                }
            }
        }
        out
    }

    #[test]
    fn every_label_value_set_is_the_readme_table_and_the_chart_list() {
        let m = Metrics::new().unwrap();
        m.register_tls().unwrap();
        // What is served: each label enum's values, as their series are created at 0.
        let mut served = Documented::new();
        for family in m.registry().gather() {
            let name = family.name();
            // Not an enum: the build's version.
            if !name.starts_with("lumberd_") || name == "lumberd_build_info" {
                continue;
            }
            let labels = served.entry(name.to_string()).or_default();
            for metric in family.get_metric() {
                for pair in metric.get_label() {
                    labels
                        .entry(pair.name().to_string())
                        .or_default()
                        .insert(pair.value().to_string());
                }
            }
        }
        let mut problems = Vec::new();
        for (doc, mut documented) in [
            ("README.md", readme_label_values()),
            ("helm/lumberd/metrics.txt", chart_label_values()),
        ] {
            documented.remove("lumberd_build_info");
            for (name, labels) in &served {
                let Some(listed) = documented.get(name) else {
                    problems.push(format!("{doc}: {name} is not listed"));
                    continue;
                };
                for label in labels.keys().chain(listed.keys()).collect::<BTreeSet<_>>() {
                    let (want, got) = (labels.get(label), listed.get(label));
                    let (want, got) = (
                        want.cloned().unwrap_or_default(),
                        got.cloned().unwrap_or_default(),
                    );
                    if want != got {
                        problems.push(format!(
                            "{doc}: {name}{{{label}}}: served but not listed {:?}, listed but not served {:?}",
                            want.difference(&got).collect::<Vec<_>>(),
                            got.difference(&want).collect::<Vec<_>>()
                        ));
                    }
                }
            }
            for name in documented.keys().filter(|n| !served.contains_key(*n)) {
                problems.push(format!("{doc}: {name} is listed, not served"));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

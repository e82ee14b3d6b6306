//! lumberd: a Lumberjack v2 (Beats protocol) server that takes Logstash's place between
//! Filebeat and Elasticsearch.
//!
//! ```text
//! Filebeat --TCP/TLS--> server --> connection --(protocol::Session)--> frames
//!                                 | window bookkeeping (in the same Session)
//!                                 | payload -> Record (pipeline)
//!                                 v
//!                   bounded queue (the only queue; full = stop reading)
//!                                 v
//!                   output (Elasticsearch bulk | local files) --> delivery result
//!                                 v
//!                   connection writes the ACK (or closes on failure)
//! ```
//!
//! **The ACK contract**: a window is acknowledged only after every one of its events has
//! reached the output and the output has made it durable (for the file output: written
//! and fsynced). A connection that breaks before its ACK loses nothing: the client resends
//! the window. Memory is bounded by `server.max_inflight_bytes`: past it connections stop
//! reading and TCP pushes back on the clients.
//!
//! **With `[spool] dir` set** (Elasticsearch output), the output a window waits for is
//! the spool: a window is acknowledged once its events are written and fsynced there,
//! and the spool's reader sends them on to Elasticsearch in order, removing only what
//! Elasticsearch has stored (see [`output::spooled`]). A full spool stops the
//! connections' reading exactly as a full queue does.

#![forbid(unsafe_code)]

pub mod admin;
pub mod client;
pub mod config;
pub mod connection;
pub mod logstash;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod protocol;
pub mod record;
pub mod server;
pub mod spool;
pub mod throttle;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, AdminSettings, Status};
use crate::config::{LogSettings, OutputSettings, Settings};
use crate::metrics::Metrics;
use crate::output::elasticsearch::EsOutput;
use crate::output::file::FileOutput;
use crate::output::spooled::{self, ReadSizes, Spooled, SpooledSettings};
use crate::output::OutputSender;
use crate::pipeline::Pipeline;
use crate::server::{Reporting, Server};
use crate::throttle::LogThrottle;
use crate::tls::settings::TlsSettings;
use crate::tls::TlsServer;

/// The output gets at least this long to flush after the connections' drain, even when
/// the drain used all of `server.shutdown_grace`.
const MIN_OUTPUT_FLUSH: Duration = Duration::from_secs(1);

/// Runs lumberd until `shutdown` is cancelled, then drains: stop accepting, stop reading
/// new windows, acknowledge what the output delivers within the grace period, flush the
/// output, return.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(settings, shutdown).await?.wait().await
}

/// A started lumberd: listening, output running.
pub struct Running {
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// The bound Beats address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound admin address, unless `admin.listen` is empty.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Waits until shutdown has drained the connections and flushed the output.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// Starts lumberd in the order of the diagram above, read from the outside in: the
/// telemetry and admin port first (so /readyz can say why lumberd is not ready while it
/// waits for Elasticsearch), then the output and its queue, the pipeline, and last the
/// Beats listener. Errors here are configuration-level (unusable TLS files, unusable
/// data directory, address in use) and nothing has been accepted yet.
pub async fn start(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let Settings {
        server,
        tls,
        output,
        spool,
        log,
        admin,
        pipeline,
        // Logged by main once logging is up.
        warnings: _,
    } = settings;
    let telemetry = Telemetry::new(&log, &shutdown)?;
    let admin_stop = CancellationToken::new();
    let admin = serve_admin(admin, &telemetry, admin_stop.clone()).await?;
    let tls = load_tls(tls.as_ref(), &telemetry.metrics)?;
    let sizes = ReadSizes {
        batch_records: server.batch_events,
        max_pending: (server.max_inflight_bytes as usize / spooled::READ_BATCH_BYTES).max(2),
    };
    let (queue, output) = RunningOutput::start(&output, spool.as_ref(), sizes, &telemetry).await?;
    watch_queue(&telemetry.metrics, &queue);
    let pipeline = Pipeline::new(&pipeline, telemetry.metrics.registry())
        .context("cannot register the pipeline's metrics")?;
    let (listen, grace) = (server.listen, server.shutdown_grace);
    let ready_water = (server.ready_high_water, server.ready_grace);
    let server = Server::bind(
        server,
        pipeline,
        tls.clone(),
        queue,
        shutdown.clone(),
        Reporting {
            metrics: telemetry.metrics.clone(),
            log: telemetry.log.clone(),
        },
    )
    .await
    .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = server.local_addr()?;
    watch_budget(&telemetry.metrics, &server);
    shed_when_behind(&telemetry.status, &server, ready_water);
    announce(addr, admin, &output, tls.as_deref());
    if let Some(tls) = tls {
        watch_tls_reload(tls, &telemetry, shutdown);
    }
    let task = tokio::spawn(serve_then_drain(
        server, output, grace, telemetry, admin_stop,
    ));
    Ok(Running { addr, admin, task })
}

/// What every part reports through: the metrics registry, the throttled log and the
/// readiness status.
struct Telemetry {
    metrics: Arc<Metrics>,
    log: Arc<LogThrottle>,
    status: Arc<Status>,
}

impl Telemetry {
    fn new(log: &LogSettings, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let metrics = Metrics::new().context("cannot register the metrics")?;
        let log = Arc::new(LogThrottle::new(
            log.repeat_interval,
            metrics.log_suppressed.clone(),
        ));
        let status = Status::new(&metrics, shutdown.clone());
        {
            // `lumberd_ready` says what /readyz would answer at the time of the scrape.
            let status = status.clone();
            metrics.on_scrape(move || {
                let _ = status.ready();
            });
        }
        Ok(Self {
            metrics,
            log,
            status,
        })
    }
}

/// Binds and spawns the admin port, unless `admin.listen` is empty.
async fn serve_admin(
    settings: AdminSettings,
    telemetry: &Telemetry,
    stop: CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = settings.listen else {
        return Ok(None);
    };
    let admin = Admin::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (admin.listen)"))?;
    let bound = admin.local_addr()?;
    tracing::info!(admin = %bound, "admin port serving /metrics /healthz /readyz");
    tokio::spawn(admin.run(
        telemetry.metrics.clone(),
        telemetry.status.clone(),
        settings,
        stop,
    ));
    Ok(Some(bound))
}

/// Loads the certificate and key (`None` for plain Beats) and exports their expiry.
fn load_tls(
    settings: Option<&TlsSettings>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<Arc<TlsServer>>> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let tls = Arc::new(TlsServer::load(settings)?);
    metrics
        .register_tls()
        .context("cannot register the TLS metrics")?;
    let (t, expiry) = (tls.clone(), metrics.tls.certificate_expiry.clone());
    metrics.on_scrape(move || expiry.set(t.summary().not_after_unix));
    Ok(Some(tls))
}

/// Reloads the certificate when its files change, until shutdown.
fn watch_tls_reload(tls: Arc<TlsServer>, telemetry: &Telemetry, shutdown: CancellationToken) {
    let alive = telemetry.status.task("TLS reloader");
    let metrics = telemetry.metrics.tls.clone();
    tokio::spawn(async move {
        tls.watch(shutdown, |outcome| metrics.reload(outcome)).await;
        drop(alive);
    });
}

/// The one line an operator looks for: where lumberd listens and where records go.
fn announce(
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    output: &RunningOutput,
    tls: Option<&TlsServer>,
) {
    let admin = admin.map_or_else(|| "none".to_string(), |a| a.to_string());
    let output = output.destination();
    match tls {
        None => tracing::info!(%addr, %admin, %output, tls = false, "listening"),
        Some(t) => {
            let cert = t.summary();
            tracing::info!(%addr, %admin, %output, tls = true,
                subject = %cert.subject, not_after = %cert.not_after, "listening");
        }
    }
}

/// Accepts until shutdown, drains the connections within the grace, then flushes the
/// output with what is left of it (at least [`MIN_OUTPUT_FLUSH`]).
async fn serve_then_drain(
    server: Server,
    output: RunningOutput,
    grace: Duration,
    telemetry: Telemetry,
    admin_stop: CancellationToken,
) -> anyhow::Result<()> {
    telemetry.status.set_listening(true);
    let accepting = telemetry.status.task("accept loop");
    let drain_started = server.run().await;
    drop(accepting);
    telemetry.status.set_listening(false);
    let flush = grace
        .saturating_sub(drain_started.elapsed())
        .max(MIN_OUTPUT_FLUSH);
    output.join(flush).await?;
    tracing::info!("stopped");
    admin_stop.cancel();
    Ok(())
}

/// The output behind the queue: one of the two, chosen by `[output]`, and with
/// Elasticsearch the spool in front of it when `[spool] dir` is set.
enum RunningOutput {
    File(FileOutput, PathBuf),
    Elasticsearch(EsOutput, String),
    Spooled(Spooled, EsOutput, String),
}

impl RunningOutput {
    /// Starts the configured output and returns the bounded queue into it. With
    /// Elasticsearch this returns only once the cluster has answered, so the Beats port
    /// is bound only then.
    async fn start(
        settings: &OutputSettings,
        spool: Option<&SpooledSettings>,
        sizes: ReadSizes,
        telemetry: &Telemetry,
    ) -> anyhow::Result<(OutputSender, Self)> {
        let alive = telemetry.status.task("output");
        let (metrics, log) = (telemetry.metrics.output.clone(), telemetry.log.clone());
        let queue = settings.queue_batches;
        match &settings.elasticsearch {
            Some(es) => {
                let (tx, out) = EsOutput::start(es, queue, metrics, log.clone(), alive)
                    .await
                    .context("Elasticsearch output")?;
                let hosts = es.hosts.join(",");
                let Some(spool) = spool else {
                    return Ok((tx, Self::Elasticsearch(out, hosts)));
                };
                let status = &telemetry.status;
                let alive = (status.task("spool sink"), status.task("spool reader"));
                let metrics = telemetry.metrics.spool.clone();
                let (tx, spooled) = Spooled::start(spool, queue, tx, sizes, metrics, log, alive)
                    .await
                    .with_context(|| format!("cannot use spool {}", spool.spool.dir.display()))?;
                watch_spool(telemetry, &spooled, spool);
                Ok((tx, Self::Spooled(spooled, out, hosts)))
            }
            None => {
                let dir = &settings.file.data_dir;
                let (tx, out) = FileOutput::start(&settings.file, queue, metrics, log, alive)
                    .with_context(|| format!("cannot use data directory {}", dir.display()))?;
                Ok((tx, Self::File(out, dir.clone())))
            }
        }
    }

    fn destination(&self) -> String {
        match self {
            Self::File(_, dir) => dir.display().to_string(),
            Self::Elasticsearch(_, hosts) => hosts.clone(),
            Self::Spooled(s, _, hosts) => format!("{hosts} via spool {}", s.dir().display()),
        }
    }

    /// Waits for the output to deliver what is queued: the file output until its queue
    /// is empty, Elasticsearch for at most `flush`; with the spool, until what is queued
    /// is in the spool (at most `flush`), then Elasticsearch only briefly: the spool
    /// keeps what it has not stored for the next start.
    async fn join(self, flush: Duration) -> anyhow::Result<()> {
        match self {
            Self::File(f, _) => tokio::task::spawn_blocking(move || f.join()).await?,
            Self::Elasticsearch(es, _) => es.join(flush).await,
            Self::Spooled(spooled, es, _) => {
                spooled
                    .join(flush, MIN_OUTPUT_FLUSH, |left| {
                        es.join(left.min(MIN_OUTPUT_FLUSH))
                    })
                    .await
            }
        }
        Ok(())
    }
}

/// `lumberd_queue_batches`: read from the queue at scrape time. A weak handle, so that
/// the metrics never keep the queue open after the connections are gone.
fn watch_queue(metrics: &Arc<Metrics>, output: &OutputSender) {
    let queue = output.downgrade();
    let depth = metrics.receive.queue_batches.clone();
    metrics
        .receive
        .queue_batches_capacity
        .set(output.max_capacity() as i64);
    metrics.on_scrape(move || {
        if let Some(tx) = queue.upgrade() {
            depth.set((tx.max_capacity() - tx.capacity()) as i64);
        }
    });
}

/// `/readyz` fails while the in-flight budget stays over its high-water mark.
fn shed_when_behind(status: &Status, server: &Server, (high_water, grace): (f64, Duration)) {
    let (limit, budget) = server.budget();
    let high = (limit as f64 * high_water) as u64;
    status.shed_when_behind(admin::Backlog {
        used: Box::new(move || limit.saturating_sub(budget.available_permits() as u64)),
        high,
        low: high / 2,
        grace,
    });
}

/// The spool's metrics, read from the engine at scrape time, and its readiness reason.
fn watch_spool(telemetry: &Telemetry, spooled: &Spooled, settings: &SpooledSettings) {
    let (watch, undecodable) = (spooled.watch(), spooled.undecodable());
    let metrics = telemetry.metrics.spool.clone();
    telemetry.metrics.on_scrape(move || {
        let skipped = undecodable.load(std::sync::atomic::Ordering::Relaxed);
        spooled::observe(&watch, &metrics, skipped)
    });
    let (watch, settings) = (spooled.watch(), settings.clone());
    telemetry.status.set_spool(Box::new(move || {
        spooled::over_high_water(&watch, &settings)
    }));
}

/// `lumberd_inflight_bytes`: the budget in use, read at scrape time.
fn watch_budget(metrics: &Arc<Metrics>, server: &Server) {
    let (limit, budget) = server.budget();
    metrics.receive.inflight_bytes_limit.set(limit as i64);
    let used = metrics.receive.inflight_bytes.clone();
    metrics.on_scrape(move || used.set(limit as i64 - budget.available_permits() as i64));
}

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

#![forbid(unsafe_code)]

pub mod admin;
pub mod client;
pub mod config;
pub mod connection;
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
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, Status};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::output::elasticsearch::EsOutput;
use crate::output::file::FileOutput;
use crate::output::OutputSender;
use crate::pipeline::Pipeline;
use crate::server::{Reporting, Server};
use crate::throttle::LogThrottle;
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

enum Output {
    File(FileOutput),
    Elasticsearch(EsOutput),
}

/// Starts the admin port, the output, then binds the Beats listener; errors here are
/// configuration-level (unusable TLS files, unusable data directory, address in use)
/// and nothing has been accepted yet.
pub async fn start(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let tls = match &settings.tls {
        None => None,
        Some(t) => Some(Arc::new(TlsServer::load(t)?)),
    };
    let metrics = Metrics::new().context("cannot register the metrics")?;
    let log = Arc::new(LogThrottle::new(
        settings.log.repeat_interval,
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
    // The admin port comes first: while lumberd waits for Elasticsearch, /healthz says
    // alive and /readyz says why it is not ready yet.
    let admin_stop = CancellationToken::new();
    let admin = match settings.admin.listen {
        None => None,
        Some(addr) => {
            let admin = Admin::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (admin.listen)"))?;
            let bound = admin.local_addr()?;
            tracing::info!(admin = %bound, "admin port serving /metrics /healthz /readyz");
            tokio::spawn(admin.run(
                metrics.clone(),
                status.clone(),
                settings.admin.clone(),
                admin_stop.clone(),
            ));
            Some(bound)
        }
    };
    if let Some(t) = &tls {
        metrics
            .register_tls()
            .context("cannot register the TLS metrics")?;
        let (t, expiry) = (t.clone(), metrics.tls.certificate_expiry.clone());
        metrics.on_scrape(move || expiry.set(t.summary().not_after_unix));
    }
    // With Elasticsearch configured, the Beats port is bound only once it has answered.
    let output_alive = status.task("output");
    let (output, running_output, destination) = match &settings.output.elasticsearch {
        Some(es) => {
            let (tx, out) = EsOutput::start(
                es,
                settings.output.queue_batches,
                metrics.output.clone(),
                log.clone(),
                output_alive,
            )
            .await
            .context("Elasticsearch output")?;
            (tx, Output::Elasticsearch(out), es.hosts.join(","))
        }
        None => {
            let (tx, out) = FileOutput::start(
                &settings.output.file,
                settings.output.queue_batches,
                metrics.output.clone(),
                log.clone(),
                output_alive,
            )
            .with_context(|| {
                format!(
                    "cannot use data directory {}",
                    settings.output.file.data_dir.display()
                )
            })?;
            (
                tx,
                Output::File(out),
                settings.output.file.data_dir.display().to_string(),
            )
        }
    };
    watch_queue(&metrics, &output);
    let pipeline = Pipeline::new(&settings.pipeline, metrics.registry())
        .context("cannot register the pipeline's metrics")?;
    let listen = settings.server.listen;
    let grace = settings.server.shutdown_grace;
    let server = Server::bind(
        settings.server,
        pipeline,
        tls.clone(),
        output,
        shutdown.clone(),
        Reporting {
            metrics: metrics.clone(),
            log,
        },
    )
    .await
    .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = server.local_addr()?;
    watch_budget(&metrics, &server);
    let admin_text = admin.map_or_else(|| "none".to_string(), |a| a.to_string());
    match &tls {
        None => tracing::info!(%addr, admin = %admin_text, output = %destination, tls = false,
            "listening"),
        Some(t) => {
            let cert = t.summary();
            tracing::info!(%addr, admin = %admin_text, output = %destination, tls = true,
                subject = %cert.subject, not_after = %cert.not_after, "listening");
            let alive = status.task("TLS reloader");
            let (t, shutdown, tls_metrics) = (t.clone(), shutdown.clone(), metrics.tls.clone());
            tokio::spawn(async move {
                t.watch(shutdown, |outcome| tls_metrics.reload(outcome))
                    .await;
                drop(alive);
            });
        }
    }
    status.set_listening(true);
    let accepting = status.task("accept loop");
    let task = tokio::spawn(async move {
        let drain_started = server.run().await;
        drop(accepting);
        status.set_listening(false);
        let flush = grace
            .saturating_sub(drain_started.elapsed())
            .max(MIN_OUTPUT_FLUSH);
        match running_output {
            Output::File(f) => tokio::task::spawn_blocking(move || f.join()).await?,
            Output::Elasticsearch(es) => es.join(flush).await,
        }
        tracing::info!("stopped");
        admin_stop.cancel();
        Ok(())
    });
    Ok(Running { addr, admin, task })
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

/// `lumberd_inflight_bytes`: the budget in use, read at scrape time.
fn watch_budget(metrics: &Arc<Metrics>, server: &Server) {
    let (limit, budget) = server.budget();
    metrics.receive.inflight_bytes_limit.set(limit as i64);
    let used = metrics.receive.inflight_bytes.clone();
    metrics.on_scrape(move || used.set(limit as i64 - budget.available_permits() as i64));
}

//! lumberd: a Lumberjack v2 (Beats protocol) server that takes Logstash's place between
//! Filebeat and Elasticsearch.
//!
//! ```text
//! Filebeat --TCP/TLS--> server --> connection --(protocol::Codec)--> frames
//!                                 | window bookkeeping (protocol::WindowTracker)
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

pub mod client;
pub mod config;
pub mod connection;
pub mod event;
pub mod output;
pub mod pipeline;
pub mod protocol;
pub mod server;
pub mod tls;

use std::net::SocketAddr;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::output::elasticsearch::{Counters as ElasticsearchCounters, EsOutput};
use crate::output::file::FileOutput;
use crate::pipeline::Pipeline;
use crate::server::Server;
use crate::tls::TlsServer;

/// Runs lumberd until `shutdown` is cancelled, then drains: stop accepting, stop reading
/// new windows, acknowledge what the output delivers within the grace period, flush the
/// output, return.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(settings, shutdown).await?.wait().await
}

/// A started lumberd: listening, output running.
pub struct Running {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// The bound Beats address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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

/// Starts the output, then binds the listener; errors here are configuration-level
/// (unusable TLS files, unusable data directory, address in use) and nothing has been
/// accepted yet.
pub async fn start(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let tls = match &settings.tls {
        None => None,
        Some(t) => Some(std::sync::Arc::new(TlsServer::load(t)?)),
    };
    // The registry every metric is registered in; served by the admin endpoint.
    let registry = prometheus::Registry::new();
    // With Elasticsearch configured, the Beats port is bound only once it has answered.
    let (output, running_output, destination) = match &settings.output.elasticsearch {
        Some(es) => {
            let counters = ElasticsearchCounters::new(&registry)
                .context("cannot register the output's metrics")?;
            let (tx, out) = EsOutput::start(es, settings.output.queue_batches, counters)
                .await
                .context("Elasticsearch output")?;
            (tx, Output::Elasticsearch(out), es.hosts.join(","))
        }
        None => {
            let (tx, out) = FileOutput::start(&settings.output).with_context(|| {
                format!(
                    "cannot use data directory {}",
                    settings.output.data_dir.display()
                )
            })?;
            (
                tx,
                Output::File(out),
                settings.output.data_dir.display().to_string(),
            )
        }
    };
    let pipeline = Pipeline::new(&settings.pipeline, &registry)
        .context("cannot register the pipeline's metrics")?;
    let listen = settings.server.listen;
    let grace = settings.server.shutdown_grace;
    let server = Server::bind(
        settings.server,
        pipeline,
        tls.clone(),
        output,
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = server.local_addr()?;
    match &tls {
        None => tracing::info!(%addr, output = %destination, tls = false, "listening"),
        Some(t) => {
            let cert = t.summary();
            tracing::info!(%addr, output = %destination, tls = true,
                subject = %cert.subject, not_after = %cert.not_after, "listening");
            tokio::spawn(t.clone().watch(shutdown));
        }
    }
    let task = tokio::spawn(async move {
        server.run().await;
        match running_output {
            Output::File(f) => tokio::task::spawn_blocking(move || f.join()).await?,
            Output::Elasticsearch(es) => es.join(grace).await,
        }
        tracing::info!("stopped");
        Ok(())
    });
    Ok(Running { addr, task })
}

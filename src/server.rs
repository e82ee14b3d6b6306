//! The accept loop: a bounded number of connections, one task each, each end logged once.
//! Knows nothing of outputs or filter rules.

pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::settings::ServerSettings;
use crate::connection::{self, ConnectionEnd, Shared};
use crate::metrics::{Metrics, RejectReason};
use crate::output::OutputSender;
use crate::pipeline::Pipeline;
use crate::throttle::LogThrottle;
use crate::tls::TlsServer;

/// Pause after a failed accept (EMFILE and friends) before the next: no busy loop while
/// the process is out of descriptors, short enough to resume as soon as one frees.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    log: Arc<LogThrottle>,
}

/// What the server reports into.
pub struct Reporting {
    pub metrics: Arc<Metrics>,
    /// Rate-limits the per-connection warnings.
    pub log: Arc<LogThrottle>,
}

impl Server {
    /// Binds the Beats listener; the output must already be running.
    pub async fn bind(
        settings: ServerSettings,
        pipeline: Pipeline,
        tls: Option<Arc<TlsServer>>,
        output: OutputSender,
        shutdown: CancellationToken,
        reporting: Reporting,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(settings.listen).await?;
        let connections = Arc::new(Semaphore::new(settings.max_connections));
        let budget = Arc::new(Semaphore::new(settings.max_inflight_bytes as usize));
        let shared = Arc::new(Shared {
            settings,
            tls,
            pipeline,
            output,
            budget,
            shutdown,
            metrics: reporting.metrics,
        });
        Ok(Server {
            listener,
            shared,
            connections,
            log: reporting.log,
        })
    }

    /// The in-flight budget's size and what is in use now.
    pub fn budget(&self) -> (u64, Arc<Semaphore>) {
        (
            self.shared.settings.max_inflight_bytes,
            self.shared.budget.clone(),
        )
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until shutdown, then gives open connections `shutdown_grace` to have their
    /// pending windows delivered and acknowledged; what is left is dropped unacknowledged.
    /// Returns when the drain started, so the output's flush fits in the same grace.
    pub async fn run(self) -> Instant {
        let mut tasks = JoinSet::new();
        let shutdown = self.shared.shutdown.clone();
        let metrics = self.shared.metrics.receive.clone();
        loop {
            let accepted = tokio::select! {
                // Shutdown first: no connection is accepted once it has begun.
                biased;
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            while tasks.try_join_next().is_some() {}
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    if let Some(suppressed) = self.log.allow(("accept", "error")) {
                        tracing::warn!(error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                metrics.rejected.inc(RejectReason::MaxConnections);
                if let Some(suppressed) = self.log.allow(("refused", "max_connections")) {
                    tracing::warn!(%peer, suppressed, limit = self.shared.settings.max_connections,
                        "connection refused: server.max_connections reached");
                }
                continue;
            };
            metrics.connections.inc();
            metrics.connections_active.inc();
            // ACKs are 6 bytes; Nagle would hold them back.
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            let log = self.log.clone();
            // The TLS handshake, if any, runs in the connection's task under its own
            // timeout: a slow or silent client never holds up the accept loop.
            tasks.spawn(async move {
                // Counted even when the task is aborted at the end of the grace period.
                let metrics = &shared.metrics.receive;
                let _active = ActiveGuard(metrics.connections_active.clone());
                let end = connection::accepted(stream, peer, shared.clone()).await;
                metrics.closed.inc(end.reason());
                if let ConnectionEnd::Protocol(e) = &end {
                    metrics.decode_errors.inc(e.error.kind());
                }
                log_end(peer, &end, &log);
                drop(permit);
            });
        }
        drop(self.listener);
        let drain_started = Instant::now();
        // Collect the connections that already ended, so the count logged is the drain's.
        while tasks.try_join_next().is_some() {}
        let grace = self.shared.settings.shutdown_grace;
        tracing::info!(
            connections = tasks.len(),
            ?grace,
            "stopped accepting; draining connections"
        );
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(connections = tasks.len(),
                "shutdown grace elapsed; closing connections with windows unacknowledged (clients will resend)");
            tasks.shutdown().await;
        }
        drain_started
    }
}

struct ActiveGuard(prometheus::IntGauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One line per connection end, at a level that says whether anyone needs to act; the
/// same kind of line at most once per `log.repeat_interval` (a fleet of misconfigured
/// clients must not flood the log), with the count of those suppressed in between.
fn log_end(peer: SocketAddr, end: &ConnectionEnd, log: &LogThrottle) {
    let kind = match end {
        ConnectionEnd::Closed
        | ConnectionEnd::Probe
        | ConnectionEnd::Shutdown
        | ConnectionEnd::MaxAge(_) => {
            tracing::debug!(%peer, "connection ended: {end}");
            return;
        }
        ConnectionEnd::Protocol(e) => e.error.kind().label(),
        ConnectionEnd::Handshake { error, .. } => error.reason.label(),
        _ => end.reason().label(),
    };
    let Some(suppressed) = log.allow((end.reason().label(), kind)) else {
        return;
    };
    match end {
        ConnectionEnd::Protocol(e) => {
            tracing::warn!(%peer, kind = %kind, offset = e.offset, suppressed,
            "closing connection: {}", e.error)
        }
        ConnectionEnd::Io(e) => {
            tracing::info!(%peer, suppressed, "connection ended: read error: {e}")
        }
        ConnectionEnd::Handshake { error, count } => {
            tracing::warn!(%peer, reason = %error.reason, count, suppressed,
            "TLS handshake failed: {}", error.detail)
        }
        ConnectionEnd::Idle(_) => tracing::info!(%peer, suppressed, "closing connection: {end}"),
        _ => tracing::warn!(%peer, suppressed, "closing connection: {end}"),
    }
}

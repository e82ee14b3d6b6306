//! The accept loop: a bounded number of connections, one task each, each end logged once.
//! Knows nothing of outputs or filter rules.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::ServerSettings;
use crate::connection::{self, ConnectionEnd, Shared};
use crate::output::OutputSender;
use crate::pipeline::Pipeline;
use crate::tls::TlsServer;

/// Repeated warnings about refused connections are summarised at most this often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
}

impl Server {
    /// Binds the Beats listener; the output must already be running.
    pub async fn bind(
        settings: ServerSettings,
        pipeline: Pipeline,
        tls: Option<Arc<TlsServer>>,
        output: OutputSender,
        shutdown: CancellationToken,
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
        });
        Ok(Server {
            listener,
            shared,
            connections,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until shutdown, then gives open connections `shutdown_grace` to have their
    /// pending windows delivered and acknowledged; what is left is dropped unacknowledged.
    pub async fn run(self) {
        let mut tasks = JoinSet::new();
        let mut refused = 0u64;
        let mut last_refusal_log: Option<Instant> = None;
        let shutdown = self.shared.shutdown.clone();
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = shutdown.cancelled() => break,
            };
            while tasks.try_join_next().is_some() {}
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                refused += 1;
                if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                    tracing::warn!(%peer, refused, limit = self.shared.settings.max_connections,
                        "connection refused: server.max_connections reached");
                    last_refusal_log = Some(Instant::now());
                    refused = 0;
                }
                continue;
            };
            // ACKs are 6 bytes; Nagle would hold them back.
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            // The TLS handshake, if any, runs in the connection's task under its own
            // timeout: a slow or silent client never holds up the accept loop.
            tasks.spawn(async move {
                let end = connection::accepted(stream, peer, shared).await;
                log_end(peer, &end);
                drop(permit);
            });
        }
        drop(self.listener);
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
    }
}

/// One line per connection, at a level that says whether anyone needs to act.
fn log_end(peer: SocketAddr, end: &ConnectionEnd) {
    match end {
        ConnectionEnd::Closed | ConnectionEnd::Probe | ConnectionEnd::Shutdown => {
            tracing::debug!(%peer, "connection ended: {end}")
        }
        ConnectionEnd::Protocol(e) => {
            tracing::warn!(%peer, kind = %e.error.kind(), offset = e.offset,
            "closing connection: {}", e.error)
        }
        ConnectionEnd::Io(e) => tracing::info!(%peer, "connection ended: read error: {e}"),
        ConnectionEnd::Handshake { error, count } => {
            tracing::warn!(%peer, reason = %error.reason, count,
            "TLS handshake failed: {}", error.detail)
        }
        ConnectionEnd::Idle(_) => tracing::info!(%peer, "closing connection: {end}"),
        ConnectionEnd::Stalled(_) | ConnectionEnd::DeliveryFailed(_) => {
            tracing::warn!(%peer, "closing connection: {end}")
        }
    }
}

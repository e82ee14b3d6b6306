//! One client connection: decode frames, queue events for the output, and acknowledge each
//! window once the output has made all of it durable. Knows no output or filter details.
//!
//! Two halves run side by side: the reader (`reader.rs`: socket -> protocol session ->
//! pipeline -> window batches, `batcher.rs` -> output queue) and the acknowledger
//! (`acker.rs`: delivery results -> ACK frames, keep-alives while waiting). Either one
//! ending ends the connection; a window not yet acknowledged then never is, and the
//! client resends it (docs/PROTOCOL.md rule 5).

mod acker;
mod batcher;
mod reader;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::{CloseReason, Metrics};
use crate::output::OutputSender;
use crate::pipeline::Pipeline;
use crate::protocol::DecodeError;
use crate::record::TlsPeer;
use crate::server::settings::ServerSettings;
use crate::tls::{HandshakeError, TlsServer};
use acker::Acker;
use reader::Reader;

/// What every connection shares.
pub struct Shared {
    pub settings: ServerSettings,
    /// `Some` when the port speaks TLS.
    pub tls: Option<Arc<TlsServer>>,
    pub pipeline: Pipeline,
    pub output: OutputSender,
    /// Bytes of events held in memory, over all connections (the in-flight budget).
    pub budget: Arc<Semaphore>,
    /// Cancelled on shutdown: stop reading new windows, finish what is pending.
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    #[error("closed by the client")]
    Closed,
    #[error("connected and closed without sending a byte")]
    Probe,
    #[error("protocol error: {0}")]
    Protocol(#[from] DecodeError),
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed; `count` is how many failed for that reason so far.
    #[error("TLS handshake failed ({}): {error}", error.reason)]
    Handshake { error: HandshakeError, count: u64 },
    #[error("idle for {0:?} with nothing pending")]
    Idle(Duration),
    #[error(
        "output made no progress on the oldest window for {0:?}; closing so the client fails over"
    )]
    Stalled(Duration),
    /// Closed between windows, every ACK written, so that the client reconnects
    /// elsewhere (`server.max_connection_age`, this connection's jittered share of it).
    #[error("older than its max connection age ({0:?}); closed between windows to rebalance")]
    MaxAge(Duration),
    #[error("{0}")]
    DeliveryFailed(String),
    #[error("shutting down")]
    Shutdown,
}

impl ConnectionEnd {
    /// The `reason` of `lumberd_connections_closed_total`.
    pub fn reason(&self) -> CloseReason {
        match self {
            ConnectionEnd::Closed => CloseReason::Closed,
            ConnectionEnd::Probe => CloseReason::Probe,
            ConnectionEnd::Protocol(_) => CloseReason::ProtocolError,
            ConnectionEnd::Io(_) => CloseReason::IoError,
            ConnectionEnd::Handshake { .. } => CloseReason::TlsHandshakeFailed,
            ConnectionEnd::Idle(_) => CloseReason::Idle,
            ConnectionEnd::Stalled(_) => CloseReason::Stalled,
            ConnectionEnd::MaxAge(_) => CloseReason::MaxAge,
            ConnectionEnd::DeliveryFailed(_) => CloseReason::DeliveryFailed,
            ConnectionEnd::Shutdown => CloseReason::Shutdown,
        }
    }
}

/// After an age close the acknowledger has written the last ACK and a FIN; what the
/// client sent meanwhile (a pipelined window, never processed: it is resent elsewhere) is
/// read and dropped until its close, for at most `limit`. Closing with those bytes unread
/// would send a RST, which can make the client's kernel discard our last ACK unread.
async fn linger<R: AsyncRead + Unpin>(socket: &mut R, limit: Duration) {
    let mut sink = [0u8; 4096];
    let drain = async {
        while let Ok(n) = socket.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}

/// Events this connection received and has not acknowledged, mirrored in the
/// `lumberd_inflight_events` gauge; what is left when the connection ends (windows that
/// will be resent) is taken off the gauge then.
struct HeldEvents {
    gauge: prometheus::IntGauge,
    count: AtomicI64,
}

impl HeldEvents {
    fn add(&self, n: i64) {
        self.count.fetch_add(n, Ordering::Relaxed);
        self.gauge.add(n);
    }
}

impl Drop for HeldEvents {
    fn drop(&mut self) {
        self.gauge.sub(self.count.load(Ordering::Relaxed));
    }
}

/// A freshly accepted connection: the TLS handshake first when the port speaks TLS, then
/// the Beats protocol over whichever stream results. Returns why it ended, to log once.
pub async fn accepted(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) -> ConnectionEnd {
    let Some(tls) = shared.tls.clone() else {
        return serve(stream, peer, None, shared).await;
    };
    let handshake = tokio::select! {
        h = tokio::time::timeout(tls.handshake_timeout(), handshake(stream, &tls)) => h,
        _ = shared.shutdown.cancelled() => return ConnectionEnd::Shutdown,
    };
    let handshake =
        handshake.unwrap_or_else(|_| Err(HandshakeError::timed_out(tls.handshake_timeout())));
    match handshake {
        Ok(None) => ConnectionEnd::Probe,
        Ok(Some((stream, tls_peer))) => {
            shared.metrics.tls.handshake_ok();
            tracing::debug!(%peer, protocol = %tls_peer.protocol, cipher = %tls_peer.cipher,
                subject = tls_peer.subject.as_deref().unwrap_or("-"), sans = ?tls_peer.sans,
                "TLS handshake ok");
            serve(stream, peer, Some(tls_peer), shared).await
        }
        Err(error) => ConnectionEnd::Handshake {
            count: shared.metrics.tls.handshake_failed(error.reason),
            error,
        },
    }
}

/// Peeks at the first byte before handing the stream to rustls, so that what is not a
/// ClientHello is named as such (`HandshakeError::sniff`); `None` for a health-check
/// connect-and-close.
async fn handshake(
    stream: TcpStream,
    tls: &TlsServer,
) -> Result<Option<(TlsStream<TcpStream>, Arc<TlsPeer>)>, HandshakeError> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(HandshakeError::io(&e)),
    }
    if let Some(not_tls) = HandshakeError::sniff(first[0]) {
        return Err(not_tls);
    }
    tls.accept(stream).await.map(Some)
}

/// Serves one connection until it ends; returns why, for the caller to log once. `tls` is
/// the verified TLS peer when `stream` is a TLS session.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    tls: Option<Arc<TlsPeer>>,
    shared: Arc<Shared>,
) -> ConnectionEnd
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let max_age = shared.settings.connection_age_limit();
    let (mut read_half, write_half) = tokio::io::split(stream);
    let (pending_tx, pending_rx) = mpsc::channel(shared.settings.max_pending_windows);
    let waiting = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let held = Arc::new(HeldEvents {
        gauge: shared.metrics.receive.inflight_events.clone(),
        count: AtomicI64::new(0),
    });

    let reader = Reader {
        shared: shared.clone(),
        peer,
        tls,
        pending: pending_tx,
        waiting: waiting.clone(),
        stop: stop.clone(),
        held: held.clone(),
        max_age: max_age.map(|age| (age, Instant::now() + age)),
    };
    let acker = Acker {
        shared: shared.clone(),
        waiting,
        stop: stop.clone(),
        held,
    };
    let (read_end, ack_end) = tokio::join!(
        // Whatever ended the reader, the windows it completed before are still
        // acknowledged once delivered (fewer resends, fewer duplicates); only the broken
        // window is not (docs/PROTOCOL.md rule 5).
        reader.run(&mut read_half),
        async {
            let end = acker.run(write_half, pending_rx).await;
            stop.cancel();
            end
        }
    );
    if let ConnectionEnd::MaxAge(_) = read_end {
        linger(&mut read_half, shared.settings.keepalive_interval).await;
    }
    // The first real cause wins: a stalled output or failed delivery explains why the
    // reader saw the socket close under it.
    match (read_end, ack_end) {
        (ConnectionEnd::Closed | ConnectionEnd::Shutdown, Some(ack)) => ack,
        (read, _) => read,
    }
}

//! One client connection: decode frames, queue events for the output, and acknowledge each
//! window once the output has made all of it durable. Knows no output or filter details.
//!
//! Two halves run side by side: the reader (socket -> frames -> batches -> output queue)
//! and the acknowledger (delivery results -> ACK frames, keep-alives while waiting).
//! Either one ending ends the connection; a window not yet acknowledged then never is,
//! and the client resends it (docs/PROTOCOL.md rule 5).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chrono::Utc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::{FrameType, ReceiveMetrics};
use crate::output::{Batch, Delivery, DeliveryReceiver, OutputSender};
use crate::pipeline::{Pipeline, Scratch};
use crate::protocol::{encode_ack, CompletedWindow, DecodeError, Payload, Session, Step};
use crate::record::{Origin, Record, TlsPeer};
use crate::server::settings::ServerSettings;
use crate::tls::{HandshakeError, HandshakeFailure, TlsServer};

/// Bytes read from the socket per call.
const READ_CHUNK: usize = 16 * 1024;
/// Frames announcing more than this are reserved against the budget before being read.
const RESERVE_THRESHOLD: usize = READ_CHUNK;
/// Budget charged per event beyond its payload: the record, index handle and batch slot.
const EVENT_OVERHEAD: usize = 64;

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
    pub metrics: ReceiveMetrics,
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
    #[error("{0}")]
    DeliveryFailed(String),
    #[error("shutting down")]
    Shutdown,
}

impl ConnectionEnd {
    /// The fixed `reason` label of `lumberd_connections_closed_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ConnectionEnd::Closed => "closed",
            ConnectionEnd::Probe => "probe",
            ConnectionEnd::Protocol(_) => "protocol_error",
            ConnectionEnd::Io(_) => "io_error",
            ConnectionEnd::Handshake { .. } => "tls_handshake_failed",
            ConnectionEnd::Idle(_) => "idle",
            ConnectionEnd::Stalled(_) => "stalled",
            ConnectionEnd::DeliveryFailed(_) => "delivery_failed",
            ConnectionEnd::Shutdown => "shutdown",
        }
    }
}

struct Pending {
    window: CompletedWindow,
    delivery: DeliveryReceiver,
    /// When the window's last frame arrived: the ACK latency starts here.
    completed_at: Instant,
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
    let failed = |error: HandshakeError| ConnectionEnd::Handshake {
        count: tls.counters.handshake_failed(error.reason),
        error,
    };
    match handshake {
        Err(_) => failed(HandshakeError {
            reason: HandshakeFailure::Timeout,
            detail: format!(
                "no complete handshake within tls.handshake_timeout ({:?})",
                tls.handshake_timeout()
            ),
        }),
        Ok(Ok(None)) => ConnectionEnd::Probe,
        Ok(Ok(Some((stream, tls_peer)))) => {
            tls.counters.handshake_ok();
            tracing::debug!(%peer, protocol = %tls_peer.protocol, cipher = %tls_peer.cipher,
                subject = tls_peer.subject.as_deref().unwrap_or("-"), sans = ?tls_peer.sans,
                "TLS handshake ok");
            serve(stream, peer, Some(tls_peer), shared).await
        }
        Ok(Err(error)) => failed(error),
    }
}

/// Looks at the first byte before handing the stream to rustls, so that a plain Beats
/// client or an HTTP request is named as such (docs/PROTOCOL.md rule 7); `None` for a
/// health-check connect-and-close.
async fn handshake(
    stream: TcpStream,
    tls: &TlsServer,
) -> Result<Option<(TlsStream<TcpStream>, Arc<TlsPeer>)>, HandshakeError> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => {
            return Err(HandshakeError {
                reason: HandshakeFailure::Io,
                detail: e.to_string(),
            })
        }
    }
    if let Some(reason) = HandshakeFailure::from_first_byte(first[0]) {
        let detail = match reason {
            HandshakeFailure::PlainBeats => {
                "a plain Beats client on the TLS port (enable ssl in the client's output.logstash)"
            }
            HandshakeFailure::Http => "an HTTP request on the TLS Beats port",
            _ => "not a TLS ClientHello",
        };
        return Err(HandshakeError {
            reason,
            detail: format!("{detail} (first byte 0x{:02x})", first[0]),
        });
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
    let (read_half, write_half) = tokio::io::split(stream);
    let (pending_tx, pending_rx) = mpsc::channel(shared.settings.max_pending_windows);
    let waiting = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let held = Arc::new(HeldEvents {
        gauge: shared.metrics.inflight_events.clone(),
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
        reader.run(read_half),
        async {
            let end = acker.run(write_half, pending_rx).await;
            stop.cancel();
            end
        }
    );
    // The first real cause wins: a stalled output or failed delivery explains why the
    // reader saw the socket close under it.
    match (read_end, ack_end) {
        (ConnectionEnd::Closed | ConnectionEnd::Shutdown, Some(ack)) => ack,
        (read, _) => read,
    }
}

struct Reader {
    shared: Arc<Shared>,
    peer: SocketAddr,
    tls: Option<Arc<TlsPeer>>,
    pending: mpsc::Sender<Pending>,
    waiting: Arc<AtomicUsize>,
    stop: CancellationToken,
    held: Arc<HeldEvents>,
}

/// The window being received: its delivery handle and its events not yet queued.
struct OpenWindow {
    delivery: Delivery,
    receiver: DeliveryReceiver,
    records: Vec<Record>,
    budget: Option<OwnedSemaphorePermit>,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(self, socket: R) -> ConnectionEnd {
        let mut session = Session::new(self.shared.settings.limits);
        let mut stats = CodecStats::default();
        let end = self.receive(socket, &mut session, &mut stats).await;
        stats.report(&session, &self.shared.metrics);
        end
    }

    async fn receive<R: AsyncRead + Unpin>(
        &self,
        mut socket: R,
        session: &mut Session,
        stats: &mut CodecStats,
    ) -> ConnectionEnd {
        let settings = &self.shared.settings;
        let mut scratch = Scratch::default();
        let mut open: Option<OpenWindow> = None;
        // Budget reserved for a large frame before its bytes are read.
        let mut reserved: Option<OwnedSemaphorePermit> = None;

        loop {
            let (frame, completed) = match session.next() {
                Ok(Some(Step::Event { frame, completes })) => (frame, completes),
                Ok(Some(Step::Window { .. })) => {
                    reserved = None;
                    self.shared.metrics.frame(FrameType::Window);
                    let (delivery, receiver) = Delivery::new();
                    open = Some(OpenWindow {
                        delivery,
                        receiver,
                        records: Vec::new(),
                        budget: None,
                    });
                    continue;
                }
                Ok(Some(Step::End { probe: true })) => return ConnectionEnd::Probe,
                Ok(Some(Step::End { probe: false })) => return ConnectionEnd::Closed,
                Ok(None) => {
                    stats.report(session, &self.shared.metrics);
                    let demand = session.buffer_demand();
                    if demand > RESERVE_THRESHOLD && reserved.is_none() {
                        match self.acquire(demand, &mut open).await {
                            Some(p) => reserved = Some(p),
                            None => return ConnectionEnd::Shutdown,
                        }
                    }
                    let mid_window = session.in_window();
                    match self.read(&mut socket, session.buffer(), mid_window).await {
                        Ok(0) => session.end_of_stream(),
                        Ok(_) => {}
                        Err(end) => return end,
                    }
                    continue;
                }
                Err(e) => return e.into(),
            };
            reserved = None;
            let origin = Origin::new(self.peer, Utc::now(), self.tls.clone());
            let metrics = &self.shared.metrics;
            metrics.events.inc();
            self.held.add(1);
            let record = match frame.payload {
                Payload::Json(payload) => {
                    metrics.frame(FrameType::Json);
                    self.shared
                        .pipeline
                        .process_json(payload, &origin, &mut scratch)
                }
                Payload::Pairs(pairs) => {
                    metrics.frame(FrameType::Data);
                    self.shared
                        .pipeline
                        .process_pairs(&pairs, &origin, &mut scratch)
                }
            };
            // A dropped event (a `drop` filter) holds nothing; its window still completes.
            if let Some(record) = record {
                let Some(permit) = self
                    .acquire(record.size() + EVENT_OVERHEAD, &mut open)
                    .await
                else {
                    return ConnectionEnd::Shutdown;
                };
                // The tracker guarantees a data frame is inside an announced window.
                let win = open.as_mut().expect("data frame inside a window");
                match &mut win.budget {
                    Some(held) => held.merge(permit),
                    None => win.budget = Some(permit),
                }
                win.records.push(record);
            }
            let win = open.as_mut().expect("data frame inside a window");
            let full = win.records.len() >= settings.batch_events || completed.is_some();
            if full && !self.flush(win).await {
                return ConnectionEnd::Shutdown;
            }
            if let Some(window) = completed {
                let win = open.take().expect("completed window was open");
                let OpenWindow {
                    delivery, receiver, ..
                } = win;
                // Every batch of the window is queued: this handle has nothing left to wait for.
                delivery.delivered();
                self.waiting.fetch_add(1, Ordering::AcqRel);
                if self
                    .pending
                    .send(Pending {
                        window,
                        delivery: receiver,
                        completed_at: Instant::now(),
                    })
                    .await
                    .is_err()
                {
                    return ConnectionEnd::Closed;
                }
            }
        }
    }

    /// Queues the window's records gathered so far; false when the output is gone.
    async fn flush(&self, win: &mut OpenWindow) -> bool {
        let batch = Batch {
            records: std::mem::replace(
                &mut win.records,
                Vec::with_capacity(self.shared.settings.batch_events.min(64)),
            ),
            budget: win.budget.take(),
            delivery: win.delivery.share(),
        };
        // Not cancelled by shutdown: a window being received is finished and delivered
        // during the drain (the grace period bounds it).
        tokio::select! {
            sent = self.shared.output.send(batch) => sent.is_ok(),
            _ = self.stop.cancelled() => false,
        }
    }

    /// Takes `bytes` from the in-flight budget, waiting (and so not reading: TCP
    /// backpressure) while it is exhausted. `None` when the connection must stop.
    ///
    /// Before waiting, the open window's partial batch is handed to the output: budget
    /// held in unqueued batches while every connection waits for more would deadlock
    /// (many connections each holding part of a window).
    async fn acquire(
        &self,
        bytes: usize,
        open: &mut Option<OpenWindow>,
    ) -> Option<OwnedSemaphorePermit> {
        // Config validation keeps a frame within the budget, so this always fits.
        let n = bytes.min(self.shared.settings.max_inflight_bytes as usize) as u32;
        if let Ok(p) = self.shared.budget.clone().try_acquire_many_owned(n) {
            return Some(p);
        }
        if let Some(win) = open.as_mut().filter(|w| !w.records.is_empty()) {
            if !self.flush(win).await {
                return None;
            }
        }
        tokio::select! {
            p = self.shared.budget.clone().acquire_many_owned(n) => p.ok(),
            _ = self.stop.cancelled() => None,
        }
    }

    /// One read; `Err` ends the connection (I/O error, idle, shutdown, acker stopped).
    /// On shutdown a connection stops reading between windows; inside one
    /// (`mid_window`) it reads on until the window is complete, so that what the client
    /// has started sending is acknowledged rather than resent.
    async fn read<R: AsyncRead + Unpin>(
        &self,
        socket: &mut R,
        buf: &mut BytesMut,
        mid_window: bool,
    ) -> Result<usize, ConnectionEnd> {
        let idle = self.shared.settings.idle_timeout;
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let shutdown = async {
            if mid_window {
                std::future::pending::<()>().await
            } else {
                self.shared.shutdown.cancelled().await
            }
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                // Checked before the socket: once shutdown has begun, a connection
                // between windows stops even when its client has already sent more (a
                // random pick would sometimes start a new window during the drain).
                biased;
                _ = self.stop.cancelled() => return Err(ConnectionEnd::Closed),
                _ = &mut shutdown => return Err(ConnectionEnd::Shutdown),
                r = tokio::time::timeout(idle, socket.read_buf(buf)) => match r {
                    Ok(Ok(n)) => {
                        self.shared.metrics.received_bytes.inc_by(n as u64);
                        return Ok(n);
                    }
                    // rustls reports a TCP close without close_notify as UnexpectedEof;
                    // the framing already tells a truncated window from a clean end, so
                    // this is an end of stream like any other (plain TCP never says it).
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
                    Ok(Err(e)) => return Err(e.into()),
                    // A client waiting for our ACK sends nothing: not idle.
                    Err(_) if self.waiting.load(Ordering::Acquire) > 0 => continue,
                    Err(_) => return Err(ConnectionEnd::Idle(idle)),
                },
            }
        }
    }
}

/// What the codec counted, reported to the metrics as it grows.
#[derive(Default)]
struct CodecStats {
    compressed_frames: u64,
    inflated_bytes: u64,
}

impl CodecStats {
    fn report(&mut self, session: &Session, metrics: &ReceiveMetrics) {
        let (frames, bytes) = (session.compressed_frames(), session.inflated_bytes());
        metrics.frames(FrameType::Compressed, frames - self.compressed_frames);
        if bytes > self.inflated_bytes {
            metrics.inflated_bytes.inc_by(bytes - self.inflated_bytes);
        }
        (self.compressed_frames, self.inflated_bytes) = (frames, bytes);
    }
}

struct Acker {
    shared: Arc<Shared>,
    waiting: Arc<AtomicUsize>,
    stop: CancellationToken,
    held: Arc<HeldEvents>,
}

impl Acker {
    /// Acknowledges windows in order (docs/PROTOCOL.md rule 3); returns a reason when it ended
    /// the connection itself.
    async fn run<W: AsyncWrite + Unpin>(
        self,
        mut socket: W,
        mut pending: mpsc::Receiver<Pending>,
    ) -> Option<ConnectionEnd> {
        let keepalive = self.shared.settings.keepalive_interval;
        let stall = self.shared.settings.stall_timeout;
        let mut out = BytesMut::with_capacity(6);
        loop {
            let next = tokio::select! {
                p = pending.recv() => p,
                _ = self.stop.cancelled() => None,
            };
            let Pending {
                window,
                mut delivery,
                completed_at,
            } = next?;
            let since = Instant::now();
            let metrics = &self.shared.metrics;
            let result = loop {
                tokio::select! {
                    r = &mut delivery => break r.unwrap_or(Err(crate::output::DeliveryFailed::OutputStopped)),
                    _ = self.stop.cancelled() => return None,
                    _ = tokio::time::sleep(keepalive) => {
                        if since.elapsed() >= stall {
                            return Some(ConnectionEnd::Stalled(stall));
                        }
                        // Keep-alive: ACK 0 resets the client's timeout without completing
                        // anything (docs/PROTOCOL.md rule 4).
                        encode_ack(window.keepalive(), &mut out);
                        if self.write(&mut socket, &mut out).await.is_err() {
                            return None;
                        }
                        metrics.keepalives.inc();
                    }
                }
            };
            if let Err(e) = result {
                return Some(ConnectionEnd::DeliveryFailed(e.to_string()));
            }
            encode_ack(window.ack(), &mut out);
            if self.write(&mut socket, &mut out).await.is_err() {
                return None;
            }
            metrics.windows_acknowledged.inc();
            metrics
                .ack_latency
                .observe(completed_at.elapsed().as_secs_f64());
            self.held.add(-i64::from(window.count));
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    async fn write<W: AsyncWrite + Unpin>(
        &self,
        socket: &mut W,
        out: &mut BytesMut,
    ) -> std::io::Result<()> {
        let stall = self.shared.settings.stall_timeout;
        let r = tokio::time::timeout(stall, socket.write_all(out)).await;
        out.clear();
        match r {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client not reading ACKs",
            )),
        }
    }
}

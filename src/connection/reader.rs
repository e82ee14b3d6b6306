//! The reader: socket bytes into the protocol session, each event through the pipeline
//! into the window's batches, batches into the output queue, and each completed window
//! to the acknowledger. Reading stops while the in-flight budget is exhausted (TCP then
//! pushes back on the client). Knows no frame layout (the session does) and no output.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::acker::Pending;
use super::batcher::{LastBatch, WindowBatcher};
use super::{ConnectionEnd, HeldEvents, Shared};
use crate::metrics::{FrameType, ReceiveMetrics};
use crate::output::Batch;
use crate::pipeline::Scratch;
use crate::protocol::{CompletedWindow, DataFrame, Payload, Session, Step, LARGE_FRAME_BYTES};
use crate::record::{Origin, Record, TlsPeer};

/// Bytes read from the socket per call: one large frame's threshold, so a small frame
/// never needs more than two reads' worth of buffer.
const READ_CHUNK: usize = LARGE_FRAME_BYTES;
/// A connection whose buffer was released (between windows) waits for its next bytes in
/// this much stack, not in a `READ_CHUNK` allocation: an idle connection holds no buffer.
const FIRST_READ_BYTES: usize = 64;
/// Budget charged per event beyond its payload: the record, index handle and batch slot.
const EVENT_OVERHEAD: usize = 64;
/// A large frame reserves this many times its bytes before they are read: the payload,
/// and the record the pipeline makes of it while the payload is alive (the pipeline
/// sizes a rewritten document at twice its payload).
const LARGE_FRAME_RESERVE_FACTOR: usize = 2;

thread_local! {
    /// The pipeline's scratch arena, one per runtime thread rather than per connection:
    /// an event is processed synchronously (no await), so a thread's arena serves every
    /// connection it runs, and idle connections hold none.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

pub(super) struct Reader {
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
    pub tls: Option<Arc<TlsPeer>>,
    pub pending: mpsc::Sender<Pending>,
    /// Windows handed to the acknowledger and not yet acknowledged.
    pub waiting: Arc<AtomicUsize>,
    pub stop: CancellationToken,
    pub held: Arc<HeldEvents>,
    /// This connection's age limit and when it passes (`server.max_connection_age`).
    pub max_age: Option<(Duration, Instant)>,
}

impl Reader {
    pub async fn run<R: AsyncRead + Unpin>(self, socket: R) -> ConnectionEnd {
        let mut session = Session::new(self.shared.settings.limits);
        let mut stats = SessionStats::default();
        let Err(end) = self.receive(socket, &mut session, &mut stats).await;
        stats.report(&session, &self.shared.metrics.receive, &self.held);
        end
    }

    /// Reads until the connection ends, which is the only way out: `Err` says why.
    async fn receive<R: AsyncRead + Unpin>(
        &self,
        mut socket: R,
        session: &mut Session,
        stats: &mut SessionStats,
    ) -> Result<Infallible, ConnectionEnd> {
        let mut batcher = WindowBatcher::new(self.shared.settings.batch_events);
        // Budget reserved for a large frame before its bytes are read; it covers the
        // frame until the record made of it holds its own share.
        let mut reserved: Option<OwnedSemaphorePermit> = None;
        // When the bytes being decoded arrived: every event of one read arrived together.
        let mut received = Utc::now();
        loop {
            let Some(step) = session.next()? else {
                stats.report(session, &self.shared.metrics.receive, &self.held);
                let demand = session.buffer_demand();
                if demand > LARGE_FRAME_BYTES && reserved.is_none() {
                    let bytes = LARGE_FRAME_RESERVE_FACTOR * demand;
                    reserved = Some(self.acquire(bytes, &mut batcher).await?);
                    session.make_room();
                }
                let mid_window = session.in_window();
                if self.read(&mut socket, session.buffer(), mid_window).await? == 0 {
                    session.end_of_stream();
                }
                received = Utc::now();
                continue;
            };
            let mut reservation = reserved.take();
            match step {
                Step::Window { .. } => self.shared.metrics.receive.frames.inc(FrameType::Window),
                Step::Event { frame, completes } => {
                    let len = frame.payload.len();
                    if reservation.is_none() && len > LARGE_FRAME_BYTES {
                        // A large frame that came whole in one read: reserved now, before
                        // the pipeline makes a record of it.
                        let bytes = LARGE_FRAME_RESERVE_FACTOR * len + EVENT_OVERHEAD;
                        reservation = Some(self.acquire(bytes, &mut batcher).await?);
                    }
                    // A dropped event (a `drop` filter) holds nothing; its window still
                    // completes.
                    if let Some(record) = self.event(frame, len, received, stats) {
                        let size = record.size() + EVENT_OVERHEAD;
                        self.hold(record, size, reservation, &mut batcher).await?;
                    }
                    match completes {
                        Some(window) => {
                            // Counted before the acknowledger can take the window off.
                            stats.report(session, &self.shared.metrics.receive, &self.held);
                            self.complete(window, batcher.finish()).await?;
                            // The window boundary, also when the next window is already
                            // buffered (a client that never waits for an ACK).
                            if let Some((age, at)) = self.max_age {
                                if Instant::now() >= at {
                                    return Err(ConnectionEnd::MaxAge(age));
                                }
                            }
                        }
                        None => {
                            if let Some(full) = batcher.full() {
                                self.send(full).await?;
                            }
                        }
                    }
                }
                Step::End { probe: true } => return Err(ConnectionEnd::Probe),
                Step::End { probe: false } => return Err(ConnectionEnd::Closed),
            }
        }
    }

    /// Puts `record` (`size` bytes) in the window's batch with budget for it: taken from
    /// the frame's reservation when it fits (the rest goes back), else from the budget.
    /// A record that outgrew its reservation goes out with it first: waiting for the rest
    /// while holding it could deadlock connections that each hold part of the budget.
    async fn hold(
        &self,
        record: Record,
        size: usize,
        reserved: Option<OwnedSemaphorePermit>,
        batcher: &mut WindowBatcher,
    ) -> Result<(), ConnectionEnd> {
        let Some(mut reserved) = reserved else {
            let permit = self.acquire(size, batcher).await?;
            batcher.push(record, permit);
            return Ok(());
        };
        let held = reserved.num_permits();
        if size <= held {
            let permit = reserved
                .split(size)
                .expect("size is within the reservation");
            batcher.push(record, permit);
            return Ok(());
        }
        batcher.push(record, reserved);
        let rest = self.acquire(size - held, batcher).await?;
        batcher.hold(rest);
        Ok(())
    }

    /// One event through the pipeline, counted (in `stats`, reported between reads);
    /// the record to store, if any. Not async: a future per event would be built and
    /// copied for every event.
    fn event(
        &self,
        frame: DataFrame,
        len: usize,
        received: DateTime<Utc>,
        stats: &mut SessionStats,
    ) -> Option<Record> {
        let metrics = &self.shared.metrics;
        stats.events += 1;
        let origin = Origin::new(self.peer, received, self.tls.clone());
        let pipeline = &self.shared.pipeline;
        let outcome = SCRATCH.with_borrow_mut(|scratch| {
            let outcome = match frame.payload {
                Payload::Json(payload) => {
                    stats.json_frames += 1;
                    pipeline.process_json(payload, &origin, scratch)
                }
                Payload::Pairs(pairs) => {
                    stats.data_frames += 1;
                    pipeline.process_pairs(&pairs, &origin, scratch)
                }
            };
            // A large event's arena goes now, not at the thread's next event.
            if len > LARGE_FRAME_BYTES {
                *scratch = Scratch::default();
            }
            outcome
        });
        metrics.pipeline.count(&outcome);
        outcome.into_record()
    }

    /// Queues a completed window's last batch and hands the window to the acknowledger.
    async fn complete(
        &self,
        window: CompletedWindow,
        last: LastBatch,
    ) -> Result<(), ConnectionEnd> {
        self.send(last.batch).await?;
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let pending = Pending {
            window,
            delivery: last.delivered,
            completed_at: Instant::now(),
        };
        self.pending
            .send(pending)
            .await
            .map_err(|_| ConnectionEnd::Closed)
    }

    /// Queues one batch for the output.
    async fn send(&self, batch: Batch) -> Result<(), ConnectionEnd> {
        // Not cancelled by shutdown: a window being received is finished and delivered
        // during the drain (the grace period bounds it).
        tokio::select! {
            sent = self.shared.output.send(batch) => sent.map_err(|_| ConnectionEnd::Shutdown),
            _ = self.stop.cancelled() => Err(ConnectionEnd::Shutdown),
        }
    }

    /// Takes `bytes` from the in-flight budget, waiting (and so not reading: TCP
    /// backpressure) while it is exhausted; the window's partial batch goes to the output
    /// first (see [`WindowBatcher::partial`]).
    async fn acquire(
        &self,
        bytes: usize,
        batcher: &mut WindowBatcher,
    ) -> Result<OwnedSemaphorePermit, ConnectionEnd> {
        // Config validation keeps a frame within the budget, so this always fits.
        let n = bytes.min(self.shared.settings.max_inflight_bytes as usize) as u32;
        if let Ok(p) = self.shared.budget.clone().try_acquire_many_owned(n) {
            return Ok(p);
        }
        if let Some(partial) = batcher.partial() {
            self.send(partial).await?;
        }
        tokio::select! {
            p = self.shared.budget.clone().acquire_many_owned(n) => p.map_err(|_| ConnectionEnd::Shutdown),
            _ = self.stop.cancelled() => Err(ConnectionEnd::Shutdown),
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
        let shutdown = async {
            if mid_window {
                std::future::pending::<()>().await
            } else {
                self.shared.shutdown.cancelled().await
            }
        };
        tokio::pin!(shutdown);
        // Between windows only, so that no window is half read: ending here lets the
        // acknowledger write every pending ACK before the socket closes.
        let aged = async {
            match self.max_age {
                Some((age, at)) if !mid_window => {
                    tokio::time::sleep_until(at).await;
                    age
                }
                _ => std::future::pending().await,
            }
        };
        tokio::pin!(aged);
        loop {
            tokio::select! {
                // Checked before the socket: once shutdown has begun, a connection
                // between windows stops even when its client has already sent more (a
                // random pick would sometimes start a new window during the drain).
                biased;
                _ = self.stop.cancelled() => return Err(ConnectionEnd::Closed),
                _ = &mut shutdown => return Err(ConnectionEnd::Shutdown),
                age = &mut aged => return Err(ConnectionEnd::MaxAge(age)),
                r = tokio::time::timeout(idle, read_some(socket, buf)) => match r {
                    Ok(Ok(n)) => {
                        self.shared.metrics.receive.received_bytes.inc_by(n as u64);
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

/// One read into `buf`. A released buffer (capacity 0: between windows) is allocated only
/// once bytes have come, so a connection waiting for its next window holds none.
async fn read_some<R: AsyncRead + Unpin>(
    socket: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.capacity() == 0 {
        let mut first = [0u8; FIRST_READ_BYTES];
        let n = socket.read(&mut first).await?;
        buf.reserve(READ_CHUNK);
        buf.extend_from_slice(&first[..n]);
        return Ok(n);
    }
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    socket.read_buf(buf).await
}

/// What the session and the reader counted, reported to the metrics between reads and at
/// each window's end (not per event: shared counters bounce between the cores).
#[derive(Default)]
struct SessionStats {
    compressed_frames: u64,
    inflated_bytes: u64,
    /// Since the last report.
    events: u64,
    json_frames: u64,
    data_frames: u64,
}

impl SessionStats {
    fn report(&mut self, session: &Session, metrics: &ReceiveMetrics, held: &HeldEvents) {
        if self.events > 0 {
            metrics.events.inc_by(self.events);
            held.add(self.events as i64);
            metrics.frames.inc_by(FrameType::Json, self.json_frames);
            metrics.frames.inc_by(FrameType::Data, self.data_frames);
            (self.events, self.json_frames, self.data_frames) = (0, 0, 0);
        }
        let (frames, bytes) = (session.compressed_frames(), session.inflated_bytes());
        metrics
            .frames
            .inc_by(FrameType::Compressed, frames - self.compressed_frames);
        if bytes > self.inflated_bytes {
            metrics.inflated_bytes.inc_by(bytes - self.inflated_bytes);
        }
        (self.compressed_frames, self.inflated_bytes) = (frames, bytes);
    }
}

//! The acknowledger: waits for each window's delivery in order and writes its ACK,
//! sending keep-alives while it waits and giving up on an output that makes no progress.
//! Knows nothing of decoding or of what an output does with a batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ConnectionEnd, HeldEvents, Shared};
use crate::output::DeliveryReceiver;
use crate::protocol::{encode_ack, CompletedWindow};

/// A completed window, its batches all queued, waiting for the output.
pub(super) struct Pending {
    pub window: CompletedWindow,
    pub delivery: DeliveryReceiver,
    /// When the window's last frame arrived: the ACK latency starts here.
    pub completed_at: Instant,
}

pub(super) struct Acker {
    pub shared: Arc<Shared>,
    pub waiting: Arc<AtomicUsize>,
    pub stop: CancellationToken,
    pub held: Arc<HeldEvents>,
}

impl Acker {
    /// Acknowledges windows in order (docs/PROTOCOL.md rule 3); returns a reason when it ended
    /// the connection itself.
    pub async fn run<W: AsyncWrite + Unpin>(
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
            let Some(Pending {
                window,
                mut delivery,
                completed_at,
            }) = next
            else {
                // The reader has ended and every window it completed is acknowledged:
                // a FIN (TLS: close_notify) after the last ACK tells the client that
                // nothing more will be acknowledged here, and it reconnects.
                let _ = tokio::time::timeout(
                    self.shared.settings.keepalive_interval,
                    socket.shutdown(),
                )
                .await;
                return None;
            };
            let since = Instant::now();
            let metrics = &self.shared.metrics.receive;
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

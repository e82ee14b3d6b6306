//! The Elasticsearch bulk output: batches from the bounded queue become deliveries (a
//! few in flight), each settled by a [`settle::Settlement`] that this writer drives
//! (it sends, sleeps and records metrics and logs), and a batch is reported delivered
//! only when every record of it is indexed, a duplicate, or stored as a dead letter.
//! Knows nothing of Lumberjack or the receive side.
//!
//! Backpressure: the writer takes a batch from the queue only when a request slot is
//! free, and every batch keeps its share of the in-flight byte budget until it is
//! delivered; a slow Elasticsearch fills the queue and then the budget, and connections
//! stop reading (keep-alives continue, they are the connections' own).

pub mod bulk;
pub mod settings;
pub mod settle;
pub mod setup;
pub mod sniff;
pub mod transport;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use self::bulk::Item;
use self::settings::EsSettings;
use self::settle::{Policy, Rejected, Report, Settlement, Signal, Verdict};
pub use self::setup::SetupError;
use self::transport::Hosts;
use super::{Batch, DeliveryFailed, OutputSender};
use crate::metrics::{EventOutcome, OutputMetrics};
use crate::throttle::LogThrottle;

/// The output's state as last seen, logged once per transition and exported as
/// `lumberd_output_up`.
#[derive(Debug)]
pub struct Health {
    state: AtomicU8,
    gauge: prometheus::IntGauge,
}

impl Health {
    pub fn new(gauge: prometheus::IntGauge) -> Health {
        Health {
            state: AtomicU8::new(UNKNOWN),
            gauge,
        }
    }
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl Health {
    pub fn up(&self) {
        self.gauge.set(1);
        if self.state.swap(UP, Ordering::AcqRel) != UP {
            tracing::info!(state = "up", "Elasticsearch output is up");
        }
    }

    pub fn down(&self, reason: &dyn std::fmt::Display) {
        self.gauge.set(0);
        if self.state.swap(DOWN, Ordering::AcqRel) != DOWN {
            tracing::warn!(
                state = "down",
                reason = %reason,
                "Elasticsearch output is down; retrying"
            );
        }
    }

    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    #[cfg(test)]
    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }
}

/// The running output: the writer task and its requests, and node discovery if on.
pub struct EsOutput {
    task: tokio::task::JoinHandle<()>,
    sniffer: Option<tokio::task::JoinHandle<()>>,
}

impl EsOutput {
    /// Builds the transport, waits until Elasticsearch answers (up to `ready_timeout`),
    /// installs the templates, then starts the writer, which holds `alive` until it ends.
    /// Nothing is bound before this.
    pub async fn start(
        settings: &EsSettings,
        queue_batches: usize,
        metrics: OutputMetrics,
        log: Arc<LogThrottle>,
        alive: impl Send + 'static,
    ) -> Result<(OutputSender, EsOutput), SetupError> {
        let hosts = Arc::new(Hosts::new(settings)?);
        let health = Arc::new(Health::new(metrics.up.clone()));
        setup::wait_ready(&hosts, settings, &health).await?;
        // The first round of discovery before any bulk request, so that requests spread
        // over the cluster from the first one; a failed round keeps the configured hosts.
        let sniffer = settings.sniff_interval.map(|every| {
            let (hosts, log) = (hosts.clone(), log.clone());
            tokio::spawn(sniff::run(hosts, every, log))
        });
        let (engine, retention) = setup::install(&hosts, settings).await?;
        tracing::info!(engine = ?engine, retention = ?retention, "Elasticsearch output set up");
        let (tx, rx) = mpsc::channel(queue_batches);
        let writer = Arc::new(Writer {
            hosts,
            settings: settings.clone(),
            health,
            metrics,
            log,
            spare_bodies: std::sync::Mutex::new(Vec::new()),
        });
        // `alive` is dropped when the writer ends: the liveness probe sees it.
        let task = tokio::spawn(async move {
            batch_loop(rx, writer).await;
            drop(alive);
        });
        Ok((tx, EsOutput { task, sniffer }))
    }

    /// Waits for queued batches to be delivered once every sender is gone, at most
    /// `grace`; batches still undelivered then are failed (their windows were not and
    /// will not be acknowledged; clients resend them).
    pub async fn join(self, grace: Duration) {
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!("Elasticsearch output did not drain within the grace period");
            abort.abort();
        }
        if let Some(s) = self.sniffer {
            s.abort();
        }
    }
}

/// Takes batches from the queue into requests of at most `bulk_max_events` events and
/// `bulk_max_bytes` bytes, sending a partial one after `flush_interval`. A request needs a
/// slot (`max_requests_in_flight`); while none is free the queue is not read.
async fn batch_loop(mut rx: mpsc::Receiver<Batch>, writer: Arc<Writer>) {
    let slots = Arc::new(Semaphore::new(writer.settings.max_requests_in_flight));
    let tracker = TaskTracker::new();
    let max_events = writer.settings.bulk_max_events;
    let max_bytes = writer.settings.bulk_max_bytes as usize;
    let mut pending: Vec<Batch> = Vec::new();
    let (mut events, mut bytes) = (0usize, 0usize);
    let mut deadline = Instant::now();
    loop {
        let next = if pending.is_empty() {
            loop {
                match tokio::time::timeout(SPARE_BODIES_IDLE, rx.recv()).await {
                    Ok(batch) => break batch,
                    // Idle: also the bodies of requests answered since are let go.
                    Err(_) => writer.release_bodies(),
                }
            }
        } else {
            tokio::select! {
                b = rx.recv() => b,
                _ = tokio::time::sleep_until(deadline) => {
                    flush(&mut pending, &slots, &tracker, &writer).await;
                    (events, bytes) = (0, 0);
                    continue;
                }
            }
        };
        let Some(batch) = next else { break };
        let dead_letters = &writer.settings.dead_letters;
        let size: usize = batch
            .records
            .iter()
            .map(|r| bulk::encoded_len(&r.doc, &dead_letters.resolve(r)))
            .sum();
        if !pending.is_empty() && bytes + size > max_bytes {
            flush(&mut pending, &slots, &tracker, &writer).await;
            (events, bytes) = (0, 0);
        }
        if pending.is_empty() {
            deadline = Instant::now() + writer.settings.flush_interval;
        }
        events += batch.records.len();
        bytes += size;
        pending.push(batch);
        if events >= max_events || bytes >= max_bytes {
            flush(&mut pending, &slots, &tracker, &writer).await;
            (events, bytes) = (0, 0);
        }
    }
    if !pending.is_empty() {
        flush(&mut pending, &slots, &tracker, &writer).await;
    }
    tracker.close();
    tracker.wait().await;
}

async fn flush(
    pending: &mut Vec<Batch>,
    slots: &Arc<Semaphore>,
    tracker: &TaskTracker,
    writer: &Arc<Writer>,
) {
    let batches = std::mem::take(pending);
    let slot = slots.clone().acquire_owned().await.expect("never closed");
    let writer = writer.clone();
    tracker.spawn(async move {
        writer.deliver(batches).await;
        drop(slot);
    });
}

struct Writer {
    hosts: Arc<Hosts>,
    settings: EsSettings,
    health: Arc<Health>,
    metrics: OutputMetrics,
    /// Rate-limits the retry and dead-letter warnings (an outage repeats them).
    log: Arc<LogThrottle>,
    /// Bodies of answered requests, written again by the next ones: a body is megabytes,
    /// above glibc's mmap threshold, so a fresh one per request was mapped, page-faulted
    /// and zeroed by the kernel each time (7-8% of lumberd's CPU into Elasticsearch).
    /// At most `max_requests_in_flight` (a body is taken from here or made only while
    /// fewer are in use), and given back to the allocator once the output is idle.
    spare_bodies: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// An output with nothing queued for this long gives its spare bodies back.
const SPARE_BODIES_IDLE: Duration = Duration::from_secs(1);

/// Appends dead letters to the local file in bulk form and fsyncs it, off the runtime;
/// a tail torn by a crash or a failed write is cut first, so the file stays a valid
/// `_bulk` body.
async fn append_dead_letters(path: std::path::PathBuf, letters: Vec<Item>) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let (mut file, created, tail) = super::bulk_file::open_append(&path)?;
        tail.log(&path);
        file.write_all(&bulk::encode(letters.iter()))?;
        file.sync_data()?;
        // A new file's directory entry must be durable too.
        match path
            .parent()
            .filter(|d| created && !d.as_os_str().is_empty())
        {
            Some(dir) => std::fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

impl Writer {
    fn spare_body(&self) -> Vec<u8> {
        self.spare_bodies
            .lock()
            .expect("never poisoned")
            .pop()
            .unwrap_or_default()
    }

    /// Keeps an answered request's body for the next one, when the HTTP client has let
    /// go of it (the clone is then the only handle; otherwise it is simply dropped).
    fn keep_body(&self, body: Bytes) {
        if let Ok(body) = body.try_into_mut() {
            let mut spare = self.spare_bodies.lock().expect("never poisoned");
            if spare.len() < self.settings.max_requests_in_flight {
                spare.push(Vec::from(body));
            }
        }
    }

    fn release_bodies(&self) {
        self.spare_bodies.lock().expect("never poisoned").clear();
    }

    /// Stores every record of `batches`, dead-lettering the rejected ones, then reports
    /// the batches delivered (and releases their budget). Retries until done: only a
    /// dead letter the cluster refuses too fails the batches.
    async fn deliver(&self, batches: Vec<Batch>) {
        let prefix = &self.settings.dead_letters;
        let items: Vec<Item> = batches
            .iter()
            .flat_map(|b| b.records.iter().map(|r| Item::from_record(r, prefix)))
            .collect();
        let rejected = self.settle(items).await;
        if !rejected.is_empty() {
            let now = chrono::Utc::now();
            let first = &rejected[0];
            if let Some(suppressed) = self.log.allow(("elasticsearch", "dead_letters")) {
                tracing::warn!(
                    count = rejected.len(),
                    status = first.status,
                    error_type = %first.kind,
                    reason = %first.reason,
                    index = %first.item.index,
                    suppressed,
                    "Elasticsearch rejected events; storing them as dead letters (first reason shown)"
                );
            }
            let letters: Vec<Item> = rejected
                .iter()
                .map(|r| {
                    r.item
                        .dead_letter(r.status, &r.kind, &r.reason, prefix, now)
                })
                .collect();
            let refused = match &self.settings.dead_letter_file {
                Some(path) => match append_dead_letters(path.clone(), letters).await {
                    Ok(()) => Vec::new(),
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e,
                            "cannot write dead letters; their windows are not acknowledged");
                        let reason = DeliveryFailed::DeadLetterFile {
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        };
                        batches.into_iter().for_each(|b| b.delivery.fail(&reason));
                        return;
                    }
                },
                None => self.settle(letters).await,
            };
            if let Some(r) = refused.first() {
                tracing::error!(
                    count = refused.len(),
                    status = r.status,
                    reason = %r.reason,
                    "Elasticsearch refused dead letters too; their windows are not acknowledged"
                );
                let reason = DeliveryFailed::DeadLetterRefused {
                    status: r.status,
                    reason: r.reason.clone(),
                };
                batches.into_iter().for_each(|b| b.delivery.fail(&reason));
                return;
            }
            self.metrics
                .events(EventOutcome::DeadLettered, rejected.len());
        }
        self.metrics.succeeded();
        for b in batches {
            b.delivery.delivered();
        }
    }

    /// Sends `items` until each is indexed, a duplicate, or rejected (the settlement
    /// decides what to send and when), recording each answer; returns the rejected.
    async fn settle(&self, items: Vec<Item>) -> Vec<Rejected> {
        let s = &self.settings;
        // One list for the whole settlement: discovery may replace it meanwhile.
        let nodes = self.hosts.nodes();
        let policy = Policy {
            max_bytes: s.bulk_max_bytes as usize,
            initial_backoff: s.retry_initial_backoff,
            max_backoff: s.retry_max_backoff,
            hosts: nodes.count(),
        };
        let first = self.hosts.first(&nodes);
        let mut settlement = Settlement::new(items, policy, first, fastrand::u64(..));
        while let Some(request) = settlement.request() {
            let mut body = self.spare_body();
            request.body_into(&mut body);
            let (host, body) = (request.host, Bytes::from(body));
            let sent_at = Instant::now();
            let answer = nodes.bulk(host, body.clone()).await;
            self.keep_body(body);
            self.metrics
                .bulk_duration
                .observe(sent_at.elapsed().as_secs_f64());
            let report = settlement.answer(answer);
            self.record(&report);
            if let Verdict::Backoff { wait, .. } = report.verdict {
                tokio::time::sleep(wait).await;
            }
        }
        settlement.finish()
    }

    /// An answer's metrics, health and log lines.
    fn record(&self, r: &Report) {
        self.metrics.bulk_request(r.request);
        self.metrics.events(EventOutcome::Indexed, r.indexed);
        self.metrics.events(EventOutcome::Duplicate, r.duplicates);
        match &r.health {
            Some(Signal::Up) => self.health.up(),
            Some(Signal::Down(fault)) => self.health.down(fault),
            None => {}
        }
        if r.duplicates > 0 {
            tracing::debug!(duplicates = r.duplicates, "events already stored (resent)");
        }
        if let Some(h) = r.halved {
            tracing::info!(
                status = h.status,
                items = h.items,
                "bulk request refused as a whole; sending it in halves"
            );
        }
        if let Verdict::Backoff {
            wait,
            attempt,
            items,
            reason,
        } = &r.verdict
        {
            self.metrics.events(EventOutcome::Retried, *items);
            // One line per failing round, with the first reason, not one per item; and
            // through an outage, one per log.repeat_interval.
            if let Some(suppressed) = self.log.allow(("elasticsearch", "retry")) {
                tracing::warn!(
                    items,
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    reason = %reason,
                    suppressed,
                    "bulk items not stored; retrying"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_state_changes_are_recorded_once_each() {
        let h = Health::new(prometheus::IntGauge::new("up", "up").unwrap());
        assert_eq!(h.state(), UNKNOWN);
        h.down(&"x");
        h.down(&"y");
        assert_eq!(h.state(), DOWN);
        h.up();
        assert!(h.is_up());
    }
}

//! The spool in front of the Elasticsearch output: a sink that makes each batch from the
//! queue durable in the [`crate::spool`] before its window may be acknowledged, and a
//! reader that feeds the Elasticsearch writer from the spool, in order, acknowledging
//! the spool only what Elasticsearch has settled. Knows Records and Batches, not
//! Lumberjack; the engine below knows only bytes.
//!
//! ```text
//! connections --Batch--> queue --> sink --append--> spool (fsync) --> Delivery: ACK may go
//!                                                     |
//!                   Elasticsearch writer <--Batch-- reader <--ack(position), in order
//! ```
//!
//! - A batch's Delivery completes once its records are fsynced (group commit is the
//!   engine's, across batches and connections), and its in-flight budget goes with it.
//! - A write error (disk full, unwritable directory) is retried with one throttled log
//!   line and a metric; the batch keeps its budget meanwhile, so connections stop
//!   reading (backpressure), and nothing unwritten is acknowledged.
//! - The spool is acknowledged in record order: a batch Elasticsearch settled waits for
//!   its predecessors; one it failed is sent again; at shutdown what is unsettled stays
//!   in the spool and is sent after the next start. The read position is saved once
//!   per bulk of settled records or 0.1 s after the first (one fsync each), and at
//!   shutdown: a crash replays at most that much again. Records keep their document
//!   ids, so anything sent twice is a 409 duplicate, never a second copy.
//! - **Caught-up fast path.** Each batch's Records go into the spool beside their
//!   frames ([`spool::Batch::attach`]); while the reader is caught up it is handed them
//!   once fsynced ([`spool::Read::Memory`]) and sends them to Elasticsearch as they
//!   are, instead of reading them back and decoding them. The read position and its
//!   acks are the same either way. Behind (Elasticsearch slow or down, or
//!   `spool.memory_bytes` reached) it reads from disk and comes back to the fast path
//!   once it has caught up. A batch from memory that Elasticsearch failed is not kept
//!   for a resend: the reader rewinds to its saved position and reads everything
//!   unacknowledged from disk again (batches after it that Elasticsearch did store come
//!   back as 409 duplicates).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Batch, Delivery, DeliveryFailed, DeliveryReceiver, OutputSender};
use crate::metrics::{SpoolMetrics, SpoolTotals};
use chrono::{Datelike, NaiveDate};

use crate::record::{
    DeadLetter, DeadLetterReason, Destination, DocId, IndexName, Record, MAX_INDEX_NAME_BYTES,
};
use crate::spool::{
    self, Appender, Handed, Position, Read, Reader, Refused, Spool, SpoolError, SpoolRecord,
    SpoolSettings, SpoolWatch,
};
use crate::throttle::LogThrottle;

/// The spool's settings as `[spool]` gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledSettings {
    pub spool: SpoolSettings,
    /// Fraction of `max_bytes` past which `/readyz` answers not-ready.
    pub high_water: f64,
}

/// How the reader sizes what it hands the Elasticsearch writer.
#[derive(Debug, Clone, Copy)]
pub struct ReadSizes {
    /// Records per batch: `server.batch_events`, what a connection would hand over.
    pub batch_records: usize,
    /// Batches read and not yet settled by Elasticsearch, at most: with
    /// [`READ_BATCH_BYTES`] this bounds the reader's memory whatever the spool holds.
    pub max_pending: usize,
}

/// Payload bytes per batch the reader builds, at most (at least one record).
pub const READ_BATCH_BYTES: usize = 1024 * 1024;
/// A write error is retried after this long: a full disk frees space in seconds at best.
const WRITE_RETRY: Duration = Duration::from_secs(1);
/// A batch Elasticsearch could not settle (its dead letters refused) is sent again after
/// this long.
const RESEND_DELAY: Duration = Duration::from_secs(1);
/// The read position is saved (one fsync) once this many records have settled since the
/// last save: one default bulk (`output.bulk_max_events`), so a writer that settles each
/// batch on its own costs no more fsyncs than one that settles a bulk at once. A
/// position not saved yet costs only a replay after a crash (409 duplicates), never a
/// loss.
const SAVE_EVERY_RECORDS: usize = 4096;
/// ... or this long after the first of them settled, so a quiet spool still saves (and
/// frees consumed segments) soon: the replay after a crash stays under 0.1 s of records.
const SAVE_AFTER: Duration = Duration::from_millis(100);

/// The version of the record layout below; a record of another version is corrupt.
const FORMAT: u8 = 2;

/// One Record as the spool stores it: format, then the destination (0, index length
/// u16 BE, index; or 1, the dead letter's reason and its day as days from the common era,
/// i32 BE), the id flag and the 32 hex digits, then the document to the end. The one
/// place a Record becomes bytes (and [`decode_record`] the one it comes back).
pub fn encode_record(r: &Record, out: &mut Vec<u8>) {
    encode_head(r, out);
    out.extend_from_slice(&r.doc);
}

/// Everything of [`encode_record`] before the document: the sink writes the document
/// to the spool from its own bytes ([`spool::Batch::push_with_doc`]).
fn encode_head(r: &Record, out: &mut Vec<u8>) {
    out.push(FORMAT);
    match &r.dest {
        Destination::Index(name) => {
            // At most MAX_INDEX_NAME_BYTES (255): IndexName checked it.
            out.push(0);
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        Destination::DeadLetter(d) => {
            out.push(1);
            out.push(match d.reason {
                DeadLetterReason::NotJsonObject => 0,
                DeadLetterReason::NotUtf8 => 1,
                DeadLetterReason::InvalidIndex => 2,
            });
            out.extend_from_slice(&d.day.num_days_from_ce().to_be_bytes());
        }
    }
    match &r.id {
        Some(id) => {
            out.push(1);
            out.extend_from_slice(id.as_str().as_bytes());
        }
        None => out.push(0),
    }
}

/// Why a spool record (its checksum good) is not a Record lumberd wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spool record is not a lumberd record: {0}")]
pub struct BadRecord(&'static str);

/// Decodes [`encode_record`]'s bytes; the document is a slice of `data`, not a copy.
/// `last_index` is the index of the record before: records of one day share it, so the
/// name is checked and allocated once per run of records rather than once per record.
pub fn decode_record(
    data: &Bytes,
    last_index: &mut Option<IndexName>,
) -> Result<Record, BadRecord> {
    let b = &data[..];
    let field = |at: usize, len: usize, what| b.get(at..at + len).ok_or(BadRecord(what));
    if *field(0, 1, "empty")? != [FORMAT] {
        return Err(BadRecord("unknown format version"));
    }
    let (dest, at) = match field(1, 1, "no destination")?[0] {
        0 => {
            let len = field(2, 2, "index length past the end")?;
            let len = u16::from_be_bytes([len[0], len[1]]) as usize;
            let name = field(4, len, "index past the end")?;
            let index = match last_index {
                // The same bytes as a name checked before: valid UTF-8 too.
                Some(last) if last.as_str().as_bytes() == name => last.clone(),
                _ => {
                    let name =
                        std::str::from_utf8(name).map_err(|_| BadRecord("index not UTF-8"))?;
                    let i = IndexName::new(name, MAX_INDEX_NAME_BYTES)
                        .map_err(|_| BadRecord("not a valid index name"))?;
                    *last_index = Some(i.clone());
                    i
                }
            };
            (Destination::Index(index), 4 + len)
        }
        1 => {
            let f = field(2, 5, "dead letter past the end")?;
            let reason = match f[0] {
                0 => DeadLetterReason::NotJsonObject,
                1 => DeadLetterReason::NotUtf8,
                2 => DeadLetterReason::InvalidIndex,
                _ => return Err(BadRecord("unknown dead-letter reason")),
            };
            let days = i32::from_be_bytes([f[1], f[2], f[3], f[4]]);
            let day = NaiveDate::from_num_days_from_ce_opt(days)
                .ok_or(BadRecord("dead-letter day out of range"))?;
            (Destination::DeadLetter(DeadLetter { reason, day }), 7)
        }
        _ => return Err(BadRecord("unknown destination")),
    };
    let (id, doc_at) = match field(at, 1, "no id flag")?[0] {
        0 => (None, at + 1),
        1 => {
            let hex = field(at + 1, 32, "id past the end")?;
            (
                Some(DocId::from_hex(hex).ok_or(BadRecord("id not hex"))?),
                at + 33,
            )
        }
        _ => return Err(BadRecord("bad id flag")),
    };
    Ok(Record {
        dest,
        id,
        doc: data.slice(doc_at..),
    })
}

/// The running spool: its sink and reader tasks.
pub struct Spooled {
    spool: Spool,
    sink: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
    stop_reading: CancellationToken,
    undecodable: Arc<AtomicU64>,
    dir: std::path::PathBuf,
}

impl Spooled {
    /// Opens (and recovers) the spool, then starts the sink behind a new queue of
    /// `queue_batches` and the reader into `es`, the Elasticsearch writer's queue.
    /// Reports the recovery in one log line. Both tasks hold their `alive` guard.
    pub async fn start(
        settings: &SpooledSettings,
        queue_batches: usize,
        es: OutputSender,
        sizes: ReadSizes,
        metrics: SpoolMetrics,
        log: Arc<LogThrottle>,
        alive: (impl Send + 'static, impl Send + 'static),
    ) -> Result<(OutputSender, Spooled), SpoolError> {
        let engine = settings.spool.clone();
        let (spool, reader) = tokio::task::spawn_blocking(move || Spool::open(engine))
            .await
            .map_err(|_| SpoolError::Closed)??;
        let r = spool.recovery();
        tracing::info!(
            dir = %settings.spool.dir.display(),
            segments = r.segments,
            bytes = r.bytes,
            records = r.records,
            torn_bytes = r.torn_bytes,
            position_found = r.position_found,
            unknown_files = r.unknown_files.len(),
            "spool opened; replaying what Elasticsearch has not stored"
        );
        metrics.max_bytes.set(settings.spool.max_bytes as i64);
        metrics
            .high_water_bytes
            .set(high_water_bytes(settings) as i64);
        let (tx, rx) = mpsc::channel(queue_batches);
        let appender = spool.appender();
        let (sink_alive, reader_alive) = alive;
        let sink_metrics = metrics.clone();
        let sink_log = log.clone();
        let sink = tokio::spawn(async move {
            sink(rx, appender, sink_metrics, sink_log).await;
            drop(sink_alive);
        });
        let stop_reading = CancellationToken::new();
        let undecodable = Arc::new(AtomicU64::new(0));
        let feed = Feed {
            reader,
            es: Some(es),
            sizes,
            log,
            stop: stop_reading.clone(),
            pending: VecDeque::new(),
            unsaved: None,
            last_index: None,
            undecodable: undecodable.clone(),
        };
        let reader = tokio::spawn(async move {
            feed.run().await;
            drop(reader_alive);
        });
        Ok((
            tx,
            Spooled {
                spool,
                sink,
                reader,
                stop_reading,
                undecodable,
                dir: settings.spool.dir.clone(),
            },
        ))
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn watch(&self) -> SpoolWatch {
        self.spool.watch()
    }

    /// Records skipped because they decoded to no Record (counted as corrupt).
    pub fn undecodable(&self) -> Arc<AtomicU64> {
        self.undecodable.clone()
    }

    /// Shutdown, once the connections are gone: the sink makes what is queued durable
    /// (for at most `grace`; a batch still unwritten then is not acknowledged), the
    /// spool is closed, and the reader stops feeding Elasticsearch. `es_flush` is then
    /// given what is left of `grace` (at least `min_flush`) to settle what it holds;
    /// what it does not stays in the spool for the next start.
    pub async fn join<F: std::future::Future<Output = ()>>(
        self,
        grace: Duration,
        min_flush: Duration,
        es_flush: impl FnOnce(Duration) -> F,
    ) {
        let started = tokio::time::Instant::now();
        let abort = self.sink.abort_handle();
        if tokio::time::timeout(grace, self.sink).await.is_err() {
            tracing::error!(
                "spool: queued windows could not be written within the grace period \
                 (disk full?); they are not acknowledged and their clients resend them"
            );
            abort.abort();
        }
        self.spool.close().await;
        self.stop_reading.cancel();
        let left = grace.saturating_sub(started.elapsed()).max(min_flush);
        es_flush(left).await;
        // What Elasticsearch settled is acknowledged now; the rest is failed or never
        // answers (a writer still retrying a down cluster): leave it to the next start.
        let abort = self.reader.abort_handle();
        if tokio::time::timeout(min_flush, self.reader).await.is_err() {
            abort.abort();
        }
    }
}

/// `check-config` and `serve`, before anything is bound: an existing spool directory
/// takes a file written and fsynced; a missing one must be creatable (its nearest
/// existing ancestor a directory this process may write), and is not created here
/// (`serve` creates it). Takes no lock, so a running lumberd's own directory checks fine.
pub fn check_dir(settings: &SpooledSettings) -> Result<(), String> {
    use std::io::Write;
    let dir = &settings.spool.dir;
    let fail = |what: String| format!("spool.dir: {}: {what}", dir.display());
    if dir.is_dir() {
        let probe = dir.join(format!(".check-config-{}", std::process::id()));
        let written = std::fs::File::create(&probe)
            .and_then(|mut f| f.write_all(b"lumberd").and_then(|()| f.sync_all()));
        let _ = std::fs::remove_file(&probe);
        return written.map_err(|e| fail(format!("is not writable: {e}")));
    }
    let mut parent = dir.as_path();
    let existing = loop {
        match parent.parent() {
            Some(p) if p.as_os_str().is_empty() => break std::path::Path::new("."),
            Some(p) => {
                if p.exists() {
                    break p;
                }
                parent = p;
            }
            None => break parent,
        }
    };
    if !existing.is_dir() {
        return Err(fail(format!(
            "cannot be created: {} is not a directory",
            existing.display()
        )));
    }
    rustix::fs::access(existing, rustix::fs::Access::WRITE_OK).map_err(|e| {
        fail(format!(
            "cannot be created: {} is not writable: {e}",
            existing.display()
        ))
    })
}

/// `spool.high_water` of `max_bytes`, in bytes.
fn high_water_bytes(s: &SpooledSettings) -> u64 {
    (s.spool.max_bytes as f64 * s.high_water) as u64
}

/// `/readyz`'s reason while the spool holds more than its high-water mark.
pub fn over_high_water(watch: &SpoolWatch, settings: &SpooledSettings) -> Option<String> {
    let mark = high_water_bytes(settings);
    let bytes = watch.stats().bytes;
    (bytes > mark).then(|| format!("spool over its high-water mark ({bytes} of {mark} bytes)"))
}

/// Sets the spool's gauges and counters from the engine (at scrape time).
pub fn observe(watch: &SpoolWatch, metrics: &SpoolMetrics, undecodable: u64) {
    let s = watch.stats();
    metrics.bytes.set(s.bytes as i64);
    metrics.records.set(s.records as i64);
    metrics.segments.set(s.segments as i64);
    metrics
        .oldest_record_age
        .set(s.oldest_age(SystemTime::now()).as_secs_f64());
    metrics.totals(SpoolTotals {
        written: s.written,
        commits: s.commits,
        read: s.read,
        from_memory: s.from_memory,
        replayed: s.replayed,
        corrupt: s.corrupt + undecodable,
    });
}

/// Takes each batch from the queue, appends its records (waiting while the spool is
/// full: the queue fills and connections stop reading), and completes its Delivery once
/// they are durable. Ends when every sender is gone and every batch is settled.
async fn sink(
    mut rx: mpsc::Receiver<Batch>,
    appender: Appender,
    metrics: SpoolMetrics,
    log: Arc<LogThrottle>,
) {
    let tracker = TaskTracker::new();
    while let Some(batch) = rx.recv().await {
        let Batch {
            records,
            budget,
            delivery,
        } = batch;
        let window = Window { budget, delivery };
        let durable = match append(&appender, records).await {
            Ok(d) => d,
            Err((e, records)) => {
                window.refuse(records, &e);
                continue;
            }
        };
        let (appender, metrics, log) = (appender.clone(), metrics.clone(), log.clone());
        tracker.spawn(settle_append(window, durable, appender, metrics, log));
    }
    tracker.close();
    tracker.wait().await;
}

/// What the sink keeps of a batch while its records are in the spool's hands: the
/// window's delivery and its share of the in-flight budget.
struct Window {
    budget: Option<tokio::sync::OwnedSemaphorePermit>,
    delivery: Delivery,
}

impl Window {
    /// A batch the spool can never take: its window fails (the connection closes unACKed).
    fn refuse(self, records: usize, e: &SpoolError) {
        tracing::error!(error = %e, records,
            "spool refused a batch; its window is not acknowledged");
        self.delivery.fail(&DeliveryFailed::Spool(e.to_string()));
    }
}

/// Encodes `records` into a spool batch, attaches them (the reader's fast path hands
/// them on as they are) and queues it; on a refusal, how many records there were.
async fn append(
    appender: &Appender,
    records: Vec<Record>,
) -> Result<spool::Durable, (SpoolError, usize)> {
    let n = records.len();
    let mut batch = appender.batch();
    // The heads only: the documents stay where they are.
    let heads: usize = records
        .iter()
        .map(|r| 40 + r.index().map_or(0, |i| i.len()))
        .sum();
    batch.reserve(n, heads);
    for r in &records {
        batch
            .push_with_doc(|out| encode_head(r, out), r.doc.clone())
            .map_err(|e| (e, n))?;
    }
    batch.attach(Box::new(records));
    appender.append(batch).await.map_err(|e| (e, n))
}

/// Waits for a batch to be durable, appending it again after each write error, then
/// lets its window be acknowledged and frees its budget.
async fn settle_append(
    window: Window,
    mut durable: spool::Durable,
    appender: Appender,
    metrics: SpoolMetrics,
    log: Arc<LogThrottle>,
) {
    loop {
        match durable.outcome().await {
            Ok(_) => {
                let Window { delivery, budget } = window;
                delivery.delivered();
                drop(budget);
                return;
            }
            Err(Refused {
                error: e @ SpoolError::Io { .. },
                attachment,
            }) => {
                metrics.write_errors.inc();
                if let Some(suppressed) = log.allow(("spool", "write")) {
                    let hint = if e.is_no_space() {
                        "the disk is full"
                    } else {
                        "the spool directory cannot be written"
                    };
                    tracing::error!(error = %e, suppressed,
                        "spool write failed ({hint}); windows wait unacknowledged and \
                         connections stop reading until it succeeds");
                }
                tokio::time::sleep(WRITE_RETRY).await;
                // The writer gives the Records back with a refused batch.
                let records = match attachment.map(|a| a.downcast::<Vec<Record>>()) {
                    Some(Ok(records)) => *records,
                    _ => return window.refuse(0, &SpoolError::Closed),
                };
                durable = match append(&appender, records).await {
                    Ok(d) => d,
                    Err((e, n)) => return window.refuse(n, &e),
                };
            }
            Err(Refused { error, .. }) => return window.refuse(0, &error),
        }
    }
}

/// A batch handed to Elasticsearch, waiting for its delivery to ack the spool.
struct Pending {
    through: Position,
    records: usize,
    /// The records as read from disk: a resend decodes them again (slices, no copy),
    /// so the batch handed over need not be cloned for a failure that is rare. `None`
    /// for a batch from memory: a failure rewinds the reader instead.
    spooled: Option<Vec<SpoolRecord>>,
    delivery: DeliveryReceiver,
}

/// The reader's side: spool records to Elasticsearch batches, acknowledgements back in
/// order.
struct Feed {
    reader: Reader,
    /// `None` once shutdown has stopped the feeding.
    es: Option<OutputSender>,
    sizes: ReadSizes,
    log: Arc<LogThrottle>,
    stop: CancellationToken,
    pending: VecDeque<Pending>,
    /// Settled and acknowledged in order, not yet saved: see [`SAVE_EVERY_RECORDS`].
    unsaved: Option<Unsaved>,
    last_index: Option<IndexName>,
    undecodable: Arc<AtomicU64>,
}

/// Records settled since the read position was last saved.
struct Unsaved {
    through: Position,
    records: usize,
    /// When the first of them settled: saved by [`SAVE_AFTER`] after it at the latest.
    since: tokio::time::Instant,
}

impl Feed {
    async fn run(mut self) {
        let mut drained = false;
        loop {
            let feeding = self.es.is_some() && !drained;
            let room = self.pending.len() < self.sizes.max_pending;
            let save_at = self.unsaved.as_ref().map(|u| u.since + SAVE_AFTER);
            tokio::select! {
                biased;
                _ = self.stop.cancelled(), if self.es.is_some() => {
                    // Stop feeding: the writer drains what it holds, the spool keeps the rest.
                    self.es = None;
                    self.save().await;
                }
                done = head(&mut self.pending), if !self.pending.is_empty() => {
                    if !self.settled(done).await {
                        self.save().await;
                        return;
                    }
                }
                _ = tokio::time::sleep_until(save_at.unwrap_or_else(tokio::time::Instant::now)),
                    if save_at.is_some() => self.save().await,
                read = self.reader.next(self.sizes.batch_records, READ_BATCH_BYTES),
                    if feeding && room => match read {
                    Ok(Read::Disk(records)) if records.is_empty() => drained = true,
                    Ok(Read::Disk(records)) => self.feed(records).await,
                    Ok(Read::Memory(handed)) => self.feed_memory(handed).await,
                    Err(e) => {
                        if let Some(suppressed) = self.log.allow(("spool", "read")) {
                            tracing::error!(error = %e, suppressed, "spool read failed; retrying");
                        }
                        tokio::time::sleep(RESEND_DELAY).await;
                    }
                },
                else => {
                    self.save().await;
                    return;
                }
            }
        }
    }

    /// Rebuilds Records from `records` and hands them to Elasticsearch as one batch.
    async fn feed(&mut self, records: Vec<SpoolRecord>) {
        let through = records.last().expect("a non-empty read").position;
        let batch = self.decode(&records, true);
        let delivery = if batch.is_empty() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(Ok(()));
            rx
        } else {
            self.send(batch).await
        };
        self.pending.push_back(Pending {
            through,
            records: records.len(),
            spooled: Some(records),
            delivery,
        });
    }

    /// Hands Elasticsearch a batch just made durable, its Records as the sink had them.
    async fn feed_memory(&mut self, handed: Handed) {
        let Handed {
            attachment,
            records,
            through,
            ..
        } = handed;
        let Ok(batch) = attachment.downcast::<Vec<Record>>() else {
            // Not the sink's: cannot be, but reading it from disk is always right.
            tracing::error!("spool handed over a batch that is not Records; reading it from disk");
            self.rewind().await;
            return;
        };
        let delivery = self.send(*batch).await;
        self.pending.push_back(Pending {
            through,
            records,
            spooled: None,
            delivery,
        });
    }

    /// Forgets every batch handed out and not acknowledged, and reads them all from disk
    /// again: for a batch from memory that must be sent again.
    async fn rewind(&mut self) {
        // What was settled before is saved first, not sent again.
        self.save().await;
        self.pending.clear();
        if let Err(e) = self.reader.rewind().await {
            tracing::error!(error = %e, "spool: cannot rewind the reader");
        }
    }

    /// The Records of `records`, skipping (and the first time, counting and logging)
    /// those that decode to none.
    fn decode(&mut self, records: &[SpoolRecord], first: bool) -> Vec<Record> {
        let mut batch = Vec::with_capacity(records.len());
        for r in records {
            match decode_record(&r.data, &mut self.last_index) {
                Ok(record) => batch.push(record),
                Err(e) if first => {
                    // Its checksum held, so it is not a torn write: a record of another
                    // version or another program. Counted and skipped, as corrupt ones are.
                    self.undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, seq = r.position.seq, "skipping a spool record");
                }
                Err(_) => {}
            }
        }
        batch
    }

    /// Sends `records` to the writer as one batch; its receiver says when they settled.
    async fn send(&mut self, records: Vec<Record>) -> DeliveryReceiver {
        let (delivery, rx) = Delivery::new();
        let batch = Batch {
            records,
            budget: None,
            delivery,
        };
        if let Some(es) = &self.es {
            tokio::select! {
                // A batch dropped here (shutdown) fails its delivery: not acknowledged.
                _ = es.send(batch) => {}
                _ = self.stop.cancelled() => {}
            }
        }
        rx
    }

    /// The oldest pending batch settled: acknowledge it and every settled one after it
    /// in one position save, or send it again. `false` ends the feed (shutdown).
    async fn settled(&mut self, done: Result<(), DeliveryFailed>) -> bool {
        let mut head = self.pending.pop_front().expect("head() resolved");
        if let Err(e) = done {
            if self.es.is_none() {
                // Shutdown: this batch and everything after it stay in the spool.
                return false;
            }
            if let Some(suppressed) = self.log.allow(("spool", "resend")) {
                tracing::warn!(error = %e, records = head.records, suppressed,
                    "Elasticsearch did not settle spooled records; sending them again");
            }
            tokio::select! {
                _ = tokio::time::sleep(RESEND_DELAY) => {}
                _ = self.stop.cancelled() => {}
            }
            let Some(spooled) = head.spooled.take() else {
                // From memory: nothing kept to send again; read it back from disk.
                self.rewind().await;
                return true;
            };
            let again = self.decode(&spooled, false);
            head.spooled = Some(spooled);
            head.delivery = self.send(again).await;
            self.pending.push_front(head);
            return true;
        }
        let (mut through, mut records) = (head.through, head.records);
        while let Some(next) = self.pending.front_mut() {
            match next.delivery.try_recv() {
                Ok(Ok(())) => {
                    through = next.through;
                    records += next.records;
                    self.pending.pop_front();
                }
                Ok(Err(e)) => {
                    // Put the failure back for the next round to handle.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let _ = tx.send(Err(e));
                    next.delivery = rx;
                    break;
                }
                Err(_) => break,
            }
        }
        let unsaved = self.unsaved.get_or_insert(Unsaved {
            through,
            records: 0,
            since: tokio::time::Instant::now(),
        });
        unsaved.through = through;
        unsaved.records += records;
        // At shutdown each settled batch is saved at once: the grace may end any time.
        if unsaved.records >= SAVE_EVERY_RECORDS || self.es.is_none() {
            self.save().await;
        }
        true
    }

    /// Acknowledges what has settled since the last save: the read position saved
    /// (fsynced), consumed segments deleted.
    async fn save(&mut self) {
        let Some(unsaved) = self.unsaved.take() else {
            return;
        };
        if let Err(e) = self.reader.ack(unsaved.through).await {
            if let Some(suppressed) = self.log.allow(("spool", "ack")) {
                tracing::error!(error = %e, suppressed,
                    "cannot save the spool's read position; records may be sent again after a restart");
            }
        }
    }
}

/// The head of `pending` settling; never resolves while it is empty.
async fn head(pending: &mut VecDeque<Pending>) -> Result<(), DeliveryFailed> {
    match pending.front_mut() {
        Some(p) => (&mut p.delivery)
            .await
            .unwrap_or(Err(DeliveryFailed::OutputStopped)),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<u128>) -> Record {
        Record {
            dest: Destination::Index(
                IndexName::new("qwen-logs-2025.04.05", MAX_INDEX_NAME_BYTES).unwrap(),
            ),
            id: id.map(DocId::from_digest),
            doc: Bytes::from_static(br#"{"level":"INFO","prompt":"\u4f60\u597d"}"#),
        }
    }

    fn dead_letter() -> Record {
        Record {
            dest: Destination::DeadLetter(DeadLetter {
                reason: DeadLetterReason::InvalidIndex,
                day: NaiveDate::from_ymd_opt(2025, 4, 6).unwrap(),
            }),
            id: None,
            doc: Bytes::from_static(br#"{"payload":"x"}"#),
        }
    }

    /// A spooled output in `dir` (`memory_bytes = 0`: every record read back from disk)
    /// whose Elasticsearch writer settles each batch as it comes and counts the records
    /// it was handed, with its queue.
    async fn wired(
        dir: &std::path::Path,
    ) -> (OutputSender, Spooled, tokio::sync::watch::Receiver<usize>) {
        let settings = test_settings(dir);
        let metrics = crate::metrics::Metrics::new().unwrap();
        let log = Arc::new(LogThrottle::new(
            Duration::from_secs(10),
            metrics.log_suppressed.clone(),
        ));
        let (es, mut es_rx) = mpsc::channel::<Batch>(64);
        let (seen_tx, seen) = tokio::sync::watch::channel(0);
        tokio::spawn(async move {
            while let Some(b) = es_rx.recv().await {
                let n = b.records.len();
                b.delivery.delivered();
                seen_tx.send_modify(|seen| *seen += n);
            }
        });
        let sizes = ReadSizes {
            batch_records: 100,
            max_pending: 8,
        };
        let (queue, spooled) = Spooled::start(
            &settings,
            8,
            es,
            sizes,
            metrics.spool.clone(),
            log,
            ((), ()),
        )
        .await
        .unwrap();
        (queue, spooled, seen)
    }

    /// Small segments, every record read back from disk (`memory_bytes = 0`).
    fn test_settings(dir: &std::path::Path) -> SpooledSettings {
        SpooledSettings {
            spool: SpoolSettings {
                max_bytes: 64 << 20,
                segment_bytes: 1 << 20,
                max_record_bytes: 1 << 16,
                memory_bytes: 0,
                ..SpoolSettings::new(dir)
            },
            high_water: 0.9,
        }
    }

    /// Sends `batches` batches of 100 records through `queue`, each acknowledged (in the
    /// spool) before the call returns, then waits for the writer to have seen them all.
    async fn send(
        queue: &OutputSender,
        seen: &mut tokio::sync::watch::Receiver<usize>,
        batches: u128,
    ) {
        let mut deliveries = Vec::new();
        for b in 0..batches {
            let (delivery, rx) = Delivery::new();
            let records = (0..100).map(|i| event(Some(b * 100 + i))).collect();
            queue
                .send(Batch {
                    records,
                    budget: None,
                    delivery,
                })
                .await
                .unwrap();
            deliveries.push(rx);
        }
        for rx in deliveries {
            rx.await.unwrap().unwrap();
        }
        let all = batches as usize * 100;
        seen.wait_for(|n| *n >= all).await.unwrap();
    }

    /// Records to replay in the spool in `dir` when it is opened again.
    fn replayed_at_open(dir: &std::path::Path) -> u64 {
        let (spool, _reader) = Spool::open(test_settings(dir).spool).unwrap();
        spool.recovery().records
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_elasticsearch_settled_before_shutdown_is_saved_and_never_replayed() {
        // Fewer records than SAVE_EVERY_RECORDS, shut down at once: only a save at
        // shutdown (or SAVE_AFTER's, within the reader's flush time) saves them.
        let dir = tempfile::tempdir().unwrap();
        let (queue, spooled, mut seen) = wired(dir.path()).await;
        send(&queue, &mut seen, 3).await;
        drop(queue);
        spooled
            .join(Duration::from_secs(5), Duration::from_secs(5), |_| async {})
            .await;
        let replayed = tokio::task::spawn_blocking(move || replayed_at_open(dir.path()))
            .await
            .unwrap();
        assert_eq!(
            replayed, 0,
            "300 records settled by Elasticsearch before the shutdown come back at the next start: \
             the read position grouped for a later save was not saved at shutdown"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_spool_saves_what_settled_without_waiting_for_a_bulk_of_records() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, spooled, mut seen) = wired(dir.path()).await;
        send(&queue, &mut seen, 1).await;
        let watch = spooled.watch();
        // SAVE_AFTER (0.1 s) at most once settled; 10 s is for a loaded machine.
        let saved = tokio::time::timeout(Duration::from_secs(10), async {
            while watch.stats().records > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            saved.is_ok(),
            "100 settled records still unacknowledged in the spool after 10 s ({:?}): \
             a position below SAVE_EVERY_RECORDS is never saved while nothing else settles",
            watch.stats()
        );
        drop(queue);
        spooled
            .join(Duration::from_secs(5), Duration::from_secs(5), |_| async {})
            .await;
    }

    #[test]
    fn records_come_back_from_the_spool_as_they_went_in_with_their_ids() {
        let mut last = None;
        for r in [event(Some(0xdead_beef)), dead_letter(), event(None)] {
            let mut out = Vec::new();
            encode_record(&r, &mut out);
            let back = decode_record(&Bytes::from(out), &mut last).unwrap();
            assert_eq!(back.dest, r.dest);
            assert_eq!(back.id, r.id);
            assert_eq!(back.doc, r.doc);
        }
    }

    #[test]
    fn a_record_that_is_not_ours_is_refused_never_a_panic() {
        let mut good = Vec::new();
        encode_record(&event(Some(7)), &mut good);
        let mut last = None;
        for cut in 0..40 {
            let _ = decode_record(&Bytes::copy_from_slice(&good[..cut]), &mut last);
        }
        for bad in [
            &b""[..],
            b"\x01\x00\x00\x00\x00",
            b"\x02\x07\x00\x00\x00",
            b"\x02\x00\xff\xff",
            b"\x02\x01\x09\x00\x00\x00\x00\x00",
            b"\x02\x00\x00\x01/\x00",
        ] {
            assert!(decode_record(&Bytes::copy_from_slice(bad), &mut last).is_err());
        }
        for not_hex in [b'z', b'A'] {
            let mut flipped = good.clone();
            flipped[30] = not_hex; // inside the id's hex
            assert_eq!(
                decode_record(&Bytes::from(flipped), &mut last).unwrap_err(),
                BadRecord("id not hex")
            );
        }
    }
}

//! A durable disk spool: a crash-safe append-only log of opaque records, with group
//! commit, a fsynced read position and a bound on its size. Bytes in, bytes out: knows
//! nothing of the protocol, the pipeline or Elasticsearch.
//!
//! # Design note: why by hand
//!
//! Issue 13 item 6 asks for a well-kept crate first. Compared (sources read, v. current
//! on crates.io at the time of writing):
//! - **okaywal 0.3.1**: a WAL with multi-writer group commit and crc32 per chunk, but
//!   its README says not to use it in production yet and calls the format unstable;
//!   space is reclaimed by size-triggered checkpoints (the data must be moved elsewhere
//!   first), not by a consumer's acknowledgement; a chunk is read by opening the file
//!   anew; a crc mismatch is an error, not a skip.
//! - **commitlog 0.2.0**: a Kafka-style log (crc32c per message, mmap index) that
//!   truncates from the end only: no deletion of consumed segments, no read position,
//!   `flush` per caller (no group commit), `unsafe` mmap and asserts on bad files.
//! - **yaque 0.6.6**: single producer, single consumer; no fsync (a buffered flush) and
//!   no payload checksum (a Hamming-coded length header); panics on a corrupt header by
//!   design.
//! - **queue-file 2.0.0**: one ring-buffer file with crc32 per element and a dual-slot
//!   header, but it grows by doubling with a copy, does not give disk space back until
//!   emptied, has no segments, and a bad element fails the whole queue.
//! - **simple_wal 0.3.0**: one file, rewritten to compact; unmaintained since 2020.
//! - **redb 4.6**, **fjall 3.1 / lsm-tree 3.1**, **sled 1.0-alpha**: key-value stores.
//!   Used as a FIFO (u64 key, insert per batch, delete on ack), redb measured 3.5 us of
//!   CPU per 1 KB record at 512 records a batch (2.8 us at 2048; 30 us wall) on this
//!   machine: 3.5 times the whole budget of 1 us. fjall writes each record twice (journal,
//!   then tables) and deletes with tombstones and compaction; its journal is private.
//!   redb and fjall need Rust 1.90 (lumberd: 1.88); sled 1.0 has been alpha for years.
//!
//! None gives segments deleted on a consumer's ack, skip-and-count of a corrupt record,
//! and group commit across writers within the CPU budget, so the log is written here
//! (about 1,800 lines of code without tests) on std files, xxh3 (already a dependency),
//! rustix's flock and tokio.
//!
//! # The format and its guarantees
//!
//! - Segment files `<first seq, 20 digits>.seg` of at most `segment_bytes`, each a
//!   24-byte header then frames (see [`frame`]): length, xxh3-64 of the payload,
//!   sequence number, append time, and a check of the header itself. xxh3 over crc32c:
//!   already a dependency (the document ids), faster in software than crc32c without
//!   SSE4.2 and, through twox-hash's AVX2 path chosen at run time, faster than it with
//!   it (~90 vs ~140 ns per 1.3 KB record here), and 64 bits, so resynchronising
//!   through garbage almost never accepts a false frame.
//! - Appenders frame records on their own thread; a record may leave its document in
//!   its own bytes ([`Batch::push_with_doc`]: the head is framed in the batch, never a
//!   copy of the document into the batch, and the writer hashes the two where it
//!   copies them). The
//!   writer copies head and document once into a block-aligned buffer and writes it
//!   with `O_DIRECT` ([`direct`]: no page-cache copy, no page allocation, a fifth of
//!   the kernel's CPU per record); each commit's last block is padded with zeros and
//!   rewritten by the next, and zeros that run to a segment's end are padding, not a
//!   tail. Where the filesystem refuses `O_DIRECT` (probed at open) or `direct_io` is
//!   off, the writer sends the two to the file through the page cache with one
//!   `pwritev` per run of a batch. One
//!   writer thread takes every batch
//!   queued since its last round, writes them, fsyncs each segment once (and the
//!   directory when it created one), then resolves each batch's [`Durable`]: group
//!   commit across all writers. A failed write or fsync fails every batch of the round
//!   and cuts the file back to its durable length: never an acknowledged-but-unwritten
//!   record. ENOSPC and an unwritable directory come back as [`SpoolError::Io`] (see
//!   [`SpoolError::is_no_space`]) for the caller to turn into backpressure.
//! - `max_bytes` is a byte budget taken by each batch before it is queued and given
//!   back when a consumed segment is deleted: [`Appender::append`] waits while the spool
//!   is full ([`Appender::try_append`] says `Full`), never drops.
//! - The [`Reader`] reads only durable bytes, in order; [`Reader::ack`] saves the read
//!   position with one fsync ([`position`]) and deletes the segments it consumed.
//! - **Caught-up fast path** ([`handover`]): a batch may carry an [`Attachment`] (the
//!   caller's own form of its records). Once the batch is durable, the writer keeps it
//!   in memory (at most half of `memory_bytes`) when it starts exactly where the reader
//!   will read next, and [`Reader::next`] hands it out as [`Read::Memory`] instead of
//!   reading the records back: the reader's cursor moves past the batch, so the read
//!   position, the acks and a replay after a crash are as if it had been read from disk.
//!   A reader that is behind (its consumer slow, or the bound reached) reads from disk
//!   and passes, then drops, what is kept; it takes the fast path again once it has
//!   caught up. [`Reader::rewind`] goes back to the saved position (a consumer that lost
//!   a batch it was handed from memory reads it from disk again).
//! - On open: segments before the read position are deleted, the last segment's torn
//!   tail is cut (one log line with the bytes), empty segments are removed, unknown
//!   files are reported and left alone, and reading resumes at the read position (from
//!   the oldest segment when the position file is missing). A corrupt record anywhere
//!   is skipped to the next valid frame, logged and counted ([`scan`]).

mod direct;
pub mod frame;
mod handover;
mod ledger;
mod open;
pub mod position;
mod reader;
pub mod scan;
mod writer;

#[cfg(test)]
mod tests;

pub use handover::Handed;
pub use reader::Reader;
pub use writer::Batch;

use std::any::Any;
use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Semaphore};

use self::frame::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use self::handover::Handover;
use self::ledger::Ledger;
use self::writer::Job;

/// Default `max_bytes`: 4 GiB, a modest PersistentVolumeClaim, about 4 million ~1 KB
/// records (over an hour of a busy replica's logs with Elasticsearch down).
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Default `segment_bytes`: 64 MiB. Space comes back in steps of 1/64 of the default
/// `max_bytes`; the tail scanned at open is at most this; 64 files per 4 GiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Default `max_record_bytes`: 32 MiB, above the protocol's 16 MiB `max_frame_bytes`
/// plus a record's own fields, so any event lumberd accepts fits; it also caps what a
/// corrupt length field can make the reader allocate.
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 32 * 1024 * 1024;
/// Default `queue_batches`: batches queued for the writer thread. The byte budget is the
/// real bound; this caps how many small batches one round can gather.
pub const DEFAULT_QUEUE_BATCHES: usize = 1024;
/// Default `memory_bytes`: 32 MiB. Half keeps batches just fsynced for the caught-up
/// reader: one group-commit round is a few MiB even at 250,000 ~1 KB events/s with a
/// 10 ms fsync, so 16 MiB also rides out Elasticsearch pausing for a bulk or two before
/// the reader has to read back from disk. A quarter each keeps encoded batch buffers and
/// read chunks for reuse (fresh ones are page faults: a third of the CPU in a profile).
pub const DEFAULT_MEMORY_BYTES: u64 = 32 * 1024 * 1024;

/// Default `direct_io`: on. Copying records into the page cache and writing them back
/// from it was most of the spool's CPU (benches/README.md, "Issue 13, direct I/O").
pub const DEFAULT_DIRECT_IO: bool = true;

/// Read chunks kept for reuse at least, whatever `memory_bytes` says (0 included): 8 MiB,
/// what the default keeps. A reader reads back from disk only when it is behind, and
/// then a chunk not reused is fresh pages, faulted in, zeroed and given back to the
/// kernel again when freed: with none kept (`memory_bytes = 0`), page faults and
/// `madvise` were a tenth of the from-disk wiring's samples in a profile, and the same
/// runs took a third more CPU than with 8 MiB kept (benches/README.md). Chunks are
/// kept as they are replaced, most of them still holding records in flight, so the
/// bound must cover about two bulks of them (2 x 4096 ~1 KB records) to find idle ones.
pub const MIN_SPARE_BYTES: u64 = 8 * 1024 * 1024;

/// The caller's own form of a batch's records, carried opaquely beside its frames and
/// handed to the reader on the fast path (see the module's notes).
pub type Attachment = Box<dyn Any + Send>;

/// Where the spool lives and how large it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    /// Bytes of records on disk at most; appends wait past it.
    pub max_bytes: u64,
    /// Bytes of one segment file at most.
    pub segment_bytes: u64,
    /// Bytes of one record at most.
    pub max_record_bytes: u32,
    /// Batches waiting for the writer thread at most.
    pub queue_batches: usize,
    /// Memory the spool keeps beyond what its reader has handed out: batches kept for
    /// the fast path (half), encoded batch buffers and read chunks kept for reuse (a
    /// quarter each; read chunks [`MIN_SPARE_BYTES`] at least). 0 turns the fast path
    /// and the batch buffers' reuse off.
    pub memory_bytes: u64,
    /// Write segments with `O_DIRECT` where the filesystem takes it (checked at open):
    /// a fifth of the CPU of writing through the page cache. Off, or on a filesystem
    /// that refuses it, segments are written through the page cache.
    pub direct_io: bool,
}

impl SpoolSettings {
    /// The defaults, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> SpoolSettings {
        SpoolSettings {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            queue_batches: DEFAULT_QUEUE_BATCHES,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            direct_io: DEFAULT_DIRECT_IO,
        }
    }

    /// Bytes of durable batches kept for the fast path at most.
    fn handover_bytes(&self) -> u64 {
        self.memory_bytes / 2
    }

    /// Capacity of encoded batch buffers kept for reuse at most.
    fn pool_bytes(&self) -> usize {
        (self.memory_bytes / 4).min(usize::MAX as u64) as usize
    }

    /// Capacity of read chunks kept for reuse at most: a quarter of `memory_bytes`, and
    /// [`MIN_SPARE_BYTES`] at least.
    fn spare_bytes(&self) -> usize {
        (self.memory_bytes / 4)
            .max(MIN_SPARE_BYTES)
            .min(usize::MAX as u64) as usize
    }

    /// Checks the limits against each other: a record must fit in a segment, and the
    /// spool must hold two segments, so that once every sealed segment is consumed and
    /// deleted there is always room for a batch beside the one being written.
    pub fn validate(&self) -> Result<(), SpoolError> {
        let bad = |msg: String| Err(SpoolError::Settings(msg));
        let frame = (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES) as u64;
        if self.dir.as_os_str().is_empty() {
            return bad("spool dir is empty".into());
        }
        if self.max_record_bytes == 0 {
            return bad("max_record_bytes must be at least 1".into());
        }
        if self.segment_bytes < u64::from(self.max_record_bytes) + frame {
            return bad(format!(
                "segment_bytes={} must hold one record of max_record_bytes={} and its {frame} bytes of headers",
                self.segment_bytes, self.max_record_bytes
            ));
        }
        if self.max_bytes > Semaphore::MAX_PERMITS as u64 {
            return bad(format!(
                "max_bytes={} is more than any disk",
                self.max_bytes
            ));
        }
        if self.max_bytes < self.segment_bytes.saturating_mul(2) {
            return bad(format!(
                "max_bytes={} must be at least two segments (segment_bytes={})",
                self.max_bytes, self.segment_bytes
            ));
        }
        if self.queue_batches == 0 {
            return bad("queue_batches must be at least 1".into());
        }
        Ok(())
    }

    /// The largest batch that can ever be admitted: the budget less the segment the
    /// writer may be holding.
    fn max_batch_bytes(&self) -> u64 {
        (self.max_bytes - self.segment_bytes).min(u64::from(u32::MAX))
    }
}

/// Why a spool operation did not happen. Nothing refused was acknowledged: the caller
/// keeps the data (and, for a window, withholds its ACK).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("invalid spool settings: {0}")]
    Settings(String),
    #[error("spool record of {bytes} bytes exceeds max_record_bytes={limit}")]
    RecordTooLarge { bytes: usize, limit: u32 },
    #[error(
        "spool batch of {bytes} bytes can never fit (at most {limit}: max_bytes less one segment)"
    )]
    BatchTooLarge { bytes: u64, limit: u64 },
    #[error("spool is full (max_bytes={max_bytes})")]
    Full { max_bytes: u64 },
    #[error("spool {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("spool {} is in use by another process", path.display())]
    Locked { path: PathBuf },
    #[error("spool ack of record {seq} before it was read (next unread: {read})")]
    AckBeyondRead { seq: u64, read: u64 },
    #[error("spool writer has stopped")]
    Closed,
}

impl SpoolError {
    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
        move |e| SpoolError::Io {
            op,
            path: path.to_path_buf(),
            source: Arc::new(e),
        }
    }

    /// The disk (or the filesystem's quota) is full: backpressure until space returns.
    pub fn is_no_space(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }
}

/// Where a record is: its segment, the offset just past it, and its sequence number.
/// Positions order as the records were appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u64,
    pub end: u64,
    pub seq: u64,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub data: Bytes,
    pub position: Position,
    /// When the writer committed it, milliseconds since the Unix epoch.
    pub appended_ms: u64,
}

/// What a commit made durable for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_seq: u64,
    pub records: usize,
}

/// A batch the writer could not make durable: why, and its attachment back (for the
/// caller to append it again).
#[derive(Debug)]
pub struct Refused {
    pub error: SpoolError,
    pub attachment: Option<Attachment>,
}

/// What [`Reader::next`] hands out.
#[derive(Debug)]
pub enum Read {
    /// Records read back from disk (empty: the writer has stopped and all is read).
    Disk(Vec<SpoolRecord>),
    /// A batch just made durable, from memory: the caught-up fast path.
    Memory(Handed),
}

/// What the spool holds and has done, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of segment files on disk.
    pub bytes: u64,
    pub max_bytes: u64,
    pub segments: usize,
    /// Records appended and not acknowledged (an upper bound, see `Ledger::records`).
    pub records: u64,
    /// Append time of the oldest record not acknowledged, ms since the epoch.
    pub oldest_append_ms: Option<u64>,
    /// Records made durable since open, and the commits (fsync rounds) that did it.
    pub written: u64,
    pub commits: u64,
    /// Records handed to the reader since open.
    pub read: u64,
    /// Of those, records handed from memory (the caught-up fast path), not read back.
    pub from_memory: u64,
    /// Of those, records appended before this open.
    pub replayed: u64,
    /// Corrupt regions skipped (each one or more records lost) and their bytes.
    pub corrupt: u64,
    pub corrupt_bytes: u64,
    /// Bytes of torn tail cut at open.
    pub torn_bytes: u64,
}

impl SpoolStats {
    /// Age of the oldest record not acknowledged, zero when there is none.
    pub fn oldest_age(&self, now: SystemTime) -> Duration {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Duration::from_millis(
            self.oldest_append_ms
                .map_or(0, |t| now_ms.saturating_sub(t)),
        )
    }
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    commits: AtomicU64,
    read: AtomicU64,
    from_memory: AtomicU64,
    replayed: AtomicU64,
    corrupt: AtomicU64,
    corrupt_bytes: AtomicU64,
    torn_bytes: AtomicU64,
}

/// What the writer, the reader and the appenders share.
#[derive(Debug)]
struct Shared {
    settings: SpoolSettings,
    /// The directory, canonical.
    dir: PathBuf,
    ledger: Mutex<Ledger>,
    /// Bytes that may still be appended: `max_bytes` less what is on disk or queued.
    budget: Semaphore,
    counters: Counters,
    /// Batch buffers the writer has written, cleared, for the next batches: without it
    /// each batch's half a megabyte is fresh memory, faulted in page by page (a third
    /// of the append's CPU in a profile of benches/spool.rs). At most
    /// [`SpoolSettings::pool_bytes`] of capacity.
    buffers: Mutex<Pool>,
    /// Durable batches kept for the reader's fast path.
    handover: Mutex<Handover>,
    /// Held for the spool's life: an exclusive `flock` on `<dir>/lock`.
    _lock: File,
}

/// Cleared batch buffers and their total capacity.
#[derive(Debug, Default)]
struct Pool {
    buffers: Vec<Vec<u8>>,
    capacity: usize,
}

impl Shared {
    /// A cleared buffer for a new batch: a reused one when there is one.
    fn buffer(&self) -> Vec<u8> {
        let Ok(mut pool) = self.buffers.lock() else {
            return Vec::new();
        };
        match pool.buffers.pop() {
            Some(b) => {
                pool.capacity -= b.capacity();
                b
            }
            None => Vec::new(),
        }
    }

    /// Keeps a written batch's buffer for a later batch while the pool's capacity stays
    /// within [`SpoolSettings::pool_bytes`] (a rare huge batch is freed, not kept).
    fn recycle(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        if let Ok(mut pool) = self.buffers.lock() {
            if pool.capacity + buffer.capacity() <= self.settings.pool_bytes() {
                pool.capacity += buffer.capacity();
                pool.buffers.push(buffer);
            }
        }
    }

    /// Gives `bytes` back to the budget (after any debt).
    fn release(&self, bytes: u64) {
        let n = self.ledger.lock().expect("ledger lock").repay(bytes);
        if n > 0 {
            self.budget.add_permits(n as usize);
        }
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// What the open found and did, for its log line and the caller's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments kept, and their bytes.
    pub segments: usize,
    pub bytes: u64,
    /// Records to replay (an upper bound, from sequence numbers).
    pub records: u64,
    /// Bytes cut from the last segment's torn tail.
    pub torn_bytes: u64,
    /// Segment files removed: empty or shorter than a header, and wholly consumed.
    pub removed_empty: usize,
    pub removed_consumed: usize,
    /// Files in the directory that are not the spool's, left alone.
    pub unknown_files: Vec<PathBuf>,
    /// Whether a valid read position was found (if not, replay starts at the oldest
    /// segment: duplicates, never loss).
    pub position_found: bool,
}

/// An open spool: appenders, stats, and the writer thread's life.
#[derive(Debug)]
pub struct Spool {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Job>,
    writer_done: oneshot::Receiver<()>,
    recovery: Recovery,
}

impl Spool {
    /// Opens (creating it when missing) and recovers the spool in `settings.dir`, and
    /// starts its writer thread. Blocking I/O: call it before the runtime serves, or from
    /// `spawn_blocking`. Fails when the settings are inconsistent, the directory cannot
    /// be created or written, or another process holds it.
    pub fn open(settings: SpoolSettings) -> Result<(Spool, Reader), SpoolError> {
        open::open(settings)
    }

    /// A handle for appending; cheap to clone, one per connection is fine.
    pub fn appender(&self) -> Appender {
        Appender {
            shared: self.shared.clone(),
            tx: self.tx.clone(),
        }
    }

    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn stats(&self) -> SpoolStats {
        self.watch().stats()
    }

    /// A handle that reads the stats for as long as it is held (a metrics scrape),
    /// without keeping the writer open.
    pub fn watch(&self) -> SpoolWatch {
        SpoolWatch {
            shared: self.shared.clone(),
        }
    }

    /// Waits until every [`Appender`] is dropped and the writer has committed all that
    /// was queued, then stops it. The reader still reads what is durable.
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.writer_done.await;
    }
}

/// Reads a spool's [`SpoolStats`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct SpoolWatch {
    shared: Arc<Shared>,
}

impl SpoolWatch {
    pub fn stats(&self) -> SpoolStats {
        let c = &self.shared.counters;
        let ledger = self.shared.ledger.lock().expect("ledger lock");
        SpoolStats {
            bytes: ledger.bytes(),
            max_bytes: self.shared.settings.max_bytes,
            segments: ledger.segments.len(),
            records: ledger.records(),
            oldest_append_ms: ledger.oldest_ms,
            written: c.written.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            read: c.read.load(Ordering::Relaxed),
            from_memory: c.from_memory.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
            corrupt_bytes: c.corrupt_bytes.load(Ordering::Relaxed),
            torn_bytes: c.torn_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Appends batches; every clone feeds the same writer.
#[derive(Debug, Clone)]
pub struct Appender {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Job>,
}

impl Appender {
    /// An empty batch with this spool's record limit.
    pub fn batch(&self) -> Batch {
        Batch::with_buffer(self.shared.settings.max_record_bytes, self.shared.buffer())
    }

    /// Queues `batch` for the writer, waiting while the spool is full (backpressure,
    /// never a drop), and returns the [`Durable`] to await its commit. Cancel-safe: a
    /// batch not yet queued takes nothing.
    pub async fn append(&self, batch: Batch) -> Result<Durable, SpoolError> {
        let bytes = self.admissible(&batch)?;
        if batch.is_empty() {
            return Ok(Durable::done(0));
        }
        let permit = self
            .shared
            .budget
            .acquire_many(bytes as u32)
            .await
            .map_err(|_| SpoolError::Closed)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { batch, reply })
            .await
            .map_err(|_| SpoolError::Closed)?;
        // Queued: the bytes stay taken until the writer fails the batch or its segment
        // is consumed and deleted.
        permit.forget();
        Ok(Durable::waiting(rx))
    }

    /// [`Appender::append`] without waiting: `Full` (the batch handed back) when the
    /// budget or the queue has no room.
    // The batch comes back whole, by value, so that a caller can wait and retry without
    // encoding it again; a refusal is the cold path, so its size does not matter.
    #[allow(clippy::result_large_err)]
    pub fn try_append(&self, batch: Batch) -> Result<Durable, (SpoolError, Batch)> {
        let bytes = match self.admissible(&batch) {
            Ok(b) => b,
            Err(e) => return Err((e, batch)),
        };
        if batch.is_empty() {
            return Ok(Durable::done(0));
        }
        let full = SpoolError::Full {
            max_bytes: self.shared.settings.max_bytes,
        };
        let Ok(permit) = self.shared.budget.try_acquire_many(bytes as u32) else {
            return Err((full, batch));
        };
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { batch, reply }) {
            Ok(()) => {
                permit.forget();
                Ok(Durable::waiting(rx))
            }
            Err(mpsc::error::TrySendError::Full(job)) => Err((full, job.batch)),
            Err(mpsc::error::TrySendError::Closed(job)) => Err((SpoolError::Closed, job.batch)),
        }
    }

    fn admissible(&self, batch: &Batch) -> Result<u64, SpoolError> {
        let bytes = batch.frame_bytes();
        let limit = self.shared.settings.max_batch_bytes();
        if bytes > limit {
            return Err(SpoolError::BatchTooLarge { bytes, limit });
        }
        Ok(bytes)
    }
}

/// Resolves once a batch is durable (fsynced), or with the error that refused it.
#[derive(Debug)]
pub struct Durable(DurableInner);

#[derive(Debug)]
enum DurableInner {
    Done(Option<Appended>),
    Waiting(oneshot::Receiver<Result<Appended, Refused>>),
}

impl Durable {
    fn done(records: usize) -> Durable {
        Durable(DurableInner::Done(Some(Appended {
            first_seq: 0,
            records,
        })))
    }

    fn waiting(rx: oneshot::Receiver<Result<Appended, Refused>>) -> Durable {
        Durable(DurableInner::Waiting(rx))
    }

    /// As awaiting the `Durable`, but a refused batch gives its attachment back.
    pub async fn outcome(self) -> Result<Appended, Refused> {
        match self.0 {
            DurableInner::Done(done) => done.ok_or(Refused {
                error: SpoolError::Closed,
                attachment: None,
            }),
            DurableInner::Waiting(rx) => rx.await.unwrap_or(Err(Refused {
                error: SpoolError::Closed,
                attachment: None,
            })),
        }
    }
}

impl Future for Durable {
    type Output = Result<Appended, SpoolError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            DurableInner::Done(done) => Poll::Ready(done.take().ok_or(SpoolError::Closed)),
            // A writer gone without a reply (it panicked) never made the batch durable.
            DurableInner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| {
                    r.unwrap_or(Err(Refused {
                        error: SpoolError::Closed,
                        attachment: None,
                    }))
                })
                .map(|r| r.map_err(|refused| refused.error)),
        }
    }
}

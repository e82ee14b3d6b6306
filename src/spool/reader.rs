//! The reading side: records in append order from the read position, never past what is
//! durable, and `ack`, which saves the position (fsynced) and deletes the segments it
//! consumed wholly. One reader per spool.
//!
//! File reads and fsyncs run on tokio's blocking pool. Records read ahead wait in the
//! core until a call hands them out, so a cancelled `next_batch` loses nothing. While
//! the reader is caught up, [`Reader::next`] hands out batches kept in memory by the
//! writer instead (see [`super::handover`]) and moves its cursor past them.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::handover::Handed;
use super::ledger::Mark;
use super::position::{PositionFile, ReadPosition};
use super::scan::{ScanEvent, Scanner};
use super::{segment_path, Position, Read, Shared, SpoolError, SpoolRecord};

/// Bytes read from a segment per `pread`: large enough that the syscall is a small part
/// of the per-record cost, and well under lumberd's 1 MiB mmap threshold (main.rs), so
/// that each chunk's buffer (with a partial record carried over) comes from malloc's
/// reused heap. At 1 MiB every chunk was a fresh mmap: its pages faulted in, zeroed and
/// charged one by one, half of the reader's CPU in a profile (`perf record` under
/// benches/e2e_es.py --spool: 0.7 us per ~1 KB record).
const READ_CHUNK: u64 = 192 * 1024;
// Chunk buffers are kept to be reused once every record read from them is dropped (the
// Elasticsearch writer settled them): even under the mmap threshold, a buffer freed to
// malloc was often given back to the kernel and faulted in again; with reuse the
// reader's pages stay mapped. At most `SpoolSettings::spare_bytes` of them kept idle.

/// Reads `n` bytes at `c.pos` onto the end of `c.buf`, which has room for them: zeroed
/// first, as a `&mut [u8]` must be (only a partly read buffer takes this way).
fn read_zeroed(c: &mut Cursor, n: usize) -> std::io::Result<()> {
    let start = c.buf.len();
    c.buf.resize(start + n, 0);
    if let Err(e) = c.file.read_exact_at(&mut c.buf[start..], c.pos) {
        c.buf.truncate(start);
        return Err(e);
    }
    c.pos += n as u64;
    Ok(())
}

/// Fills all of `buf`'s spare capacity from `file` at `pos` (the caller made sure those
/// bytes are durable), without zeroing it first: `pread` into the spare capacity, the
/// length set by rustix. A chunk of fresh buffer zeroed and then overwritten cost 8% of
/// the from-disk wiring's CPU in a profile (benches/README.md).
fn read_spare(file: &File, buf: &mut Vec<u8>, mut pos: u64) -> std::io::Result<()> {
    while buf.len() < buf.capacity() {
        match rustix::io::pread(file, rustix::buffer::spare_capacity(buf), pos) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => pos += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// An open segment and the scanner over it.
#[derive(Debug)]
struct Cursor {
    base: u64,
    path: PathBuf,
    file: File,
    buf: BytesMut,
    /// File offset read up to (the end of `buf`).
    pos: u64,
    scanner: Scanner,
}

/// What one step of reading left.
enum Step {
    /// Records are ready, or bytes were read: go on.
    More,
    /// A sealed segment is read to its end: on to the next.
    SegmentEnd,
    /// Everything durable has been read.
    CaughtUp,
}

/// The reader's state, driven synchronously.
#[derive(Debug)]
pub(super) struct ReaderCore {
    shared: Arc<Shared>,
    cursor: Option<Cursor>,
    /// With no cursor: the next segment to open is the first at or after this base,
    /// from `start_offset` when it is exactly this one.
    want_segment: u64,
    start_offset: Option<u64>,
    /// Records below this were handed out (or acknowledged before the open).
    next_seq: u64,
    /// Records below this were appended before the open: reading them is a replay.
    replay_below: u64,
    ready: VecDeque<SpoolRecord>,
    ready_bytes: usize,
    /// Whether the last fill stopped with events possibly left in the cursor's buffer
    /// (it had enough records), so there is more to read before the file's next bytes.
    buffered: bool,
    /// Handed out, not acknowledged: sequence number and append time.
    pending: VecDeque<(u64, u64)>,
    /// Earlier chunk buffers, oldest first, to reclaim once their records are gone,
    /// and their capacity.
    spares: VecDeque<BytesMut>,
    spare_bytes: usize,
}

impl ReaderCore {
    /// A reader starting at the first segment at or after `segment` (at `offset` in
    /// it when it is that one, else at its start), skipping records below `next_seq`.
    pub fn new(
        shared: Arc<Shared>,
        segment: u64,
        offset: Option<u64>,
        next_seq: u64,
        replay_below: u64,
    ) -> ReaderCore {
        ReaderCore {
            shared,
            cursor: None,
            want_segment: segment,
            start_offset: offset,
            next_seq,
            replay_below,
            ready: VecDeque::new(),
            ready_bytes: 0,
            buffered: false,
            pending: VecDeque::new(),
            spares: VecDeque::new(),
            spare_bytes: 0,
        }
    }

    /// Where reading has got to, comparable with the writer's [`Mark`].
    fn at(&self) -> Mark {
        match &self.cursor {
            Some(c) => Mark {
                segment: c.base,
                len: c.pos,
            },
            // Nothing read yet in it: from `start_offset` (where a batch handed from
            // memory ended), so a caught-up reader does not look behind.
            None => Mark {
                segment: self.want_segment,
                len: self.start_offset.unwrap_or(0),
            },
        }
    }

    /// Whether durable bytes remain unread.
    pub fn behind(&self, mark: Mark) -> bool {
        self.buffered || self.at() < mark
    }

    /// Reads ahead until `records` records (or `bytes` bytes) are ready, or everything
    /// durable has been read.
    pub fn fill(&mut self, records: usize, bytes: usize) -> Result<(), SpoolError> {
        let filled = self.fill_inner(records, bytes);
        // Batches kept for the fast path that reading has passed are dropped.
        let mut stale = Vec::new();
        lock(&self.shared.handover).advanced(self.next_seq, &mut stale);
        filled
    }

    fn fill_inner(&mut self, records: usize, bytes: usize) -> Result<(), SpoolError> {
        loop {
            if self.full(records, bytes) {
                return Ok(());
            }
            if self.cursor.is_none() && !self.open_next()? {
                return Ok(());
            }
            let mut c = self.cursor.take().expect("opened");
            match self.advance(&mut c, records, bytes) {
                Ok(Step::More) => self.cursor = Some(c),
                Ok(Step::SegmentEnd) => self.want_segment = c.base + 1,
                Ok(Step::CaughtUp) => {
                    self.cursor = Some(c);
                    return Ok(());
                }
                Err(e) => {
                    self.cursor = Some(c);
                    return Err(e);
                }
            }
        }
    }

    fn full(&self, records: usize, bytes: usize) -> bool {
        self.ready.len() >= records || self.ready_bytes >= bytes
    }

    /// Scans what `c` has buffered, then reads its next chunk of durable bytes.
    fn advance(
        &mut self,
        c: &mut Cursor,
        records: usize,
        bytes: usize,
    ) -> Result<Step, SpoolError> {
        let (durable, sealed) = {
            let ledger = self.shared.ledger.lock().expect("ledger lock");
            let last = ledger.segments.back().map(|s| s.base);
            match ledger.segments.iter().find(|s| s.base == c.base) {
                Some(s) => (s.len, last != Some(s.base)),
                // Deleted by an ack: everything in it was handed out.
                None => (c.pos, true),
            }
        };
        let eof = sealed && c.pos >= durable;
        self.buffered = true;
        while !self.full(records, bytes) {
            match c.scanner.next(&mut c.buf, eof) {
                Some(event) => self.take(c, event),
                None => {
                    self.buffered = false;
                    if eof {
                        return Ok(Step::SegmentEnd);
                    }
                    break;
                }
            }
        }
        if self.buffered {
            return Ok(Step::More);
        }
        if c.pos >= durable {
            return Ok(Step::CaughtUp);
        }
        let n = READ_CHUNK.min(durable - c.pos) as usize;
        let read = if c.buf.capacity() - c.buf.len() < n {
            self.next_buffer(c, n, durable)
        } else {
            read_zeroed(c, n)
        };
        read.map_err(SpoolError::io("read", &c.path))?;
        Ok(Step::More)
    }

    /// Moves `c`'s unread bytes into a buffer with room for `n` more (a spare whose
    /// records are all dropped, or a new one) and reads into it what it has room for,
    /// never past `durable`; the old buffer becomes a spare.
    fn next_buffer(&mut self, c: &mut Cursor, n: usize, durable: u64) -> std::io::Result<()> {
        let need = c.buf.len() + n;
        let reused = self
            .spares
            .iter_mut()
            .position(|b| b.try_reclaim(need))
            .and_then(|i| self.spares.remove(i));
        if let Some(b) = &reused {
            self.spare_bytes = self.spare_bytes.saturating_sub(b.capacity());
        }
        // A buffer whose records are all dropped is its Vec again, without a copy (one
        // that try_reclaim passed for the room left after its records, still shared,
        // would come back as an empty copy: a new Vec then); a new Vec has exactly the
        // capacity asked for (std's guarantee).
        let mut next = reused
            .map(Vec::from)
            .filter(|v| v.capacity() >= need)
            .unwrap_or_else(|| Vec::with_capacity(need));
        next.extend_from_slice(&c.buf);
        let room = next.capacity() - next.len();
        let read = if room as u64 <= durable - c.pos {
            read_spare(&c.file, &mut next, c.pos)
        } else {
            // A spare larger than what is durable: only the durable bytes, zeroed first.
            let start = next.len();
            next.resize(start + (durable - c.pos) as usize, 0);
            c.file.read_exact_at(&mut next[start..], c.pos)
        };
        read?;
        c.pos += (next.len() - (need - n)) as u64;
        let mut old = std::mem::replace(&mut c.buf, BytesMut::from(Bytes::from(next)));
        old.clear();
        if self.spare_bytes + old.capacity() <= self.shared.settings.spare_bytes() {
            self.spare_bytes += old.capacity();
            self.spares.push_back(old);
        }
        Ok(())
    }

    /// The batch kept in memory that starts exactly at the next record, when there is
    /// one and nothing read from disk waits before it: handed out as read, the cursor
    /// moved past it.
    fn take_handed(&mut self, stale: &mut Vec<Handed>) -> Option<Handed> {
        if !self.ready.is_empty() {
            return None;
        }
        let h = lock(&self.shared.handover).take(self.next_seq, stale)?;
        self.skip_to(h.through);
        self.pending.push_back((h.through.seq, h.appended_ms));
        let counters = &self.shared.counters;
        counters.read.fetch_add(h.records as u64, Ordering::Relaxed);
        counters
            .from_memory
            .fetch_add(h.records as u64, Ordering::Relaxed);
        lock(&self.shared.ledger)
            .oldest_ms
            .get_or_insert(h.appended_ms);
        Some(h)
    }

    /// Moves the cursor to just past `through`, as if every record up to it had been
    /// read: in place when it is in the open segment, else from there at the next read.
    fn skip_to(&mut self, through: Position) {
        self.next_seq = through.seq + 1;
        self.buffered = false;
        match &mut self.cursor {
            Some(c) if c.base == through.segment => {
                c.buf.clear();
                c.pos = through.end;
                c.scanner =
                    Scanner::resume(c.base, through.end, self.shared.settings.max_record_bytes);
            }
            _ => {
                self.cursor = None;
                self.want_segment = through.segment;
                self.start_offset = Some(through.end);
            }
        }
    }

    /// Goes back to `saved`, the last position saved: everything after it is read
    /// again from disk.
    fn rewind_to(&mut self, saved: &ReadPosition) {
        self.cursor = None;
        self.want_segment = saved.segment;
        self.start_offset = (saved.offset > 0).then_some(saved.offset);
        self.next_seq = saved.next_seq;
        self.ready.clear();
        self.ready_bytes = 0;
        self.buffered = false;
        self.pending.clear();
        lock(&self.shared.handover).rewound(self.next_seq);
    }

    /// Opens the first segment at or after `want_segment`; false when there is none.
    fn open_next(&mut self) -> Result<bool, SpoolError> {
        loop {
            let next = {
                let ledger = self.shared.ledger.lock().expect("ledger lock");
                ledger
                    .segments
                    .iter()
                    .find(|s| s.base >= self.want_segment)
                    .map(|s| s.base)
            };
            let Some(base) = next else {
                return Ok(false);
            };
            let path = segment_path(&self.shared.dir, base);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(segment = %path.display(), "spool: segment vanished before it was read");
                    let freed = self.shared.ledger.lock().expect("ledger lock").remove(base);
                    self.shared.release(freed);
                    self.want_segment = base + 1;
                    continue;
                }
                Err(e) => return Err(SpoolError::io("open", &path)(e)),
            };
            let max = self.shared.settings.max_record_bytes;
            let (scanner, pos) = match self.start_offset.take() {
                Some(offset) if base == self.want_segment => {
                    (Scanner::resume(base, offset, max), offset)
                }
                _ => (Scanner::new(base, max), 0),
            };
            self.cursor = Some(Cursor {
                base,
                path,
                file,
                buf: BytesMut::new(),
                pos,
                scanner,
            });
            return Ok(true);
        }
    }

    fn take(&mut self, c: &Cursor, event: ScanEvent) {
        let counters = &self.shared.counters;
        match event {
            ScanEvent::Record {
                header,
                offset,
                payload,
            } => {
                // Before the read position (a segment read from its start).
                if header.seq < self.next_seq {
                    return;
                }
                self.next_seq = header.seq + 1;
                self.ready_bytes += payload.len();
                self.ready.push_back(SpoolRecord {
                    data: payload,
                    position: Position {
                        segment: c.base,
                        end: offset + header.frame_len() as u64,
                        seq: header.seq,
                    },
                    appended_ms: header.appended_ms,
                });
            }
            ScanEvent::Corrupt { offset, bytes } => {
                counters.corrupt.fetch_add(1, Ordering::Relaxed);
                counters.corrupt_bytes.fetch_add(bytes, Ordering::Relaxed);
                tracing::warn!(segment = %c.path.display(), offset, bytes,
                    "spool: skipped bytes that are not a valid record (checksum mismatch)");
            }
            ScanEvent::Tail { offset, bytes } => {
                counters.corrupt.fetch_add(1, Ordering::Relaxed);
                counters.corrupt_bytes.fetch_add(bytes, Ordering::Relaxed);
                tracing::warn!(segment = %c.path.display(), offset, bytes,
                    "spool: segment ends with bytes that are not a whole record; skipped");
            }
        }
    }

    /// Hands out up to `records` ready records (and about `bytes` bytes, at least one).
    pub fn pop(&mut self, records: usize, bytes: usize) -> Vec<SpoolRecord> {
        let mut out = Vec::new();
        let mut taken = 0;
        while out.len() < records {
            let Some(r) = self.ready.front() else { break };
            if !out.is_empty() && taken + r.data.len() > bytes {
                break;
            }
            let r = self.ready.pop_front().expect("front exists");
            taken += r.data.len();
            self.pending.push_back((r.position.seq, r.appended_ms));
            out.push(r);
        }
        self.ready_bytes -= taken;
        if let Some(first) = out.first() {
            let counters = &self.shared.counters;
            counters.read.fetch_add(out.len() as u64, Ordering::Relaxed);
            let replayed = out
                .iter()
                .filter(|r| r.position.seq < self.replay_below)
                .count();
            counters
                .replayed
                .fetch_add(replayed as u64, Ordering::Relaxed);
            let mut ledger = self.shared.ledger.lock().expect("ledger lock");
            ledger.oldest_ms.get_or_insert(first.appended_ms);
        }
        out
    }

    /// The sequence number after the last record handed out.
    fn handed_next(&self) -> u64 {
        self.ready.front().map_or(self.next_seq, |r| r.position.seq)
    }

    /// Append time of the oldest record not acknowledged that this reader knows of.
    pub fn oldest_known(&self) -> Option<u64> {
        self.pending
            .front()
            .map(|p| p.1)
            .or_else(|| self.ready.front().map(|r| r.appended_ms))
    }
}

/// Saving the read position; separate from the core so that an `ack`'s fsync does not
/// hold up reading.
#[derive(Debug)]
pub(super) struct Acker {
    pub file: PositionFile,
    pub acked_next: u64,
    /// The position saved last (or started from): where a rewind goes back to.
    pub saved: ReadPosition,
}

/// The spool's one consumer: records in append order from the read position.
#[derive(Debug)]
pub struct Reader {
    core: Arc<Mutex<ReaderCore>>,
    acker: Arc<Mutex<Acker>>,
    marks: watch::Receiver<Mark>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the state half-written in a way that
    // loses records: the worst is records handed out twice, which ids make harmless.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reader {
    pub(super) fn new(core: ReaderCore, acker: Acker, marks: watch::Receiver<Mark>) -> Reader {
        Reader {
            core: Arc::new(Mutex::new(core)),
            acker: Arc::new(Mutex::new(acker)),
            marks,
        }
    }

    /// Waits for durable records and returns up to `max_records` of them (and about
    /// `max_bytes` of payload, at least one record), in append order, read from disk.
    /// Returns an empty batch once the writer has stopped and everything has been read.
    /// Cancel-safe. Batches appended with an attachment are read back like any other.
    pub async fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<SpoolRecord>, SpoolError> {
        match self.read(max_records, max_bytes, false).await? {
            Read::Disk(records) => Ok(records),
            Read::Memory(_) => unreachable!("not asked for"),
        }
    }

    /// As [`Reader::next_batch`], but while the reader is caught up, a batch appended
    /// with an attachment comes back as [`Read::Memory`] once durable, not read back.
    /// Either way the records come out once each, in append order, and are
    /// acknowledged alike (a memory batch by its `through`).
    pub async fn next(&mut self, max_records: usize, max_bytes: usize) -> Result<Read, SpoolError> {
        self.read(max_records, max_bytes, true).await
    }

    async fn read(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        memory: bool,
    ) -> Result<Read, SpoolError> {
        let max_records = max_records.max(1);
        let mut closed = false;
        let mut stale = Vec::new();
        loop {
            let mark = *self.marks.borrow_and_update();
            let behind = {
                let mut core = lock(&self.core);
                if !core.ready.is_empty() {
                    return Ok(Read::Disk(core.pop(max_records, max_bytes)));
                }
                if memory {
                    if let Some(h) = core.take_handed(&mut stale) {
                        return Ok(Read::Memory(h));
                    }
                }
                core.behind(mark)
            };
            if behind {
                let core = self.core.clone();
                tokio::task::spawn_blocking(move || lock(&core).fill(max_records, max_bytes))
                    .await
                    .map_err(|_| SpoolError::Closed)??;
                let mut core = lock(&self.core);
                if !core.ready.is_empty() {
                    return Ok(Read::Disk(core.pop(max_records, max_bytes)));
                }
                if core.behind(mark) {
                    continue;
                }
            }
            if closed {
                return Ok(Read::Disk(Vec::new()));
            }
            // The writer is gone: one more look at what it committed last, then done.
            closed = self.marks.changed().await.is_err();
        }
    }

    /// Goes back to the position saved last: every record after it is handed out again,
    /// read from disk (until the reader is caught up). For a consumer that lost what it
    /// was handed (a batch from memory it cannot send again); nothing acknowledged comes
    /// back.
    pub async fn rewind(&self) -> Result<(), SpoolError> {
        let core = self.core.clone();
        let acker = self.acker.clone();
        tokio::task::spawn_blocking(move || {
            let acker = lock(&acker);
            lock(&core).rewind_to(&acker.saved);
        })
        .await
        .map_err(|_| SpoolError::Closed)
    }

    /// Acknowledges `through` and every record before it: saves the read position
    /// (fsynced) and deletes the segments now wholly consumed. An ack at or before an
    /// earlier one does nothing; one past what was handed out is refused.
    pub async fn ack(&self, through: Position) -> Result<(), SpoolError> {
        let core = self.core.clone();
        let acker = self.acker.clone();
        tokio::task::spawn_blocking(move || ack(&core, &acker, through))
            .await
            .map_err(|_| SpoolError::Closed)?
    }
}

fn ack(
    core: &Mutex<ReaderCore>,
    acker: &Mutex<Acker>,
    through: Position,
) -> Result<(), SpoolError> {
    let mut acker = lock(acker);
    if through.seq < acker.acked_next {
        return Ok(());
    }
    let (shared, oldest) = {
        let mut c = lock(core);
        if through.seq >= c.handed_next() {
            return Err(SpoolError::AckBeyondRead {
                seq: through.seq,
                read: c.handed_next(),
            });
        }
        while c.pending.front().is_some_and(|p| p.0 <= through.seq) {
            c.pending.pop_front();
        }
        if c.pending.is_empty() && c.ready.is_empty() {
            // Learn the next record's time for the oldest-record metric.
            c.fill(1, 1)?;
        }
        (c.shared.clone(), c.oldest_known())
    };
    let saved = ReadPosition {
        next_seq: through.seq + 1,
        segment: through.segment,
        offset: through.end,
    };
    acker.file.save(&saved).map_err(SpoolError::io(
        "fsync",
        &shared.dir.join(super::position::POSITION_FILE),
    ))?;
    acker.acked_next = saved.next_seq;
    acker.saved = saved;
    let consumed = {
        let mut ledger = lock(&shared.ledger);
        ledger.acked_next = ledger.acked_next.max(saved.next_seq);
        ledger.oldest_ms = if ledger.records() == 0 { None } else { oldest };
        ledger.consumed(&through)
    };
    // Deletions need no directory fsync: a segment that reappears after a crash holds
    // only records before the saved position, which the reader skips.
    for s in consumed {
        let path = segment_path(&shared.dir, s.base);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e,
                    "spool: could not delete a consumed segment; will retry at the next ack");
                continue;
            }
        }
        let freed = lock(&shared.ledger).remove(s.base);
        shared.release(freed);
    }
    Ok(())
}

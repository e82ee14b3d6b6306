//! The writing side: batches framed by the appenders, ordered and written by one
//! thread, made durable with one fsync per round for every batch queued since the last
//! (group commit), and rolled back when a write or an fsync fails.
//!
//! Only this thread writes segment files; the reader reads their durable part and
//! deletes consumed ones, both through the ledger.

use std::fs::{File, OpenOptions};
use std::hash::Hasher as _;
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use twox_hash::XxHash3_64;

use super::direct::{self, DirectBuf};
use super::frame::{
    describe, describe_payload, order, seal, segment_header, FRAME_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use super::handover::Handed;
use super::ledger::{Mark, SegmentInfo};
use super::{segment_path, Appended, Attachment, Position, Refused, Shared, SpoolError};

/// Batches written in one round at most: with [`MAX_ROUND_BYTES`], bounds how long the
/// batches of a round wait for its fsync.
const MAX_ROUND_BATCHES: usize = 1024;
/// Bytes written in one round at most (~30 ms of a 500 MB/s disk), far above the
/// ~0.5 MB one fsync needs to amortise below 0.1 us per record.
const MAX_ROUND_BYTES: usize = 16 * 1024 * 1024;
/// Writes of small batches are gathered up to this size before one `pwrite`.
const WRITE_BUFFER: usize = 256 * 1024;
/// Slices per `pwritev` at most (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;
/// While writes keep failing (a full disk), one error line at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Records framed on the appender's thread (length and payload hash), waiting for the
/// writer to number and time them. Made by [`super::Appender::batch`].
pub struct Batch {
    /// Frame headers and the bytes of each record held here: all of a record pushed
    /// whole, the head of one pushed with its document beside it.
    frames: Vec<u8>,
    /// One per record, in order.
    parts: Vec<Part>,
    /// Bytes of all frames on disk.
    bytes: usize,
    max_record_bytes: u32,
    /// The caller's own form of the records, for the reader's fast path.
    attachment: Option<Attachment>,
}

/// A copy of the frames, without the attachment (tests replay one batch twice).
#[cfg(test)]
impl Clone for Batch {
    fn clone(&self) -> Batch {
        Batch {
            frames: self.frames.clone(),
            parts: self.parts.clone(),
            bytes: self.bytes,
            max_record_bytes: self.max_record_bytes,
            attachment: None,
        }
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("records", &self.parts.len())
            .field("bytes", &self.bytes)
            .field("attached", &self.attachment.is_some())
            .finish()
    }
}

impl Batch {
    /// A batch writing into `frames` (cleared), a buffer reused from an earlier batch.
    pub(super) fn with_buffer(max_record_bytes: u32, mut frames: Vec<u8>) -> Batch {
        frames.clear();
        Batch {
            frames,
            parts: Vec::new(),
            bytes: 0,
            max_record_bytes,
            attachment: None,
        }
    }

    /// Attaches the caller's own form of the batch's records: once the batch is
    /// durable, a caught-up reader is handed it ([`super::Read::Memory`]) instead of
    /// reading the records back. A refused batch gives it back ([`super::Refused`]).
    pub fn attach(&mut self, attachment: Attachment) {
        self.attachment = Some(attachment);
    }

    /// Takes the attachment back (a batch the spool refused before queueing it).
    pub fn detach(&mut self) -> Option<Attachment> {
        self.attachment.take()
    }

    /// Makes room for `records` more records of `bytes` bytes in all, so that a batch
    /// whose size is known grows its buffer once.
    pub fn reserve(&mut self, records: usize, bytes: usize) {
        self.frames.reserve(records * FRAME_HEADER_BYTES + bytes);
        self.parts.reserve(records);
    }

    /// Adds one record (opaque bytes).
    pub fn push(&mut self, record: &[u8]) -> Result<(), SpoolError> {
        self.check(record.len())?;
        self.push_with(|out| out.extend_from_slice(record))
    }

    /// Adds one record written by `write` straight into the batch's buffer (no copy of
    /// a serialised record). Refused, and nothing added, when it exceeds
    /// `max_record_bytes`.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), SpoolError> {
        let start = self.frames.len();
        self.frames.resize(start + FRAME_HEADER_BYTES, 0);
        write(&mut self.frames);
        let len = self.frames.len() - start - FRAME_HEADER_BYTES;
        if let Err(e) = self.check(len) {
            self.frames.truncate(start);
            return Err(e);
        }
        describe_payload(&mut self.frames[start..]);
        self.add(start, None);
        Ok(())
    }

    /// Adds one record of a head written by `write` into the batch's buffer and then
    /// `doc`, which goes to disk from its own bytes, never copied into the batch: the
    /// record on disk is the same as [`Batch::push_with`] writing both. Its checksum is
    /// the writer's to compute ([`Active::write`]), so the document is read once more
    /// only where it is copied anyway. Refused, and nothing added, when it exceeds
    /// `max_record_bytes`.
    pub fn push_with_doc(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>),
        doc: Bytes,
    ) -> Result<(), SpoolError> {
        let start = self.frames.len();
        self.frames.resize(start + FRAME_HEADER_BYTES, 0);
        write(&mut self.frames);
        let len = self.frames.len() - start - FRAME_HEADER_BYTES + doc.len();
        if let Err(e) = self.check(len) {
            self.frames.truncate(start);
            return Err(e);
        }
        self.add(start, Some(doc));
        Ok(())
    }

    fn add(&mut self, at: usize, doc: Option<Bytes>) {
        let part = Part {
            at,
            end: self.frames.len(),
            doc,
        };
        self.bytes += part.frame_len();
        self.parts.push(part);
    }

    fn check(&self, len: usize) -> Result<(), SpoolError> {
        if len > self.max_record_bytes as usize {
            return Err(SpoolError::RecordTooLarge {
                bytes: len,
                limit: self.max_record_bytes,
            });
        }
        Ok(())
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Bytes the batch takes on disk (its frames), what it reserves of `max_bytes`.
    pub fn frame_bytes(&self) -> u64 {
        self.bytes as u64
    }
}

/// One record of a batch: its bytes in the batch's buffer (`at..end`, the frame header
/// first), then the document written from its own bytes, if it was pushed with one:
/// then the header's length and payload hash are the writer's to fill in.
#[derive(Debug, Clone)]
struct Part {
    at: usize,
    end: usize,
    doc: Option<Bytes>,
}

impl Part {
    fn frame_len(&self) -> usize {
        self.end - self.at + self.doc.as_ref().map_or(0, Bytes::len)
    }

    fn payload_len(&self) -> usize {
        self.frame_len() - FRAME_HEADER_BYTES
    }
}

/// The segment being written.
#[derive(Debug)]
struct Active {
    base: u64,
    path: PathBuf,
    file: File,
    /// Bytes in the file (through `pwrite`), before `pending`.
    written: u64,
    /// Bytes durable (fsynced) in this file.
    durable: u64,
    pending: Pending,
}

/// Bytes appended and not yet in the file, and how they get there.
#[derive(Debug)]
enum Pending {
    /// Through the page cache: small runs gathered for one `pwrite`, large ones written
    /// from the batch and the documents themselves (`pwritev`).
    Buffered(Vec<u8>),
    /// Copied into a block-aligned buffer and written with `O_DIRECT` (direct.rs).
    Direct(DirectBuf),
}

impl Active {
    /// A segment opened for writing after its first `len` bytes.
    fn open(base: u64, path: PathBuf, len: u64, direct: bool) -> io::Result<Active> {
        let (file, pending) = if direct {
            (
                direct::open(&path, false)?,
                Pending::Direct(DirectBuf::resume(&path, len)?),
            )
        } else {
            (
                OpenOptions::new().write(true).open(&path)?,
                Pending::Buffered(Vec::with_capacity(WRITE_BUFFER)),
            )
        };
        Ok(Active {
            base,
            path,
            file,
            written: len,
            durable: len,
            pending,
        })
    }

    /// A new segment, its header appended.
    fn create(base: u64, path: PathBuf, direct: bool) -> io::Result<Active> {
        let header = segment_header(base);
        let (file, pending) = if direct {
            let file = direct::open(&path, true)?;
            let mut buf = DirectBuf::new();
            buf.extend(&file, &header)?;
            (file, Pending::Direct(buf))
        } else {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            let mut pending = Vec::with_capacity(WRITE_BUFFER);
            pending.extend_from_slice(&header);
            (file, Pending::Buffered(pending))
        };
        Ok(Active {
            base,
            path,
            file,
            written: 0,
            durable: 0,
            pending,
        })
    }

    fn size(&self) -> u64 {
        match &self.pending {
            Pending::Buffered(pending) => self.written + pending.len() as u64,
            Pending::Direct(buf) => buf.size(),
        }
    }

    /// Writes `parts` (`bytes` on disk in all, ordered: [`order`]) of a batch whose
    /// buffer is `frames`, finishing the header of each record pushed with its document
    /// (length, payload hash, [`seal`]). Direct, every byte is copied into the aligned
    /// buffer, which writes its full blocks whenever it fills, and a record's payload is
    /// hashed where it was just copied: contiguous and in cache, where hashing it from
    /// its two sources would read the document cold once more. Through the page cache,
    /// a small run is gathered with others for one `pwrite`, a large one goes out from
    /// the buffer and the documents themselves.
    fn write(&mut self, frames: &mut [u8], parts: &[Part], bytes: usize) -> Result<(), SpoolError> {
        let pending = match &mut self.pending {
            Pending::Buffered(pending) => pending,
            Pending::Direct(buf) => {
                let file = &self.file;
                let copied = parts.iter().try_for_each(|p| {
                    let Some(doc) = &p.doc else {
                        return buf.extend(file, &frames[p.at..p.end]);
                    };
                    let frame = buf.extend_all(file, [&frames[p.at..p.end], doc])?;
                    describe_payload(frame);
                    seal(frame);
                    Ok(())
                });
                self.written = buf.written();
                return copied.map_err(SpoolError::io("write", &self.path));
            }
        };
        for p in parts {
            if let Some(doc) = &p.doc {
                let frame = &mut frames[p.at..p.end];
                let mut hash = XxHash3_64::new();
                hash.write(&frame[FRAME_HEADER_BYTES..]);
                hash.write(doc);
                describe(frame, p.payload_len() as u32, hash.finish());
                seal(frame);
            }
        }
        if pending.len() + bytes > WRITE_BUFFER {
            flush_buffered(&self.file, pending, &mut self.written)
                .map_err(SpoolError::io("write", &self.path))?;
        }
        if bytes < WRITE_BUFFER {
            for p in parts {
                pending.extend_from_slice(&frames[p.at..p.end]);
                if let Some(doc) = &p.doc {
                    pending.extend_from_slice(doc);
                }
            }
            return Ok(());
        }
        // Records held whole in the buffer are contiguous there: one slice per run of
        // them, and one per document between.
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * parts.len());
        let mut run: Option<(usize, usize)> = None;
        for p in parts {
            run = match run {
                Some((start, end)) if end == p.at => Some((start, p.end)),
                Some((start, end)) => {
                    slices.push(IoSlice::new(&frames[start..end]));
                    Some((p.at, p.end))
                }
                None => Some((p.at, p.end)),
            };
            if let Some(doc) = &p.doc {
                let (start, end) = run.take().expect("a run");
                slices.push(IoSlice::new(&frames[start..end]));
                slices.push(IoSlice::new(doc));
            }
        }
        if let Some((start, end)) = run {
            slices.push(IoSlice::new(&frames[start..end]));
        }
        write_all_vectored_at(&self.file, &mut slices, self.written)
            .map_err(SpoolError::io("write", &self.path))?;
        self.written += bytes as u64;
        Ok(())
    }

    /// Puts everything appended into the file (direct: the last block padded).
    fn flush(&mut self) -> Result<(), SpoolError> {
        let flushed = match &mut self.pending {
            Pending::Buffered(pending) => flush_buffered(&self.file, pending, &mut self.written),
            Pending::Direct(buf) => {
                let done = buf.write_out(&self.file, true);
                self.written = buf.written();
                done
            }
        };
        flushed.map_err(SpoolError::io("write", &self.path))
    }

    /// Forgets what was appended after the durable bytes and cuts the file back to them.
    fn cut_back(&mut self) -> io::Result<()> {
        self.written = self.durable;
        match &mut self.pending {
            Pending::Buffered(pending) => pending.clear(),
            // Emptied first: if reading the last block back fails, nothing stale is
            // written; the caller then starts a new segment.
            Pending::Direct(buf) => *buf = DirectBuf::new(),
        }
        self.file.set_len(self.durable)?;
        if let Pending::Direct(buf) = &mut self.pending {
            *buf = DirectBuf::resume(&self.path, self.durable)?;
        }
        Ok(())
    }
}

fn flush_buffered(file: &File, pending: &mut Vec<u8>, written: &mut u64) -> io::Result<()> {
    if !pending.is_empty() {
        file.write_all_at(pending, *written)?;
        *written += pending.len() as u64;
        pending.clear();
    }
    Ok(())
}

/// The writer's files and sequence numbers, driven synchronously: `append` batches,
/// then `commit` (or `rollback` after an error).
#[derive(Debug)]
pub(super) struct WriterCore {
    dir: PathBuf,
    dir_file: File,
    segment_bytes: u64,
    /// Segments are written with `O_DIRECT` (the filesystem takes it; direct.rs).
    direct: bool,
    active: Option<Active>,
    next_seq: u64,
    durable_next: u64,
    /// This round's segments left behind (written, not yet fsynced) and created.
    rotated: Vec<Active>,
    created: Vec<u64>,
}

/// What a commit made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Committed {
    pub touched: Vec<SegmentInfo>,
    pub durable_next: u64,
}

impl WriterCore {
    /// A writer continuing `resume` (the last segment, when it is whole and has room:
    /// base and valid length) or starting a new segment at `next_seq` on first append.
    pub fn open(
        dir: &Path,
        dir_file: File,
        segment_bytes: u64,
        direct: bool,
        resume: Option<(u64, u64)>,
        next_seq: u64,
    ) -> Result<WriterCore, SpoolError> {
        let active = match resume {
            Some((base, len)) => {
                let path = segment_path(dir, base);
                let active = Active::open(base, path.clone(), len, direct)
                    .map_err(SpoolError::io("open", &path))?;
                Some(active)
            }
            None => None,
        };
        Ok(WriterCore {
            dir: dir.to_path_buf(),
            dir_file,
            segment_bytes,
            direct,
            active,
            next_seq,
            durable_next: next_seq,
            rotated: Vec::new(),
            created: Vec::new(),
        })
    }

    /// Numbers, times and writes `batch` (not yet durable); returns its first
    /// sequence number, and where its last record ends (none for an empty batch).
    pub fn append(
        &mut self,
        batch: &mut Batch,
        now_ms: u64,
    ) -> Result<(u64, Option<Position>), SpoolError> {
        let first = self.next_seq;
        let mut last = None;
        let Batch { frames, parts, .. } = batch;
        // Records go out in runs, one per segment they land in.
        let (mut run, mut run_bytes) = (0, 0);
        for (i, p) in parts.iter().enumerate() {
            let len = p.frame_len();
            // An empty segment takes any record: the settings keep records smaller
            // than segments.
            let room = self.active.as_ref().is_some_and(|a| {
                let size = a.size() + run_bytes as u64;
                size + len as u64 <= self.segment_bytes || size <= SEGMENT_HEADER_BYTES as u64
            });
            if !room {
                self.write(frames, &parts[run..i], run_bytes)?;
                (run, run_bytes) = (i, 0);
                self.rotate()?;
            }
            let header = &mut frames[p.at..p.at + FRAME_HEADER_BYTES];
            order(header, self.next_seq, now_ms);
            if p.doc.is_none() {
                // Described by the appender; one with a document is sealed once written.
                seal(header);
            }
            run_bytes += len;
            let active = self.active.as_ref().expect("a segment is open");
            last = Some(Position {
                segment: active.base,
                end: active.size() + run_bytes as u64,
                seq: self.next_seq,
            });
            self.next_seq += 1;
        }
        self.write(frames, &parts[run..], run_bytes)?;
        Ok((first, last))
    }

    fn write(&mut self, frames: &mut [u8], parts: &[Part], bytes: usize) -> Result<(), SpoolError> {
        if parts.is_empty() {
            return Ok(());
        }
        let active = self
            .active
            .as_mut()
            .expect("a segment is open before writing");
        active.write(frames, parts, bytes)
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        if let Some(mut old) = self.active.take() {
            let flushed = old.flush();
            self.rotated.push(old);
            flushed?;
        }
        let base = self.next_seq;
        let path = segment_path(&self.dir, base);
        let active = Active::create(base, path.clone(), self.direct)
            .map_err(SpoolError::io("create", &path))?;
        self.created.push(base);
        self.active = Some(active);
        Ok(())
    }

    /// Makes everything appended durable: one `fdatasync` per segment written this
    /// round, and one of the directory when a segment was created.
    pub fn commit(&mut self) -> Result<Committed, SpoolError> {
        let mut touched = Vec::with_capacity(self.rotated.len() + 1);
        for a in self.rotated.iter_mut().chain(self.active.as_mut()) {
            a.flush()?;
            if a.written > a.durable {
                a.file
                    .sync_data()
                    .map_err(SpoolError::io("fsync", &a.path))?;
            }
            touched.push(SegmentInfo {
                base: a.base,
                len: a.written,
            });
        }
        if !self.created.is_empty() {
            self.dir_file
                .sync_all()
                .map_err(SpoolError::io("fsync", &self.dir))?;
        }
        for a in self.rotated.iter_mut().chain(self.active.as_mut()) {
            a.durable = a.written;
        }
        self.rotated.clear();
        self.created.clear();
        self.durable_next = self.next_seq;
        Ok(Committed {
            touched,
            durable_next: self.durable_next,
        })
    }

    /// Undoes a failed round: segments it created are removed, the segment it began in
    /// is cut back to its durable length, and its sequence numbers are reused. If any of
    /// that fails, the numbers are skipped instead and the next round starts a new
    /// segment, so nothing not durable can sit before new records in one file.
    pub fn rollback(&mut self) {
        let mut ok = true;
        let mut keep = None;
        for mut a in self.rotated.drain(..).chain(self.active.take()) {
            // The one segment not created this round is the one it began in.
            if !self.created.contains(&a.base) {
                ok = a.cut_back().is_ok();
                keep = Some(a);
            }
        }
        for base in self.created.drain(..) {
            let path = segment_path(&self.dir, base);
            if let Err(e) = std::fs::remove_file(&path) {
                ok &= e.kind() == io::ErrorKind::NotFound;
            }
        }
        if ok {
            self.active = keep;
            self.next_seq = self.durable_next;
        } else {
            tracing::warn!(dir = %self.dir.display(),
                "spool: could not undo a failed write; continuing in a new segment");
        }
    }
}

/// Writes all of `slices` at `offset`, `IOV_MAX` slices per call.
fn write_all_vectored_at(
    file: &File,
    mut slices: &mut [IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    while !slices.is_empty() {
        let n = slices.len().min(IOV_MAX);
        match rustix::io::pwritev(file, &slices[..n], offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                offset += written as u64;
                IoSlice::advance_slices(&mut slices, written);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One batch waiting for the writer.
pub(super) struct Job {
    pub batch: Batch,
    pub reply: oneshot::Sender<Result<Appended, Refused>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The writer thread: rounds of every queued batch, one commit each, until every
/// appender is gone and the queue is empty.
pub(super) fn run(
    mut core: WriterCore,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Job>,
    marks: watch::Sender<Mark>,
) {
    let mut round: Vec<Job> = Vec::with_capacity(MAX_ROUND_BATCHES);
    let mut failing: Option<(Instant, u64)> = None;
    while let Some(job) = rx.blocking_recv() {
        let mut bytes = job.batch.bytes;
        round.push(job);
        while round.len() < MAX_ROUND_BATCHES && bytes < MAX_ROUND_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.batch.bytes;
                    round.push(job);
                }
                Err(_) => break,
            }
        }
        let now = now_ms();
        let mut firsts = Vec::with_capacity(round.len());
        let result = round
            .iter_mut()
            .try_for_each(|j| core.append(&mut j.batch, now).map(|f| firsts.push(f)))
            .and_then(|()| core.commit());
        match result {
            Ok(done) => {
                if let Some((_, rounds)) = failing.take() {
                    tracing::info!(dir = %shared.dir.display(), failed_rounds = rounds, "spool: writes succeed again");
                }
                let records: usize = round.iter().map(|j| j.batch.len()).sum();
                // Kept for the fast path before the mark moves, so that a caught-up
                // reader woken by it finds the batches here rather than on disk.
                let mut dropped = Vec::new();
                {
                    let mut handover = shared.handover.lock().expect("handover lock");
                    for (j, (first_seq, last)) in round.iter_mut().zip(&firsts) {
                        let (Some(attachment), Some(through)) = (j.batch.attachment.take(), *last)
                        else {
                            continue;
                        };
                        let handed = Handed {
                            attachment,
                            first_seq: *first_seq,
                            records: j.batch.len(),
                            through,
                            appended_ms: now,
                            bytes: j.batch.frame_bytes(),
                        };
                        if let Err(h) = handover.offer(handed) {
                            dropped.push(h);
                        }
                    }
                }
                drop(dropped);
                let mark = {
                    let mut ledger = shared.ledger.lock().expect("ledger lock");
                    ledger.commit(&done.touched, done.durable_next, Some(now));
                    ledger.mark()
                };
                shared
                    .counters
                    .written
                    .fetch_add(records as u64, Ordering::Relaxed);
                shared.counters.commits.fetch_add(1, Ordering::Relaxed);
                marks.send_replace(mark);
                for (j, (first_seq, _)) in round.drain(..).zip(firsts) {
                    let records = j.batch.len();
                    let _ = j.reply.send(Ok(Appended { first_seq, records }));
                    shared.recycle(j.batch.frames);
                }
            }
            Err(e) => {
                core.rollback();
                shared.release(bytes as u64);
                let (since, rounds) = failing.get_or_insert((Instant::now(), 0));
                *rounds += 1;
                if *rounds == 1 || since.elapsed() >= ERROR_LOG_INTERVAL {
                    tracing::error!(error = %e, failed_rounds = *rounds, batches = round.len(),
                        "spool: write failed; these batches are not durable and were refused");
                    *since = Instant::now();
                }
                for mut j in round.drain(..) {
                    let _ = j.reply.send(Err(Refused {
                        error: e.clone(),
                        attachment: j.batch.attachment.take(),
                    }));
                }
            }
        }
    }
}

//! Opening a spool directory: lock it, take stock of what is there, cut the torn tail,
//! and start the writer and the reader where the last run left off. Whatever the
//! directory holds, this reports and carries on; only I/O errors on the spool's own
//! files (an unwritable directory, a failing disk) stop it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustix::fs::{flock, FlockOperation};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::direct;
use super::frame::SEGMENT_HEADER_BYTES;
use super::handover::Handover;
use super::ledger::{Ledger, SegmentInfo};
use super::position::{Loaded, PositionFile, ReadPosition, POSITION_FILE};
use super::reader::{Acker, ReaderCore};
use super::scan::{ScanEvent, Scanner};
use super::writer::{self, WriterCore};
use super::{
    segment_path, Counters, Pool, Reader, Recovery, Shared, Spool, SpoolError, SpoolSettings,
};

const LOCK_FILE: &str = "lock";
/// How long open waits for another holder of the directory's lock before refusing.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_POLL: Duration = Duration::from_millis(20);
const READ_CHUNK: usize = 1024 * 1024;

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// What a full scan of a segment found.
#[derive(Debug, Default)]
struct TailScan {
    header_valid: bool,
    /// End of the last valid record (or of the header).
    valid_end: u64,
    last_seq: Option<u64>,
    /// Bytes after `valid_end` that are not records.
    tail: u64,
}

fn scan_segment(path: &Path, base: u64, len: u64, max_record_bytes: u32) -> io::Result<TailScan> {
    let file = File::open(path)?;
    let mut scanner = Scanner::new(base, max_record_bytes);
    let mut buf = BytesMut::new();
    let mut pos = 0u64;
    let mut out = TailScan::default();
    loop {
        let eof = pos >= len;
        while let Some(event) = scanner.next(&mut buf, eof) {
            match event {
                ScanEvent::Record { header, .. } => out.last_seq = Some(header.seq),
                ScanEvent::Corrupt { .. } => {}
                ScanEvent::Tail { bytes, .. } => out.tail = bytes,
            }
            if !matches!(event, ScanEvent::Tail { .. }) {
                out.valid_end = event.end();
            }
        }
        if eof {
            break;
        }
        let n = READ_CHUNK.min((len - pos) as usize);
        let start = buf.len();
        buf.resize(start + n, 0);
        file.read_exact_at(&mut buf[start..], pos)?;
        pos += n as u64;
    }
    out.header_valid = scanner.header_valid();
    if out.header_valid {
        out.valid_end = out.valid_end.max(SEGMENT_HEADER_BYTES as u64);
    }
    Ok(out)
}

pub(super) fn open(settings: SpoolSettings) -> Result<(Spool, Reader), SpoolError> {
    settings.validate()?;
    let io = SpoolError::io;
    std::fs::create_dir_all(&settings.dir).map_err(io("create", &settings.dir))?;
    let dir = settings
        .dir
        .canonicalize()
        .map_err(io("open", &settings.dir))?;
    let dir_file = File::open(&dir).map_err(io("open", &dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io("create", &lock_path))?;
    // Two lumberd on one volume would interleave their writes: refuse the second. A
    // lock held a moment longer is waited for: a process that forks (any child it
    // spawns) keeps a copy of the descriptor, and so the lock, until the child execs.
    let waited = Instant::now();
    loop {
        match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                if waited.elapsed() >= LOCK_WAIT {
                    return Err(SpoolError::Locked { path: dir });
                }
                std::thread::sleep(LOCK_POLL);
            }
            Err(e) => return Err(io("lock", &lock_path)(e.into())),
        }
    }

    let mut recovery = Recovery::default();
    let mut segments: Vec<SegmentInfo> = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
        let entry = entry.map_err(io("list", &dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == POSITION_FILE || name == LOCK_FILE {
            continue;
        }
        match parse_segment_name(&name) {
            Some(base) if entry.file_type().is_ok_and(|t| t.is_file()) => {
                let len = entry.metadata().map_err(io("stat", &entry.path()))?.len();
                segments.push(SegmentInfo { base, len });
            }
            _ => recovery.unknown_files.push(entry.path()),
        }
    }
    segments.sort_by_key(|s| s.base);
    if !recovery.unknown_files.is_empty() {
        recovery.unknown_files.sort();
        tracing::warn!(dir = %dir.display(), files = ?recovery.unknown_files,
            "spool: files that are not the spool's, left alone");
    }

    // A segment shorter than its header holds no record: a crash just after creating it.
    segments.retain(|s| {
        if s.len >= SEGMENT_HEADER_BYTES as u64 {
            return true;
        }
        let path = segment_path(&dir, s.base);
        tracing::warn!(segment = %path.display(), bytes = s.len, "spool: removed an empty segment");
        recovery.removed_empty += 1;
        std::fs::remove_file(&path).is_err()
    });

    let (position_file, loaded) =
        PositionFile::open(&dir).map_err(io("open", &dir.join(POSITION_FILE)))?;
    let mut position = match loaded {
        Loaded::Found(p) => Some(p),
        Loaded::Missing | Loaded::Invalid => {
            if !segments.is_empty() {
                tracing::warn!(dir = %dir.display(), state = ?loaded,
                    "spool: no valid read position; replaying from the oldest segment (duplicates, not loss)");
            }
            None
        }
    };

    // The last segment: cut a torn tail, learn the next sequence number.
    let mut next_seq = 0;
    let mut resume = None;
    if let Some(last) = segments.last_mut() {
        let path = segment_path(&dir, last.base);
        let scan = scan_segment(&path, last.base, last.len, settings.max_record_bytes)
            .map_err(io("read", &path))?;
        if scan.header_valid && scan.tail > 0 {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io("open", &path))?;
            file.set_len(scan.valid_end)
                .and_then(|()| file.sync_all())
                .map_err(io("truncate", &path))?;
            tracing::warn!(segment = %path.display(), bytes = scan.tail, offset = scan.valid_end,
                "spool: cut a torn tail (a write interrupted by a crash; never acknowledged)");
            recovery.torn_bytes = scan.tail;
            last.len = scan.valid_end;
        }
        // Zeros after the last record are a direct write's padding (direct.rs): kept in
        // the file, and the next append overwrites them.
        if scan.header_valid {
            last.len = scan.valid_end;
        }
        next_seq = scan.last_seq.map_or(last.base, |s| s + 1).max(last.base);
        if scan.header_valid && last.len < settings.segment_bytes {
            resume = Some((last.base, last.len));
        } else {
            // A new segment is named after its first record: past this one's name.
            next_seq = next_seq.max(last.base + 1);
        }
    }
    if let Some(p) = position {
        if segments.is_empty() {
            next_seq = next_seq.max(p.next_seq);
        } else if p.next_seq > next_seq {
            tracing::warn!(dir = %dir.display(), position = p.next_seq, next = next_seq,
                "spool: read position is past the end of the spool; replaying from the oldest segment");
            position = None;
        }
    }

    // Segments wholly before the read position were consumed; their deletion was lost.
    if let Some(p) = position {
        let n = segments.len();
        let mut i = 0;
        segments.retain(|s| {
            i += 1;
            if s.base >= p.segment || i == n {
                return true;
            }
            recovery.removed_consumed += 1;
            std::fs::remove_file(segment_path(&dir, s.base)).is_err()
        });
        if recovery.removed_consumed > 0 {
            tracing::info!(dir = %dir.display(), segments = recovery.removed_consumed,
                "spool: removed segments consumed before the last stop");
        }
    }

    let first_base = segments.first().map_or(next_seq, |s| s.base);
    let start = match position {
        Some(p) => {
            let hint = segments
                .iter()
                .find(|s| s.base == p.segment)
                .is_some_and(|s| (SEGMENT_HEADER_BYTES as u64..=s.len).contains(&p.offset));
            ReadPosition {
                offset: if hint { p.offset } else { 0 },
                ..p
            }
        }
        None => ReadPosition {
            next_seq: first_base,
            segment: first_base,
            offset: 0,
        },
    };
    recovery.position_found = position.is_some();

    let used: u64 = segments.iter().map(|s| s.record_bytes()).sum();
    let ledger = Ledger {
        segments: segments.iter().copied().collect(),
        durable_next: next_seq,
        acked_next: start.next_seq.min(next_seq),
        oldest_ms: None,
        debt: used.saturating_sub(settings.max_bytes),
    };
    recovery.segments = segments.len();
    recovery.bytes = ledger.bytes();
    recovery.records = ledger.records();
    let mark = ledger.mark();
    let settings_handover_bytes = settings.handover_bytes();
    let shared = Arc::new(Shared {
        budget: Semaphore::new(settings.max_bytes.saturating_sub(used) as usize),
        settings,
        dir: dir.clone(),
        ledger: Mutex::new(ledger),
        counters: Counters::default(),
        buffers: Mutex::new(Pool::default()),
        handover: Mutex::new(Handover::new(settings_handover_bytes, start.next_seq)),
        _lock: lock,
    });
    shared
        .counters
        .torn_bytes
        .store(recovery.torn_bytes, Ordering::Relaxed);

    let mut core = ReaderCore::new(
        shared.clone(),
        start.segment,
        (start.offset > 0).then_some(start.offset),
        start.next_seq,
        next_seq,
    );
    let mut position_file = position_file;
    if position.is_none() {
        // A valid file from the start, so the next open does not report it missing.
        position_file
            .save(&ReadPosition {
                offset: SEGMENT_HEADER_BYTES as u64,
                ..start
            })
            .map_err(io("write", &dir.join(POSITION_FILE)))?;
    }
    // The position file's entry, the removals and the cut, durable before any append.
    dir_file.sync_all().map_err(io("fsync", &dir))?;
    if recovery.records > 0 {
        core.fill(1, 1)?;
        let oldest = core.oldest_known();
        shared.ledger.lock().expect("ledger lock").oldest_ms = oldest;
    }
    let acker = Acker {
        file: position_file,
        acked_next: start.next_seq,
        saved: start,
    };

    // The lock file is the spool's and nothing reads it: the probe's block goes there.
    let direct = shared.settings.direct_io && direct::supported(&lock_path);
    if shared.settings.direct_io && !direct {
        tracing::info!(dir = %dir.display(),
            "spool: the filesystem refuses O_DIRECT; writing segments through the page cache");
    }
    let writer = WriterCore::open(
        &dir,
        dir_file,
        shared.settings.segment_bytes,
        direct,
        resume,
        next_seq,
    )?;
    let (tx, rx) = mpsc::channel(shared.settings.queue_batches);
    let (marks_tx, marks_rx) = watch::channel(mark);
    let (done_tx, done_rx) = oneshot::channel();
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("spool-writer".into())
        .spawn(move || {
            writer::run(writer, thread_shared, rx, marks_tx);
            let _ = done_tx.send(());
        })
        .map_err(io("start writer for", &dir))?;

    tracing::info!(dir = %dir.display(), segments = recovery.segments, bytes = recovery.bytes,
        records = recovery.records, from_seq = start.next_seq, torn_bytes = recovery.torn_bytes,
        direct_io = direct, "spool: opened");
    Ok((
        Spool {
            shared,
            tx,
            writer_done: done_rx,
            recovery,
        },
        Reader::new(core, acker, marks_rx),
    ))
}

/// The directory a spool would use, for tools: `dir`'s segment files in order.
#[cfg(test)]
pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            parse_segment_name(p.file_name()?.to_str()?).map(|_| p)
        })
        .collect();
    v.sort();
    v
}

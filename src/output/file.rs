//! The embedded default output: `<data_dir>/<index>.ndjson` in Elasticsearch bulk form
//! (an action line with the index and id, then the document), replayable into
//! Elasticsearch as it is. A file name is only ever built from a validated
//! [`IndexName`] (no `/`, not `.` or `..`, no leading dot), so every file is directly
//! inside `data_dir`; each file's tail is checked when it is opened (`bulk_file`).
//!
//! A single writer thread takes every batch queued since its last round, writes them,
//! then fsyncs each file it touched once: group commit, so concurrent windows and
//! connections share the cost of an fsync. Batches are reported delivered only after
//! that fsync (the ACK contract); on any error they are failed and nothing is ACKed.
//! A batch's records leave memory once written, before the fsync: only its delivery
//! handle waits for it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::bulk_file;
use super::{write_create_action, Batch, DeadLetterIndex, DeliveryFailed, OutputSender};
use crate::metrics::{EventOutcome, OutputMetrics};
use crate::record::{Destination, IndexName, Record, MAX_INDEX_NAME_BYTES};
use crate::throttle::LogThrottle;

/// Batches written per fsync round at most, so one round's latency stays bounded.
const MAX_BATCHES_PER_ROUND: usize = 256;
/// Files kept open between rounds; daily names mean only a few are live at once.
const MAX_OPEN_FILES: usize = 16;
/// Records per `writev` at most: two slices each (the action line with the previous
/// document's newline before it, the document) and the last newline, within Linux's
/// `IOV_MAX` of 1024. A Filebeat window of 2048 is then 5 calls, and the documents go
/// from the records' buffers to the page cache without a copy of our own.
const RECORDS_PER_WRITE: usize = (1024 - 1) / 2;
/// Appended to an index name to make its file name.
const SUFFIX: &str = ".ndjson";
/// The longest index name the file output takes: a file name is at most 255 bytes
/// (`NAME_MAX` on Linux), and the suffix takes 7 of them.
pub const MAX_INDEX_BYTES: usize = MAX_INDEX_NAME_BYTES - SUFFIX.len();

/// The file output's part of `[output]`, typed and checked by `config`.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// Where `<index>.ndjson` files are appended.
    pub data_dir: PathBuf,
    /// The dead letters' files, `<prefix>YYYY.MM.dd.ndjson`.
    pub dead_letters: DeadLetterIndex,
}

/// What the file output could not do, and where.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write in {}: {source}", path.display())]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
    #[error("opening {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fsyncing {}: {source}", path.display())]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The running writer thread.
pub struct FileOutput {
    thread: JoinHandle<()>,
}

impl FileOutput {
    /// Creates `data_dir` and starts the writer thread, which holds `alive` until it
    /// ends; fails if the directory is unusable. Up to `queue_batches` batches wait in
    /// the queue.
    pub fn start(
        settings: &FileSettings,
        queue_batches: usize,
        metrics: OutputMetrics,
        log: Arc<LogThrottle>,
        alive: impl Send + 'static,
    ) -> Result<(OutputSender, FileOutput), FileError> {
        let create = |source| FileError::CreateDir {
            path: settings.data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&settings.data_dir).map_err(create)?;
        let dir = settings.data_dir.canonicalize().map_err(create)?;
        // Fail at start, not at the first window, when the directory is not writable.
        let probe = dir.join(".lumberd-write-test");
        File::create(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|source| FileError::NotWritable {
                path: dir.clone(),
                source,
            })?;
        metrics.up.set(1);
        let dead_letters = settings.dead_letters.clone();
        let (tx, rx) = mpsc::channel(queue_batches);
        let thread = std::thread::Builder::new()
            .name("file-output".into())
            .spawn(move || {
                Writer {
                    dir,
                    dead_letters,
                    files: HashMap::new(),
                    metrics,
                    log,
                    actions: Vec::new(),
                }
                .run(rx);
                drop(alive);
            })
            .map_err(FileError::Thread)?;
        Ok((tx, FileOutput { thread }))
    }

    /// Waits until every queued batch is written; returns once all senders are dropped.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("file output thread panicked");
        }
    }
}

struct Writer {
    dir: PathBuf,
    dead_letters: DeadLetterIndex,
    files: HashMap<IndexName, File>,
    metrics: OutputMetrics,
    log: Arc<LogThrottle>,
    /// The action lines of the records being written, kept between rounds.
    actions: Vec<u8>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Batch>) {
        let mut round = Vec::with_capacity(MAX_BATCHES_PER_ROUND);
        while let Some(first) = rx.blocking_recv() {
            round.push(first);
            while round.len() < MAX_BATCHES_PER_ROUND {
                match rx.try_recv() {
                    Ok(b) => round.push(b),
                    Err(_) => break,
                }
            }
            match self.write_round(&mut round) {
                Ok(events) => {
                    self.metrics.events(EventOutcome::Indexed, events);
                    self.metrics.succeeded();
                    round.drain(..).for_each(|b| b.delivery.delivered());
                }
                Err(e) => {
                    self.metrics.up.set(0);
                    if let Some(suppressed) = self.log.allow(("file_output", "error")) {
                        tracing::error!(dir = %self.dir.display(), error = %e, suppressed,
                            "file output failed; {} batches not acknowledged, clients will resend", round.len());
                    }
                    // Reopen files next round, whose open cuts what this round left torn.
                    self.files.clear();
                    let reason = DeliveryFailed::File(e.to_string());
                    round.drain(..).for_each(|b| b.delivery.fail(&reason));
                }
            }
        }
        for (_, f) in self.files.drain() {
            let _ = f.sync_data();
        }
    }

    /// Writes every batch of `round`, then fsyncs each file it touched; the records
    /// written, which leave memory as soon as the kernel has their bytes (see below).
    fn write_round(&mut self, round: &mut [Batch]) -> Result<usize, FileError> {
        let mut touched: Vec<IndexName> = Vec::new();
        let mut created = false;
        let mut events = 0;
        for batch in round.iter_mut() {
            // Records of a window mostly share one destination: each run of them is one
            // file lookup and a few `writev` calls.
            let mut rest = &batch.records[..];
            while let Some(first) = rest.first() {
                let same = rest
                    .iter()
                    .take(RECORDS_PER_WRITE)
                    .take_while(|r| same_destination(r, first))
                    .count();
                let (run, next) = rest.split_at(same);
                rest = next;
                let index = self.dead_letters.resolve(first);
                if !touched.contains(&index) {
                    touched.push(index.clone());
                }
                let file = match self.files.get_mut(&index) {
                    Some(f) => f,
                    None => {
                        let (f, new) = open(&self.dir, &index)?;
                        created |= new;
                        self.files.entry(index.clone()).or_insert(f)
                    }
                };
                write_run(file, &index, run, &mut self.actions).map_err(|source| {
                    FileError::Write {
                        path: path(&self.dir, &index),
                        source,
                    }
                })?;
            }
            // The records' bytes are in the kernel now: their memory goes, and their
            // budget with it, here and not after the fsync. Only the delivery handle
            // waits for the fsync (a failed round fails it; clients resend). Held
            // through it, a round's documents and those queued meanwhile were in memory
            // at once: up to every window the clients may have unacknowledged
            // (benches/README.md, "Peak RSS").
            events += batch.records.len();
            batch.records = Vec::new();
            batch.budget.take();
        }
        for index in &touched {
            if let Some(f) = self.files.get(index) {
                f.sync_data().map_err(|source| FileError::Sync {
                    path: path(&self.dir, index),
                    source,
                })?;
                // Durable now, and nothing here reads it back: its pages leave the page
                // cache, so the next round writes into pages just freed instead of
                // growing the cache. On a VM whose host reclaims freed or cold guest
                // memory, each page-cache page never touched (or handed back) costs a
                // host fault inside the kernel's copy: 28-38% of lumberd's CPU in that
                // state, and this call took 0.83x of the CPU per event
                // (benches/README.md, "the page cache on a VM"). Advice only: an error
                // changes nothing the round promised.
                let _ = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed);
            }
        }
        if created {
            // A new file's directory entry must be durable too, or a crash loses the file.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| FileError::Sync {
                    path: self.dir.clone(),
                    source,
                })?;
        }
        if self.files.len() > MAX_OPEN_FILES {
            self.files.retain(|k, _| touched.contains(k));
        }
        Ok(events)
    }
}

/// Whether two records go to the same file; a pointer comparison for the usual case,
/// records routed through one pipeline's cached index name.
fn same_destination(a: &Record, b: &Record) -> bool {
    match (&a.dest, &b.dest) {
        (Destination::Index(x), Destination::Index(y)) => x.same(y),
        (x, y) => x == y,
    }
}

/// Appends `records` (all for `index`) to `file` as action+document pairs in one
/// `writev` (or more, if the kernel takes less at a time): the documents are not copied
/// into a buffer first. Each document's newline opens the next action line's slice, so
/// a record is two slices, not three (fewer segments for the kernel's copy to walk).
fn write_run(
    file: &mut File,
    index: &IndexName,
    records: &[Record],
    actions: &mut Vec<u8>,
) -> std::io::Result<()> {
    actions.clear();
    let mut ends = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            actions.push(b'\n');
        }
        write_create_action(index, record.id.as_ref(), actions);
        ends.push(actions.len());
    }
    let mut slices = Vec::with_capacity(2 * records.len() + 1);
    let mut start = 0;
    for (record, &end) in records.iter().zip(&ends) {
        slices.push(IoSlice::new(&actions[start..end]));
        slices.push(IoSlice::new(&record.doc));
        start = end;
    }
    if !records.is_empty() {
        slices.push(IoSlice::new(b"\n"));
    }
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `<dir>/<index>.ndjson`: a validated name has no `/`, is not `.` or `..` and does not
/// start with a dot, so the file is directly inside `dir`.
fn path(dir: &Path, index: &IndexName) -> PathBuf {
    dir.join(format!("{index}{SUFFIX}"))
}

/// Opens an index's file for appending, cutting a torn tail first (one log line with the
/// bytes cut); `true` when the file is new.
fn open(dir: &Path, index: &IndexName) -> Result<(File, bool), FileError> {
    let path = path(dir, index);
    let open_error = |source| FileError::Open {
        path: path.clone(),
        source,
    };
    if index.len() > MAX_INDEX_BYTES {
        // The pipeline routes to no longer name with this output; a name this long
        // here is a bug, and must fail the round rather than reach the file system.
        return Err(open_error(std::io::Error::other(format!(
            "index name over {MAX_INDEX_BYTES} bytes"
        ))));
    }
    let (file, new, tail) = bulk_file::open_append(&path).map_err(open_error)?;
    tail.log(&path);
    Ok((file, new))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use prometheus::IntCounter;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::metrics::Metrics;
    use crate::output::Delivery;

    const BUDGET: usize = 100;
    const HELD: u32 = 10;

    /// A document that notes, when its memory goes, how much of the budget was in use.
    struct Watched {
        budget: Arc<Semaphore>,
        in_use_at_drop: Arc<Mutex<Option<usize>>>,
    }

    impl AsRef<[u8]> for Watched {
        fn as_ref(&self) -> &[u8] {
            br#"{"@timestamp":"2025-04-05T10:23:45.000Z"}"#
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            let in_use = BUDGET - self.budget.available_permits();
            *self.in_use_at_drop.lock().unwrap() = Some(in_use);
        }
    }

    #[test]
    fn a_written_record_leaves_memory_before_its_budget_is_released_and_its_window_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let settings = FileSettings {
            data_dir: dir.path().to_path_buf(),
            dead_letters: DeadLetterIndex::new("dl-", MAX_INDEX_BYTES).unwrap(),
        };
        let metrics = Metrics::new().unwrap();
        let log = Arc::new(LogThrottle::new(
            std::time::Duration::from_secs(10),
            IntCounter::new("t_total", "t").unwrap(),
        ));
        let (tx, output) =
            FileOutput::start(&settings, 4, metrics.output.clone(), log, ()).unwrap();
        let budget = Arc::new(Semaphore::new(BUDGET));
        let in_use_at_drop = Arc::new(Mutex::new(None));
        let doc = Bytes::from_owner(Watched {
            budget: budget.clone(),
            in_use_at_drop: in_use_at_drop.clone(),
        });
        let index = IndexName::new("qwen-logs-2025.04.05", MAX_INDEX_BYTES).unwrap();
        let (delivery, delivered) = Delivery::new();
        let batch = Batch {
            records: vec![Record {
                dest: Destination::Index(index),
                id: None,
                doc,
            }],
            budget: Some(budget.clone().try_acquire_many_owned(HELD).unwrap()),
            delivery,
        };
        tx.blocking_send(batch).unwrap();
        assert_eq!(delivered.blocking_recv().unwrap(), Ok(()));
        assert_eq!(
            *in_use_at_drop.lock().unwrap(),
            Some(HELD as usize),
            "the document must be freed once written, before its window is delivered (not \
             held through the fsync), and while its budget still counts it (not after the \
             budget says its memory is gone)"
        );
        assert_eq!(budget.available_permits(), BUDGET);
        drop(tx);
        output.join();
        let written = std::fs::read_to_string(dir.path().join("qwen-logs-2025.04.05.ndjson"));
        assert_eq!(
            written.unwrap().lines().count(),
            2,
            "one action and one document"
        );
    }
}

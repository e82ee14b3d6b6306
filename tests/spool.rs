//! The spool against real failures: a child process killed with SIGKILL mid-append many
//! times, a small filesystem filling up, and a read-only one. The spool's unit tests
//! (src/spool/) cover framing, recovery of damaged directories and the API.
//!
//! The crash test re-runs this test binary as its child (`spool_crash_child`, ignored
//! when run by hand). The filesystem tests mount a size-limited tmpfs, which needs root
//! and mount(2); without them they print SKIPPED and pass, unless `LUMBERD_REQUIRE_ES` is
//! set (as `make test` does): then they fail (tests/support/tmpfs.rs).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lumberd::spool::{frame, Appended, Reader, Spool, SpoolError, SpoolRecord, SpoolSettings};
use support::tmpfs::tmpfs;

const CHILD_DIR_ENV: &str = "LUMBERD_SPOOL_CRASH_DIR";
const CHILD_RUN_ENV: &str = "LUMBERD_SPOOL_CRASH_RUN";
const LINE: &str = "spool-child ";

/// Deterministic pseudo-random numbers (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The record with id (run, task, n): its id, then filler whose length and bytes follow
/// from the id, so the reader can check every byte.
fn record(run: u64, task: u64, n: u64) -> Vec<u8> {
    let mut r = format!("{run}:{task}:{n}:").into_bytes();
    let mut rng = Rng(run << 40 ^ task << 32 ^ n ^ 0x9E37_79B9_7F4A_7C15);
    let len = 200 + rng.below(1800) as usize;
    while r.len() < len {
        r.push(b'a' + (rng.next() % 26) as u8);
    }
    r
}

type Key = (u64, u64);

fn parse_id(data: &[u8]) -> (Key, u64) {
    let text = std::str::from_utf8(&data[..data.len().min(40)]).unwrap_or("");
    let mut it = text.split(':').map(|s| s.parse::<u64>());
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(run)), Some(Ok(task)), Some(Ok(n))) => {
            assert_eq!(
                data,
                record(run, task, n),
                "record {run}:{task}:{n} came back altered"
            );
            ((run, task), n)
        }
        _ => panic!(
            "a record with no id came back: {:?}",
            &data[..data.len().min(40)]
        ),
    }
}

fn crash_settings(dir: &Path) -> SpoolSettings {
    SpoolSettings {
        dir: dir.to_path_buf(),
        max_bytes: 16 * 1024 * 1024,
        segment_bytes: 64 * 1024,
        max_record_bytes: 4096,
        queue_batches: 64,
        memory_bytes: lumberd::spool::DEFAULT_MEMORY_BYTES,
        direct_io: lumberd::spool::DEFAULT_DIRECT_IO,
    }
}

/// The child: three appenders and one consumer on a spool, printing what is durable and
/// what it acknowledges, until the parent kills it.
#[test]
#[ignore = "the child of spool_survives_sigkill_mid_append_with_every_durable_record_once"]
fn spool_crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let run: u64 = std::env::var(CHILD_RUN_ENV).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (spool, mut reader) = Spool::open(crash_settings(Path::new(&dir))).unwrap();
        let r = spool.recovery();
        println!("{LINE}open torn={} records={}", r.torn_bytes, r.records);
        let appenders: Vec<_> = (0..3u64)
            .map(|task| {
                let app = spool.appender();
                tokio::spawn(async move {
                    let mut rng = Rng(run * 31 + task + 1);
                    let mut n = 0;
                    loop {
                        let count = 1 + rng.below(40);
                        let mut batch = app.batch();
                        for k in n..n + count {
                            batch.push(&record(run, task, k)).unwrap();
                        }
                        let durable = app.append(batch).await.unwrap();
                        durable.await.unwrap();
                        println!("{LINE}durable {run} {task} {n} {}", n + count - 1);
                        n += count;
                    }
                })
            })
            .collect();
        let mut seen: BTreeMap<Key, u64> = BTreeMap::new();
        loop {
            let batch = reader.next_batch(64, 1 << 20).await.unwrap();
            let Some(last) = batch.last().map(|r| r.position) else {
                break;
            };
            if seen.is_empty() {
                let ((run, task), n) = parse_id(&batch[0].data);
                println!("{LINE}first {run}:{task}:{n}");
            }
            for r in &batch {
                let (key, n) = parse_id(&r.data);
                let max = seen.entry(key).or_insert(n);
                *max = (*max).max(n);
            }
            let list: Vec<String> = seen
                .iter()
                .map(|((run, task), n)| format!("{run}:{task}:{n}"))
                .collect();
            println!("{LINE}acking {}", list.join(" "));
            reader.ack(last).await.unwrap();
            println!("{LINE}acked");
        }
        for a in appenders {
            a.await.unwrap();
        }
    });
}

/// What the parent learned from the children's lines.
#[derive(Default)]
struct Told {
    /// Record ids each child was told were durable.
    durable: Vec<(Key, u64)>,
    /// Per appender: the highest record an ack had begun to cover, and one that an ack
    /// had finished covering.
    acking: HashMap<Key, u64>,
    acked: HashMap<Key, u64>,
    /// Reopens after which a record was read: each checked against the acks.
    first_reads: usize,
}

impl Told {
    fn line(&mut self, line: &str, pending: &mut Vec<(Key, u64)>) -> Option<u64> {
        let words: Vec<&str> = line.strip_prefix(LINE)?.split_whitespace().collect();
        match words.as_slice() {
            ["open", torn, _] => return torn.strip_prefix("torn=")?.parse().ok(),
            ["durable", run, task, first, last] => {
                let key = (run.parse().ok()?, task.parse().ok()?);
                let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
                self.durable.extend((first..=last).map(|n| (key, n)));
            }
            ["acking", ids @ ..] => {
                pending.clear();
                for id in ids {
                    let v: Vec<u64> = id.split(':').filter_map(|s| s.parse().ok()).collect();
                    let (key, n) = ((v[0], v[1]), v[2]);
                    let e = self.acking.entry(key).or_insert(n);
                    *e = (*e).max(n);
                    pending.push((key, n));
                }
            }
            ["first", id] => {
                let v: Vec<u64> = id.split(':').filter_map(|s| s.parse().ok()).collect();
                let (key, n) = ((v[0], v[1]), v[2]);
                if let Some(acked) = self.acked.get(&key) {
                    assert!(
                        n > *acked,
                        "reopened at {key:?} {n}, acknowledged through {acked}"
                    );
                }
                self.first_reads += 1;
            }
            ["acked"] => {
                for (key, n) in pending.drain(..) {
                    let e = self.acked.entry(key).or_insert(n);
                    *e = (*e).max(n);
                }
            }
            _ => panic!("unexpected child line {line:?}"),
        }
        None
    }
}

/// Appends a torn record (a whole header, part of its payload) to the last segment, as
/// a crash in the middle of a write leaves it on a disk that lost power; a SIGKILL
/// rarely tears a write by itself, so the test makes sure the cut is exercised.
fn tear_last_segment(dir: &Path, rng: &mut Rng) -> u64 {
    let mut segments = support::spool_segments(dir);
    // A segment whose header was never written (a crash just after creating it) has
    // no tail to cut: it is damage, read as such later.
    let Some(last) = segments
        .pop()
        .filter(|p| std::fs::metadata(p).unwrap().len() >= frame::SEGMENT_HEADER_BYTES as u64)
    else {
        return 0;
    };
    let mut torn = Vec::new();
    frame::encode(u64::MAX - 1, 0, &record(999, 9, 9), &mut torn);
    torn.truncate(frame::FRAME_HEADER_BYTES + 1 + rng.below(100) as usize);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    std::io::Write::write_all(&mut f, &torn).unwrap();
    torn.len() as u64
}

/// A child process that does not outlive a failed assertion.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn read_to_end(spool: Spool, mut reader: Reader) -> Vec<SpoolRecord> {
    spool.close().await;
    let mut out = Vec::new();
    loop {
        let batch = reader.next_batch(1024, usize::MAX).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_survives_sigkill_mid_append_with_every_durable_record_once() {
    const RUNS: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut told = Told::default();
    let mut rng = Rng(0x5EED);
    let (mut injected_runs, mut torn_seen) = (0, 0);
    let mut injected = 0;
    for run in 1..=RUNS {
        let mut child = KillOnDrop(
            Command::new(&exe)
                .args([
                    "spool_crash_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR_ENV, dir.path())
                .env(CHILD_RUN_ENV, run.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let child = &mut child.0;
        let kill_after = rng.below(60);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut durable_lines, mut killed) = (0, false);
        let mut pending = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            // A line cut off by the kill is not something the child was told. (libtest's
            // "test ... " may stand before the first one.)
            let Some(at) = line.find(LINE).filter(|_| line.ends_with('\n')) else {
                continue;
            };
            if let Some(torn) = told.line(line[at..].trim_end(), &mut pending) {
                assert!(
                    torn >= injected,
                    "run {run}: open cut {torn} bytes, but {injected} torn bytes were appended"
                );
                torn_seen += torn;
            }
            durable_lines += usize::from(line.contains(" durable "));
            if !killed && durable_lines >= kill_after as usize {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        assert!(
            killed && status.code().is_none(),
            "run {run}: child ended by itself ({status}) after {durable_lines} durable lines"
        );
        injected = 0;
        if run % 3 == 0 {
            injected = tear_last_segment(dir.path(), &mut rng);
            injected_runs += usize::from(injected > 0);
        }
    }
    assert!(
        injected_runs > 0 && torn_seen > 0,
        "no torn tail was ever cut"
    );

    let (spool, reader) = Spool::open(crash_settings(dir.path())).unwrap();
    assert!(spool.recovery().torn_bytes >= injected);
    let records = read_to_end(spool, reader).await;
    assert!(
        records.windows(2).all(|w| w[0].position < w[1].position),
        "records out of order"
    );
    let mut count: HashMap<(Key, u64), usize> = HashMap::new();
    for r in &records {
        *count.entry(parse_id(&r.data)).or_default() += 1;
    }
    if let Some((id, n)) = count.iter().find(|(_, n)| **n > 1) {
        panic!("record {id:?} read back {n} times");
    }
    let mut checked = 0;
    for id @ (key, n) in &told.durable {
        let acked = told.acked.get(key).is_some_and(|a| n <= a);
        let maybe_acked = told.acking.get(key).is_some_and(|a| n <= a);
        let got = count.get(id).copied().unwrap_or(0);
        if acked {
            assert_eq!(got, 0, "record {id:?} was acknowledged, yet replayed");
        } else if !maybe_acked {
            assert_eq!(
                got, 1,
                "record {id:?} was durable and never acknowledged, yet lost"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 0 && !told.acked.is_empty(),
        "the runs left nothing to check: {checked} unacknowledged durable records, {} acks",
        told.acked.len()
    );
    eprintln!(
        "{RUNS} SIGKILLs: {} records told durable, {checked} of them unacknowledged and read back once, {} read back in all, {torn_seen} torn bytes cut",
        told.durable.len(),
        records.len()
    );
}

async fn append_ids(spool: &Spool, ids: std::ops::Range<u64>) -> Result<Appended, SpoolError> {
    let app = spool.appender();
    let mut b = app.batch();
    for n in ids {
        b.push(&record(0, 0, n)).unwrap();
    }
    app.append(b).await?.await
}

async fn read_n(reader: &mut Reader, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(
            Duration::from_secs(20),
            reader.next_batch(n - out.len(), usize::MAX),
        )
        .await
        .unwrap_or_else(|_| panic!("only {} of {n} records came back", out.len()))
        .unwrap();
        assert!(!batch.is_empty(), "reader ended after {} of {n}", out.len());
        out.extend(batch.iter().map(|r| parse_id(&r.data).1));
        if out.len() == n {
            reader.ack(batch.last().unwrap().position).await.unwrap();
        }
    }
    out
}

#[tokio::test]
async fn a_full_filesystem_refuses_appends_as_backpressure_and_recovers_when_space_returns() {
    let mnt = tempfile::tempdir().unwrap();
    let Some(_fs) = tmpfs(mnt.path(), "size=2m", "a_full_filesystem_refuses_appends") else {
        return;
    };
    let settings = SpoolSettings {
        dir: mnt.path().join("spool"),
        max_bytes: 64 * 1024 * 1024,
        segment_bytes: 128 * 1024,
        max_record_bytes: 4096,
        queue_batches: 16,
        memory_bytes: lumberd::spool::DEFAULT_MEMORY_BYTES,
        direct_io: lumberd::spool::DEFAULT_DIRECT_IO,
    };
    let (spool, mut reader) = Spool::open(settings.clone()).unwrap();
    let mut next = 0;
    let full = loop {
        match append_ids(&spool, next..next + 20).await {
            Ok(_) => next += 20,
            Err(e) => break e,
        }
        assert!(next < 100_000, "a 2 MiB filesystem never filled");
    };
    assert!(full.is_no_space(), "expected ENOSPC, got {full}");
    assert!(full.to_string().contains("spool write"), "{full}");
    // Still full: refused again, nothing acknowledged, nothing half-written visible.
    for _ in 0..3 {
        let e = append_ids(&spool, next..next + 20).await.unwrap_err();
        assert!(e.is_no_space(), "{e}");
    }
    let durable = next as usize;
    let got = read_n(&mut reader, durable).await;
    assert_eq!(
        got,
        (0..next).collect::<Vec<_>>(),
        "the durable records, in order, once"
    );
    // The ack deleted the consumed segments: space is back, appends flow.
    let after = append_ids(&spool, next..next + 20)
        .await
        .expect("space returned");
    assert_eq!(after.records, 20);
    assert_eq!(
        read_n(&mut reader, 20).await,
        (next..next + 20).collect::<Vec<_>>()
    );
    append_ids(&spool, next + 20..next + 40).await.unwrap();
    drop(reader);
    spool.close().await;

    let (spool, reader) = Spool::open(settings).unwrap();
    let r = spool.recovery().clone();
    let rest: Vec<u64> = read_to_end(spool, reader)
        .await
        .iter()
        .map(|r| parse_id(&r.data).1)
        .collect();
    assert_eq!(
        rest,
        (next + 20..next + 40).collect::<Vec<_>>(),
        "after reopen: {r:?}"
    );
    assert_eq!(r.torn_bytes, 0, "a refused write left bytes behind: {r:?}");
}

#[tokio::test]
async fn a_read_only_spool_directory_is_an_error_naming_it_and_loses_nothing() {
    let mnt = tempfile::tempdir().unwrap();
    let Some(fs) = tmpfs(mnt.path(), "size=4m", "a_read_only_spool_directory") else {
        return;
    };
    let settings = SpoolSettings {
        max_bytes: 1024 * 1024,
        segment_bytes: 64 * 1024,
        max_record_bytes: 4096,
        ..SpoolSettings::new(mnt.path().join("spool"))
    };
    {
        let (spool, reader) = Spool::open(settings.clone()).unwrap();
        append_ids(&spool, 0..50).await.unwrap();
        drop(reader);
        spool.close().await;
    }
    fs.remount("ro");
    let e = Spool::open(settings.clone()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SpoolError::Io { .. }), "{msg}");
    assert!(
        msg.contains(&mnt.path().display().to_string()),
        "error does not name the directory: {msg}"
    );
    let fresh = SpoolSettings {
        dir: mnt.path().join("new-spool"),
        ..settings.clone()
    };
    assert!(
        Spool::open(fresh).is_err(),
        "a spool cannot be created on a read-only filesystem"
    );
    fs.remount("rw");
    let (spool, mut reader) = Spool::open(settings).unwrap();
    assert_eq!(read_n(&mut reader, 50).await, (0..50).collect::<Vec<_>>());
    drop(reader);
    spool.close().await; // so that the tmpfs can be unmounted
}

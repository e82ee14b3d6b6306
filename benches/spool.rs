//! The spool's cost per record: eight appenders (connections) append batches of ~1 KB
//! records and wait for each to be durable (group commit, real fsyncs on the disk under
//! target/); then one reader reads them back and acknowledges every 4096 records, as the
//! Elasticsearch writer would after each bulk (an fsync each, and segment deletion).
//! The halves run one after the other, so the summary can give each its share. Timed
//! in CPU time of the whole process (every thread, kernel time included): what the
//! spool would add to lumberd's CPU per event.
//!
//! Then the wiring around it (`output::spooled`): Records in batches from the queue through
//! the sink, the spool and the reader to a writer that settles them at once, against the
//! same batches straight to that writer; the difference is what the spool adds to
//! lumberd's CPU per event (issue 13: at most 1 us). The spooled run goes twice: as
//! lumberd runs it (the reader caught up, handed the batches from memory once fsynced),
//! and with `memory_bytes = 0` (every record read back from disk and decoded, as a
//! reader behind does).
//!
//! Criterion reports records per CPU-second per batch size; a summary (ns of CPU per
//! record, split append+commit / read+ack, records per CPU-second, MB/s wall, records
//! per fsync round; the wiring's ns per record with and without the spool) is written to
//! target/bench/spool.json. Each run checks that every
//! record came back, so a broken path cannot post a fast figure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use lumberd::metrics::Metrics;
use lumberd::output::spooled::{ReadSizes, Spooled, SpooledSettings};
use lumberd::output::{Batch, Delivery, DeliveryReceiver};
use lumberd::record::{Destination, DocId, IndexName, Record, MAX_INDEX_NAME_BYTES};
use lumberd::spool::{Spool, SpoolSettings};
use lumberd::throttle::LogThrottle;
use rustix::time::{clock_gettime, ClockId};

/// Records per measured run: enough for segments to roll over and be deleted.
const RECORDS: usize = 32 * 1024;
const APPENDERS: usize = 8;
/// Records per acknowledgement: the Elasticsearch output's default bulk size.
const ACK_RECORDS: usize = 4096;
const BATCHES: [usize; 3] = [64, 512, 2048];

/// An inference-log record as the integration will spool it: bulk action, then the
/// document (~1 KB), with words that vary so the bytes are not one repeat.
fn record(i: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "模型", "推理", "context", "token", "latency", "解释", "cache", "batch",
    ];
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut prompt = String::new();
    while prompt.len() < 560 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        prompt.push_str(WORDS[(x >> 61) as usize]);
        prompt.push_str(&format!("{:x} ", x & 0xfff));
    }
    format!(
        concat!(
            r#"{{"create":{{"_index":"qwen-logs-2025.04.05","_id":"{:032x}"}}}}"#,
            "\n",
            r#"{{"@timestamp":"2025-04-05T10:23:45.123Z","level":"INFO","request_id":"req_{:012x}","#,
            r#""prompt":"{}","response_length":{},"inference_time_ms":{},"status":"success","#,
            r#""log":{{"file":{{"path":"/var/log/qwen/inference.log"}},"offset":{}}},"input":{{"type":"filestream"}}}}"#
        ),
        x,
        i,
        prompt,
        100 + i % 400,
        300 + i % 900,
        i * 1000
    )
    .into_bytes()
}

fn cpu_now() -> Duration {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

struct Run {
    /// CPU of the whole run, and of its first half: appending and committing only,
    /// before the reader starts.
    cpu: Duration,
    append_cpu: Duration,
    wall: Duration,
    commits: u64,
    bytes: u64,
}

/// Appends every record, in batches of `batch` from `APPENDERS` tasks, each batch
/// waiting for its commit; returns the CPU it took.
async fn append_all(spool: &Spool, records: &Arc<[Vec<u8>]>, batch: usize) -> Duration {
    let cpu0 = cpu_now();
    let per = RECORDS / APPENDERS;
    let writers: Vec<_> = (0..APPENDERS)
        .map(|w| {
            let app = spool.appender();
            let records = records.clone();
            tokio::spawn(async move {
                for chunk in records[w * per..(w + 1) * per].chunks(batch) {
                    let mut b = app.batch();
                    b.reserve(chunk.len(), chunk.iter().map(Vec::len).sum());
                    for r in chunk {
                        b.push(r).unwrap();
                    }
                    app.append(b).await.unwrap().await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    cpu_now() - cpu0
}

/// One run: a fresh spool in `dir`, `RECORDS` records appended (see [`append_all`]),
/// then read back and acknowledged every `ACK_RECORDS`.
fn run(rt: &tokio::runtime::Runtime, dir: &Path, records: &Arc<[Vec<u8>]>, batch: usize) -> Run {
    let spool_dir = tempfile::tempdir_in(dir).unwrap();
    let settings = SpoolSettings {
        max_bytes: 1024 * 1024 * 1024,
        ..SpoolSettings::new(spool_dir.path())
    };
    rt.block_on(async {
        let (spool, mut reader) = Spool::open(settings).unwrap();
        let (cpu0, wall0) = (cpu_now(), Instant::now());
        let append_cpu = append_all(&spool, records, batch).await;
        let (mut read, mut bytes, mut unacked) = (0, 0, 0);
        while read < RECORDS {
            let got = reader.next_batch(batch, usize::MAX).await.unwrap();
            assert!(!got.is_empty(), "reader ended early");
            for r in &got {
                bytes += r.data.len() as u64;
            }
            read += got.len();
            unacked += got.len();
            if unacked >= ACK_RECORDS || read == RECORDS {
                reader.ack(got.last().unwrap().position).await.unwrap();
                unacked = 0;
            }
        }
        let (cpu, wall) = (cpu_now() - cpu0, wall0.elapsed());
        let stats = spool.stats();
        assert_eq!(
            (stats.written, stats.read, stats.records),
            (RECORDS as u64, RECORDS as u64, 0)
        );
        assert_eq!(bytes, records.iter().map(|r| r.len() as u64).sum::<u64>());
        drop(reader);
        spool.close().await;
        Run {
            cpu,
            append_cpu,
            wall,
            commits: stats.commits,
            bytes,
        }
    })
}

/// Connections' batches of the wiring run: `server.batch_events`, the default.
const WIRED_BATCH: usize = 512;
/// Batches in flight at once in the wiring run, as four connections pipelining two
/// windows of 2,048 events each would have.
const WIRED_INFLIGHT: usize = 16;

/// The wiring run's records: the bench's documents as Records for one daily index, each
/// with its id, as the pipeline hands them to the output.
fn wired_records(records: &[Vec<u8>]) -> Arc<[Record]> {
    let index = IndexName::new("qwen-logs-2025.04.05", MAX_INDEX_NAME_BYTES).unwrap();
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let doc = r.splitn(2, |b| *b == b'\n').nth(1).unwrap_or(r);
            Record {
                dest: Destination::Index(index.clone()),
                id: Some(DocId::from_digest(i as u128 + 1)),
                doc: Bytes::copy_from_slice(doc),
            }
        })
        .collect()
}

/// What a wiring run cost: CPU of the whole process, and what the fake writer saw.
struct Wired {
    cpu: Duration,
    wall: Duration,
}

/// The spool's whole place in lumberd, without a socket or Elasticsearch: batches of
/// `records` go into the queue `WIRED_INFLIGHT` at a time (as connections send them and
/// wait for their deliveries), through the spool sink (encode, append, fsync), the
/// reader (read, decode, batch) and a writer that settles each batch at once, back to
/// the reader's acknowledgements; until the spool is empty. With `spooled` false the
/// same batches go straight to that writer: the difference is the spool's cost.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wiring {
    /// Straight to the writer.
    Direct,
    /// Through the spool, as lumberd runs it.
    Spooled,
    /// Through the spool with `memory_bytes = 0`: every record read back from disk.
    FromDisk,
    /// Through the spool as lumberd runs it, segments written through the page cache
    /// (`direct_io = false`, what a filesystem refusing `O_DIRECT` gets).
    PageCache,
}

fn wired_run(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    records: &Arc<[Record]>,
    wiring: Wiring,
) -> Wired {
    let spool_dir = tempfile::tempdir_in(dir).unwrap();
    let mut spool = SpoolSettings {
        max_bytes: 1024 * 1024 * 1024,
        ..SpoolSettings::new(spool_dir.path())
    };
    if wiring == Wiring::FromDisk {
        spool.memory_bytes = 0;
    }
    if wiring == Wiring::PageCache {
        spool.direct_io = false;
    }
    let spooled = wiring != Wiring::Direct;
    let settings = SpooledSettings {
        spool,
        high_water: 0.9,
    };
    rt.block_on(async {
        let metrics = Metrics::new().unwrap();
        let log = Arc::new(LogThrottle::new(
            Duration::from_secs(10),
            metrics.log_suppressed.clone(),
        ));
        let (cpu0, wall0) = (cpu_now(), Instant::now());
        // The Elasticsearch writer, settling every batch as it comes, checking the ids.
        let (es, mut es_rx) = tokio::sync::mpsc::channel::<Batch>(64);
        let (all_seen, seen_all) = tokio::sync::oneshot::channel();
        let total = records.len();
        let writer = tokio::spawn(async move {
            let (mut seen, mut all_seen) = (0usize, Some(all_seen));
            while let Some(b) = es_rx.recv().await {
                for r in &b.records {
                    assert_eq!(
                        r.id,
                        Some(DocId::from_digest(seen as u128 + 1)),
                        "in order, once"
                    );
                    seen += 1;
                }
                b.delivery.delivered();
                if seen == total {
                    let _ = all_seen.take().map(|tx| tx.send(()));
                }
            }
            seen
        });
        let (queue, spooled) = if spooled {
            let sizes = ReadSizes {
                batch_records: WIRED_BATCH,
                max_pending: 48,
            };
            let (tx, s) = Spooled::start(
                &settings,
                64,
                es,
                sizes,
                metrics.spool.clone(),
                log,
                ((), ()),
            )
            .await
            .unwrap();
            (tx, Some(s))
        } else {
            (es, None)
        };
        let mut waiting = std::collections::VecDeque::new();
        for chunk in records.chunks(WIRED_BATCH) {
            if waiting.len() == WIRED_INFLIGHT {
                let rx: DeliveryReceiver = waiting.pop_front().unwrap();
                rx.await.unwrap().unwrap();
            }
            let (delivery, rx) = Delivery::new();
            let batch = Batch {
                records: chunk.to_vec(),
                budget: None,
                delivery,
            };
            queue.send(batch).await.unwrap();
            waiting.push_back(rx);
        }
        for rx in waiting {
            rx.await.unwrap().unwrap();
        }
        drop(queue);
        seen_all.await.unwrap();
        if let Some(s) = spooled {
            // The shutdown saves the last read position (the feed groups its saves, so it
            // may not have yet), inside the measured CPU; 1 s as lumberd gives it.
            let watch = s.watch();
            s.join(Duration::from_secs(10), Duration::from_secs(1), |_| async {
            })
            .await;
            assert_eq!(watch.stats().records, 0, "every record acknowledged");
        }
        let seen = writer.await.unwrap();
        assert_eq!(seen, records.len(), "every record reached the writer");
        Wired {
            cpu: cpu_now() - cpu0,
            wall: wall0.elapsed(),
        }
    })
}

fn bench_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let dir = bench_dir();
    let records: Arc<[Vec<u8>]> = (0..RECORDS).map(record).collect();
    let mut g = c.benchmark_group("spool-cpu");
    g.throughput(Throughput::Elements(RECORDS as u64));
    // One run per sample: a run is seconds of fsyncs on a shared disk.
    g.sampling_mode(SamplingMode::Flat);
    for batch in BATCHES {
        g.bench_with_input(
            BenchmarkId::new("append+commit+read+ack", batch),
            &batch,
            |b, &batch| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| run(&rt, &dir, &records, batch).cpu)
                        .sum()
                })
            },
        );
    }
    g.finish();
    let wired = wired_records(&records);
    let mut g = c.benchmark_group("spooled-cpu");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.sampling_mode(SamplingMode::Flat);
    for wiring in [
        Wiring::Direct,
        Wiring::Spooled,
        Wiring::FromDisk,
        Wiring::PageCache,
    ] {
        let name = match wiring {
            Wiring::Direct => "queue only",
            Wiring::Spooled => "queue+spool+reader",
            Wiring::FromDisk => "queue+spool+reader from disk",
            Wiring::PageCache => "queue+spool+reader through the page cache",
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| wired_run(&rt, &dir, &wired, wiring).cpu)
                    .sum()
            })
        });
    }
    g.finish();
}

fn write_summary() {
    let rt = runtime();
    let dir = bench_dir();
    let records: Arc<[Vec<u8>]> = (0..RECORDS).map(record).collect();
    let mean_len = records.iter().map(Vec::len).sum::<usize>() as f64 / RECORDS as f64;
    let mut rows = Vec::new();
    for batch in BATCHES {
        // The best of three: the machine is shared, and other load only adds time.
        let r = (0..3)
            .map(|_| run(&rt, &dir, &records, batch))
            .min_by_key(|r| r.cpu)
            .unwrap();
        let ns = r.cpu.as_secs_f64() * 1e9 / RECORDS as f64;
        rows.push(serde_json::json!({
            "batch_records": batch,
            "records": RECORDS,
            "record_bytes_mean": mean_len,
            "cpu_ns_per_record": ns,
            "append_commit_cpu_ns_per_record": r.append_cpu.as_secs_f64() * 1e9 / RECORDS as f64,
            "read_ack_cpu_ns_per_record": (r.cpu - r.append_cpu).as_secs_f64() * 1e9 / RECORDS as f64,
            "records_per_cpu_second": RECORDS as f64 / r.cpu.as_secs_f64(),
            "payload_mb_per_cpu_second": r.bytes as f64 / r.cpu.as_secs_f64() / 1e6,
            "payload_mb_per_wall_second": r.bytes as f64 / r.wall.as_secs_f64() / 1e6,
            "wall_seconds": r.wall.as_secs_f64(),
            "commits": r.commits,
            "records_per_commit": RECORDS as f64 / r.commits as f64,
        }));
        println!(
            "spool batch {batch:>5}: {ns:>6.0} ns CPU/record (append+commit {:>5.0}, read+ack {:>5.0}; {:>9.0} records/CPU-s, {:>6.1} MB/CPU-s), {:>6.1} MB/s wall, {:>6.1} records/fsync round",
            r.append_cpu.as_secs_f64() * 1e9 / RECORDS as f64,
            (r.cpu - r.append_cpu).as_secs_f64() * 1e9 / RECORDS as f64,
            RECORDS as f64 / r.cpu.as_secs_f64(),
            r.bytes as f64 / r.cpu.as_secs_f64() / 1e6,
            r.bytes as f64 / r.wall.as_secs_f64() / 1e6,
            RECORDS as f64 / r.commits as f64
        );
    }
    // The wiring: the best of five of each, in interleaved rounds, so all see the same
    // machine.
    let wired = wired_records(&records);
    let wirings = [
        Wiring::Direct,
        Wiring::Spooled,
        Wiring::FromDisk,
        Wiring::PageCache,
    ];
    let mut best: [Option<Wired>; 4] = [None, None, None, None];
    for _ in 0..5 {
        for (i, w) in wirings.iter().enumerate() {
            let r = wired_run(&rt, &dir, &wired, *w);
            if best[i].as_ref().is_none_or(|b| r.cpu < b.cpu) {
                best[i] = Some(r);
            }
        }
    }
    let [direct, spooled, from_disk, page_cache] = best.map(Option::unwrap);
    let per = |d: Duration| d.as_secs_f64() * 1e9 / RECORDS as f64;
    let cost = per(spooled.cpu) - per(direct.cpu);
    let disk_cost = per(from_disk.cpu) - per(direct.cpu);
    let page_cache_cost = per(page_cache.cpu) - per(direct.cpu);
    println!(
        "wired (batches of {WIRED_BATCH}, {WIRED_INFLIGHT} in flight): queue only {:.0} ns CPU/record, \
         queue+spool+reader {:.0} ns ({:.1} s wall): the spool's cost {cost:.0} ns per record; \
         read back from disk (memory_bytes = 0) {:.0} ns: {disk_cost:.0} ns per record; \
         written through the page cache (direct_io = false) {:.0} ns: {page_cache_cost:.0} ns per record",
        per(direct.cpu),
        per(spooled.cpu),
        spooled.wall.as_secs_f64(),
        per(from_disk.cpu),
        per(page_cache.cpu),
    );
    let summary = serde_json::json!({
        "engine": rows,
        "wired": {
            "batch_records": WIRED_BATCH,
            "batches_in_flight": WIRED_INFLIGHT,
            "records": RECORDS,
            "queue_only_cpu_ns_per_record": per(direct.cpu),
            "spooled_cpu_ns_per_record": per(spooled.cpu),
            "spool_cpu_ns_per_record": cost,
            "spooled_wall_seconds": spooled.wall.as_secs_f64(),
            "from_disk_cpu_ns_per_record": per(from_disk.cpu),
            "from_disk_spool_cpu_ns_per_record": disk_cost,
            "page_cache_cpu_ns_per_record": per(page_cache.cpu),
            "page_cache_spool_cpu_ns_per_record": page_cache_cost,
        },
    });
    let path = dir.join("spool.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    println!("summary: {}", path.display());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10);
    targets = bench
}

/// glibc's mmap threshold as lumberd's main.rs fixes it (1 MiB), so that buffers are
/// allocated here as they are in lumberd: a reader chunk at or above it would be a fresh
/// mmap each time there, and with glibc's rising default threshold not here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: sets an allocator parameter, before any other thread exists.
    unsafe {
        mallopt(-3 /* M_MMAP_THRESHOLD */, 1024 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// `SPOOL_BENCH_ONLY=from-disk|spooled|page-cache|direct [SPOOL_BENCH_ROUNDS=N]`: only that wiring,
/// N runs (default 10), each printed; no criterion, no summary. For `perf record` of one
/// path (benches/README.md, "Profiling the spool's read-back").
fn only(wiring: &str) {
    let wiring = match wiring {
        "from-disk" => Wiring::FromDisk,
        "spooled" => Wiring::Spooled,
        "page-cache" => Wiring::PageCache,
        "direct" => Wiring::Direct,
        other => panic!("SPOOL_BENCH_ONLY={other}: one of from-disk, spooled, page-cache, direct"),
    };
    let rounds: usize = std::env::var("SPOOL_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let rt = runtime();
    let dir = bench_dir();
    let records: Arc<[Vec<u8>]> = (0..RECORDS).map(record).collect();
    let wired = wired_records(&records);
    for round in 0..rounds {
        let r = wired_run(&rt, &dir, &wired, wiring);
        println!(
            "{wiring:?} round {round}: {:.0} ns CPU/record, {:.2} s wall",
            r.cpu.as_secs_f64() * 1e9 / RECORDS as f64,
            r.wall.as_secs_f64()
        );
    }
}

fn main() {
    tune_allocator();
    if let Ok(wiring) = std::env::var("SPOOL_BENCH_ONLY") {
        return only(&wiring);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    write_summary();
}
